"""`python -m tests.spec.gateway ARGS`: `python -m gateway ARGS` with every answer checked
against OpenAI's published schemas, for the suite's gateway processes (GatewayProcess). What
breaks them is appended, one JSON line each, to the file GATEWAY_SPEC_VIOLATIONS names; the
suite reads it after every test (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import runpy
import sys

from tests.spec.capture import teed
from tests.spec.conformance import Conformance


class _Sink(list[tuple[str, str]]):
    """The violations list, written through to the file as they come."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def extend(self, items: object) -> None:  # type: ignore[override]
        new = list(items)  # type: ignore[call-overload]
        super().extend(new)
        with open(self.path, "a", encoding="utf-8") as f:
            for _, what in new:
                f.write(json.dumps(what) + "\n")


def main() -> None:
    conformance = Conformance()
    conformance.violations = _Sink(os.environ["GATEWAY_SPEC_VIOLATIONS"])
    sys.argv = ["gateway", *sys.argv[1:]]
    with teed(conformance):
        runpy.run_module("gateway", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
