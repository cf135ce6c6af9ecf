"""What gateway/http relies on of aiohttp beyond its public API, named in one place.

aiohttp has no hook for a connection's caps, header/body timeouts or send timeout, so
http/server.py subclasses its connection handler and runner and reads some of their private
state; http/sending.py adds the send timeout to the same handler. pyproject.toml pins the
aiohttp range this was tested against (the lock holds one version of it); when an upgrade
moves or renames any of these, this test names which, before the connection tests fail in
less obvious ways. No other module of gateway/ reads another class's private attributes
(the last test checks that).
"""

from __future__ import annotations

import ast
import asyncio
import importlib.metadata
import tomllib
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent

# RequestHandler state read by http/server.py's _Handler (and SendTimeout).
HANDLER_PRIVATE = (
    "_loop",  # the connection's loop, for its timers
    "_request_count",  # a new request's head was parsed (the header timer stops)
    "_messages",  # the parsed head and its body payload (the body timer watches it)
    "_current_request",  # the request its handler waits on (a body timeout answers 408)
    "_request_in_progress",  # a pipelined head behind a running request
)
# web.Server state read by http/server.py's _Server when it makes a handler.
SERVER_PRIVATE = ("_loop", "_kwargs")
# web.AppRunner methods GatewayRunner overrides: where the server is made and cleaned up.
RUNNER_PRIVATE = ("_make_server", "_cleanup_server")
# litellm's documented way to the upstream's response headers and cost (backends/cloud.py).
LITELLM_PRIVATE = ("_hidden_params",)


def test_aiohttp_still_has_what_the_server_relies_on() -> None:
    missing = [a for a in HANDLER_PRIVATE if not hasattr(RequestHandler, a)]
    assert not missing, f"aiohttp's RequestHandler no longer has {missing}"
    missing = [a for a in RUNNER_PRIVATE if not callable(getattr(web.AppRunner, a, None))]
    assert not missing, f"aiohttp's AppRunner no longer has {missing}"

    async def made() -> web.Server:
        async def handler(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response()

        return web.Server(handler, loop=asyncio.get_running_loop(), keepalive_timeout=5)

    server = asyncio.run(made())
    missing = [a for a in SERVER_PRIVATE if not hasattr(server, a)]
    assert not missing, f"aiohttp's Server no longer has {missing}"
    # _Server takes over a made server by its class: nothing may be in __slots__ there.
    assert not hasattr(web.Server, "__slots__") or not web.Server.__slots__


def test_aiohttp_is_pinned_to_the_range_it_was_tested_with() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = next(Requirement(d) for d in project["dependencies"] if d.startswith("aiohttp"))
    assert spec.specifier and any(s.operator == "<" for s in spec.specifier), spec
    assert importlib.metadata.version("aiohttp") in spec.specifier


def test_no_module_reaches_into_another_class_s_privates() -> None:
    """`other._name` and getattr(other, "_name") only through the names above, or inside the
    class itself (a classmethod building an instance, a subclass calling its base)."""
    allowed = {*HANDLER_PRIVATE, *SERVER_PRIVATE, *RUNNER_PRIVATE, *LITELLM_PRIVATE}
    found = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
            # Instances a class's own methods build (`new = cls.__new__(cls)`) are its own.
            own = {"self", "cls", "super()"} | {
                t.id
                for n in ast.walk(cls)
                if isinstance(n, ast.Assign) and "__new__" in ast.unparse(n.value)
                for t in n.targets
                if isinstance(t, ast.Name)
            }
            for node in ast.walk(cls):
                node.parent_class_own = own  # type: ignore[attr-defined]
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute):
                name, base = node.attr, ast.unparse(node.value)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "setattr", "hasattr")
                and len(node.args) >= 2
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
            ):
                name, base = node.args[1].value, ast.unparse(node.args[0])
            if not name or not name.startswith("_") or name.startswith("__"):
                continue
            if base in getattr(node, "parent_class_own", {"self", "cls"}) or name in allowed:
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {base}.{name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found += [
                    f"{path.relative_to(ROOT)}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert not found, found
