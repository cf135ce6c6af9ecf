"""Reading a policy file: YAML into the models of policy_models.py, every error with its file
and line, the targets checked against the configured backends, the scorer's weights loaded."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .learned import WeightsError
from .policy_models import CACHE, CASCADE, CLOUD, LOCAL, Policy


class PolicyError(Exception):
    """A policy file is wrong: the message names file, line and field."""


def parse_policy(
    text: str,
    *,
    source: str = "<policy>",
    cloud_names: Iterable[str] | None = None,
    base_dir: Path | None = None,
    local_models: Iterable[str] | None = None,
) -> Policy:
    """Validates a policy and loads its scorer weights (relative paths from `base_dir`)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: a policy is a mapping with at least `default:`")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
            line = _line_of(node, loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            lines.append(f"{source}:{line}: field {field}: {err['msg']}")
        raise PolicyError("\n".join(lines)) from None
    if cloud_names is not None:
        known = {LOCAL, CLOUD, *cloud_names}
        for where, target in policy.targets():
            allowed = known | ({CACHE} if where.startswith("offline") else set())
            allowed |= {CASCADE} if where.endswith(".route") else set()
            if target not in allowed:
                parts: list[str | int] = [int(p) if p.isdigit() else p for p in where.split(".")]
                line = _line_of(node, parts)
                raise PolicyError(
                    f"{source}:{line}: field {where}: unknown target {target!r} "
                    f"(known: {', '.join(sorted(allowed))})"
                )
    if local_models is not None:
        named = set(local_models)
        for i, r in enumerate(policy.rules):
            if r.model is not None and r.model not in named:
                line = _line_of(node, ["rules", i, "model"])
                raise PolicyError(
                    f"{source}:{line}: field rules.{i}.model: unknown local model {r.model!r} "
                    f"(known: {', '.join(sorted(named))})"
                )
    if policy.scorer is not None:
        weights = Path(policy.scorer.weights).expanduser()
        if not weights.is_absolute():
            weights = (base_dir or Path.cwd()) / weights
        try:
            policy.scorer.load(weights)
        except WeightsError as exc:
            line = _line_of(node, ["scorer", "weights"])
            raise PolicyError(f"{source}:{line}: field scorer.weights: {exc}") from None
    try:
        policy.detector  # noqa: B018 - built now, at load, not on the first request
    except (re.error, ValueError, ImportError) as exc:
        line = _line_of(node, ["privacy"])
        raise PolicyError(f"{source}:{line}: field privacy: {exc}") from None
    return policy


# pydantic puts the union member's type name into error locations; the YAML has no such level.
_UNION_TAGS = {"bool", "list[str]", "float", "int", "str"}


def _line_of(node: Any, loc: list[Any]) -> int:
    """The 1-based line of the deepest YAML node along `loc` that exists."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if key.value == part:
                    nxt = value
                    line = key.start_mark.line + 1
                    break
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_policy(
    path: Path,
    *,
    cloud_names: Iterable[str] | None = None,
    local_models: Iterable[str] | None = None,
) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
    # Weights are read here too, so every reload of the policy re-reads its weights file.
    return parse_policy(
        text,
        source=str(path),
        cloud_names=cloud_names,
        base_dir=path.parent,
        local_models=local_models,
    )
