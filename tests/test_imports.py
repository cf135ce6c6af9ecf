"""Every module of the gateway imports: mypy runs with ignore_missing_imports (litellm and
llama_cpp ship no stubs), which also hides a relative import left pointing at a moved module."""

from __future__ import annotations

import importlib
import pkgutil

import gateway


def test_every_gateway_module_imports() -> None:
    names = [m.name for m in pkgutil.walk_packages(gateway.__path__, "gateway.")]
    assert len(names) > 100
    for name in names:
        importlib.import_module(name)
