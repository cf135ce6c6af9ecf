"""The policy's `privacy:` section: validated at load, enforced by the detector, reloaded with
the policy; and a scan that cannot finish counts as private data (issue 32)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.routing.pii import Detector, PrivacyConfig, detect_pii
from gateway.routing.policy_file import PolicyError, parse_policy
from gateway.services import SERVICES
from tests.conftest import RunningGateway

BASE = "version: 1\ndefault: local\n"
PRIVATE_RULE = (
    "rules:\n  - name: private\n    enforce: true\n    when: {pii: true}\n    route: local\n"
)


def detector(**privacy: Any) -> Detector:
    return Detector(PrivacyConfig.model_validate(privacy))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("privacy: {regions: [XX]}\n", "privacy.regions"),
        ("privacy: {kinds: [email, dna]}\n", "privacy.kinds"),
        ("privacy: {patterns: [{name: emp, regex: '(unclosed'}]}\n", "privacy.patterns.0.regex"),
        ("privacy: {patterns: [{name: phone, regex: 'x'}]}\n", "privacy.patterns.0"),
        ("privacy: {patterns: [{name: emp, regex: 'x', checksum: crc}]}\n", "checksum"),
        ("privacy: {max_scan_chars: 10}\n", "privacy.max_scan_chars"),
        ("rules:\n  - name: r\n    when: {pii: [ssn]}\n    route: local\n", "pii kinds"),
    ],
)
def test_a_broken_privacy_section_names_the_field(text: str, field: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(BASE + text, source="p.yaml", cloud_names=[])
    assert field in str(exc.value), str(exc.value)


def test_kinds_and_regions_are_what_is_looked_for() -> None:
    text = "write to a@b.io or call 06 12 34 56 78, card 4111 1111 1111 1111"
    assert detect_pii(text) == ("email", "card", "phone")
    assert detector(kinds=["card"]).find(text) == ("card",)
    # `91 41 77 76`, no word around it, reads as a Danish number where Denmark is a region.
    assert detector(kinds=["phone"], regions=["DK"]).find("see 91 41 77 76") == ("phone",)
    assert detector(kinds=["phone"], regions=["US"]).find("see 91 41 77 76") == ()
    # International numbers are read whatever the regions.
    assert detector(kinds=["phone"], regions=["JP"]).find("call +33 6 12 34 56 78") == ("phone",)


def test_national_ids_are_opt_in_and_checked() -> None:
    ssn, bsn, pesel = "536-90-4399", "111222333", "44051401359"
    # Not asked for: no national_id (its 3-2-4 digits may still read as a phone number).
    assert "national_id" not in detect_pii(f"my SSN is {ssn}")
    ids = detector(kinds=["national_id"], regions=["US", "NL", "PL"])
    assert ids.find(f"my SSN is {ssn}") == ("national_id",)
    assert ids.find(f"BSN {bsn}") == ("national_id",)
    assert ids.find(f"PESEL {pesel}") == ("national_id",)
    assert ids.find("PESEL 44051401358") == ()  # the checksum fails


def test_operator_patterns_with_and_without_checksums() -> None:
    d = detector(
        kinds=["email"],
        patterns=[
            {"name": "employee_id", "regex": r"\bEMP-\d{6}\b"},
            {"name": "patient_id", "regex": r"\bPID\d{10}\b", "checksum": "luhn"},
        ],
    )
    assert d.find("ask EMP-123456 about it") == ("employee_id",)
    assert d.find("patient PID4111111111") == ()  # fails Luhn
    assert d.find("patient PID0000000018") == ("patient_id",)


def test_a_scan_that_cannot_finish_counts_as_private(monkeypatch: pytest.MonkeyPatch) -> None:
    d = detector()
    assert d.find("a" * 2000) == ()

    def broken(*_a: Any) -> Any:
        raise RuntimeError("forced")

    monkeypatch.setattr(d, "_find", broken)
    assert d.find("hello") == ("unscanned",)
    small = detector(max_scan_chars=1024)
    assert small.find("x" * 2000) == ("unscanned",)


def test_unscanned_matches_every_privacy_rule() -> None:
    from gateway.routing.policy import Router
    from tests.routing.test_policy import feats

    policy = parse_policy(
        BASE + "rules:\n  - name: cards\n    enforce: true\n    when: {pii: [card]}\n"
        "    route: local\n",
        cloud_names=["gpt"],
    )
    d = Router(cloud_names=["gpt"], local_names=[]).decide(
        policy, feats(model="gpt", pii=("unscanned",))
    )
    assert d.route == "local" and "pii=unscanned" in d.reason


def write(path: Path, privacy: str) -> None:
    path.write_text(BASE + privacy + PRIVATE_RULE, encoding="utf-8")


async def route(http: aiohttp.ClientSession, gw: RunningGateway, text: str) -> dict[str, Any]:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    async with http.post(f"{gw.base_url}/route", json=body) as r:
        assert r.status == 200, await r.text()
        out: dict[str, Any] = await r.json()
        return out


async def test_the_section_reloads_with_the_policy_and_a_failure_keeps_it_local(
    gateway_factory: Any,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = tmp_path / "policy.yaml"
    write(policy, "privacy: {kinds: [email]}\n")
    gw = await gateway_factory(policy={"file": str(policy)})
    text = "employee EMP-123456 asks"
    assert (await route(http, gw, text))["features"]["pii"] == []
    write(policy, "privacy:\n  patterns: [{name: employee_id, regex: 'EMP-\\d{6}'}]\n")
    async with http.post(f"{gw.url}/admin/reload") as r:
        assert r.status == 200, await r.text()
    found = await route(http, gw, text)
    assert found["features"]["pii"] == ["employee_id"] and found["route"] == "local"
    # The memo of recent requests does not answer for the old policy's detector.
    assert (await route(http, gw, text))["features"]["pii"] == ["employee_id"]

    # A detector that fails: the request stays local, and the decision says why.
    current = gw.app[SERVICES].dispatcher.policies.current.detector

    def broken(*_a: Any) -> Any:
        raise RuntimeError("forced failure")

    monkeypatch.setattr(current, "_find", broken)
    out = await route(http, gw, "nothing private here, a new text")
    assert out["features"]["pii"] == ["unscanned"]
    assert out["route"] == "local" and "pii=unscanned" in out["reason"], out
