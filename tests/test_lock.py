"""Installs are the same everywhere: the lock files pin every package with its hashes, the
known-bad releases are out, and this environment holds exactly the locked versions (issue 33).

`make setup` (and so `make test`, CI, the systemd instructions) installs from
requirements/dev.lock with `--require-hashes`, then the model and the two client libraries
whose own pins conflict (`--no-deps`, hashed too); the image from requirements/runtime.lock.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCKS = ROOT / "requirements"
# Published compromised on PyPI: never to be installed, whatever a resolver would pick.
KNOWN_BAD = {"litellm": {"1.82.7", "1.82.8"}}


def pins(name: str) -> dict[str, str]:
    """name -> version of one lock file; every pin must carry at least one hash."""
    text = (LOCKS / name).read_text()
    out = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.\-\[\]]+)==([^\s\\;]+)(?:\s*;\s*([^\\\n]+))?", block)
        if m is None:
            continue
        assert "--hash=sha256:" in block, f"{name}: {m.group(1)} has no hash"
        if m.group(3) and not Marker(m.group(3).strip()).evaluate():
            continue  # for another Python or platform
        out[canonicalize_name(m.group(1).split("[")[0])] = m.group(2)
    assert out, name
    return out


def test_every_pin_has_a_hash_and_no_known_bad_release() -> None:
    for lock in ("dev.lock", "runtime.lock", "model.lock", "nodeps.lock"):
        for name, version in pins(lock).items():
            assert version not in KNOWN_BAD.get(name, set()), (lock, name, version)


def test_the_locks_cover_what_pyproject_asks_for() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = pins("runtime.lock"), pins("dev.lock")
    for spec in project["dependencies"]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in runtime and name in dev, name
        assert req.specifier.contains(runtime[name], prereleases=True), (name, runtime[name])
    for spec in project["optional-dependencies"]["dev"]:
        assert canonicalize_name(Requirement(spec).name) in dev, spec
    # The runtime lock is the dev lock's runtime part: one version of each package.
    assert {n: v for n, v in dev.items() if n in runtime} == runtime


def test_this_environment_holds_exactly_the_locked_versions() -> None:
    locked = {**pins("dev.lock"), **pins("model.lock"), **pins("nodeps.lock")}
    wrong = {}
    for name, version in locked.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wrong[name] = (version, None)
            continue
        if installed != version:
            wrong[name] = (version, installed)
    assert wrong == {}, f"locked vs installed (run `make setup`): {wrong}"
