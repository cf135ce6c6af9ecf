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


def test_no_class_name_means_two_things() -> None:
    """One name, one concept: a class name defined in two places of gateway/ (three `Shape`s,
    two `Fleet`s and two `Job`s once) sends a reader to the wrong one."""
    import ast
    from collections import defaultdict
    from pathlib import Path

    root = Path(gateway.__file__).parent
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                where[node.name].append(f"{path.relative_to(root)}:{node.lineno}")
    twice = {name: places for name, places in where.items() if len(places) > 1}
    assert not twice, twice


# Module names two packages share because they mean the same thing in each: cloud models
# (for chat, for embeddings), the router's features (of a chat, of embedding inputs), the
# fleet of replicas (its shared state, its learning), Prometheus metrics, local model files
# (the admin API, the CLI) and a request body (Responses, embeddings).
SAME_CONCEPT = {"__init__", "cloud", "features", "fleet", "metrics", "models", "request"}


def test_no_module_name_means_two_things() -> None:
    """Four `store.py` once stored four different things; each now says what it stores."""
    from collections import defaultdict
    from pathlib import Path

    root = Path(gateway.__file__).parent
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        where[path.stem].append(str(path.relative_to(root)))
    twice = {n: p for n, p in where.items() if len(p) > 1 and n not in SAME_CONCEPT}
    assert not twice, twice
