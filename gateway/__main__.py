"""Command line: serve, explain, policy check, eval-router, eval-cache, train-router, calibrate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _serve(args: argparse.Namespace) -> int:

    from .app import create_app
    from .logs import setup_logging
    from .routing.policy_file import PolicyError
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings(args.config)
        server = settings.server.model_copy(
            update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        )
        settings = settings.model_copy(update={"server": server})
    except SettingsError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.server.log_level, bodies=settings.server.log_bodies)
    try:
        app = create_app(settings)
    except PolicyError as exc:
        print(f"edge-gateway: invalid policy:\n{exc}", file=sys.stderr)
        return 2
    app.on_startup.append(_reload_on_sighup)
    import asyncio

    asyncio.run(_run(app, settings))
    return 0


async def _run(app: object, settings: object) -> None:
    """Serve until SIGTERM or SIGINT, then drain: /readyz says 503 while in-flight requests
    finish (streams cut by the grace get an SSE error event), and only then the listener
    closes. aiohttp's run_app closes the listener first, so balancers never see the 503."""
    import asyncio
    import signal

    from aiohttp import web

    from .http.server import GatewayRunner
    from .services import shutdown
    from .settings import Settings

    assert isinstance(app, web.Application) and isinstance(settings, Settings)
    server = settings.server
    runner = GatewayRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, server.host, server.port)
    await site.start()
    print(f"edge-gateway: ======== Running on {site.name} ========", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        print("edge-gateway: draining", file=sys.stderr, flush=True)
        await shutdown(app, server.shutdown_grace_s)
    finally:
        await runner.cleanup()


async def _reload_on_sighup(app: object) -> None:
    """SIGHUP reloads the policy, the Unix way (systemd's ExecReload sends it)."""
    import asyncio
    import contextlib
    import signal

    from aiohttp import web

    from .routing.policy_file import PolicyError
    from .services import POLICY_STORE

    assert isinstance(app, web.Application)
    store = app[POLICY_STORE]

    def reload() -> None:
        with contextlib.suppress(PolicyError):  # logged and counted by the store
            store.reload()

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _config(args: argparse.Namespace) -> int:
    from .tools.config_doc import render

    sys.stdout.write(render())
    return 0


def _settings_or_exit(config: Path | None) -> object:
    from .settings import SettingsError, load_settings

    try:
        return load_settings(config)
    except SettingsError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _policy_check(args: argparse.Namespace) -> int:
    from .settings import Settings
    from .tools.policy_check import run

    settings = _settings_or_exit(args.config)
    assert isinstance(settings, Settings)
    return run(args, settings)


def _explain(args: argparse.Namespace) -> int:
    from .settings import Settings
    from .tools.explain import run

    settings = _settings_or_exit(args.config)
    assert isinstance(settings, Settings)
    return run(args, settings)


def _eval_router(args: argparse.Namespace) -> int:
    from .tools.eval_router import run

    return run(args)


def _eval_cache(args: argparse.Namespace) -> int:
    from .settings import Settings
    from .tools.eval_cache import run

    models_dir = args.models_dir
    if models_dir is None:
        settings = _settings_or_exit(args.config)
        assert isinstance(settings, Settings)
        models_dir = settings.state.dir / "models"
    return run(args, models_dir)


def _train_router(args: argparse.Namespace) -> int:
    from .learning.labels import read_store_examples
    from .tools.train_router import run

    return run(args, store_reader=read_store_examples)


def _calibrate(args: argparse.Namespace) -> int:
    from .tools.calibrate import run

    return run(args)


def _models(args: argparse.Namespace) -> int:
    from .settings import Settings
    from .tools.models import run

    settings = _settings_or_exit(args.config)
    assert isinstance(settings, Settings)
    return run(args, settings.local.n_ctx, settings.local.parallel)


def _command(
    sub: Any, name: str, help: str, tool: Any, func: Callable[[argparse.Namespace], int]
) -> None:
    """A subcommand whose arguments the tool's module declares (its `configure_parser`)."""
    parser = sub.add_parser(name, help=help)
    tool.configure_parser(parser)
    parser.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, help="settings YAML (default config/gateway.yaml)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.set_defaults(func=_serve)
    config = sub.add_parser("config", help="print the commented settings file with defaults")
    config.set_defaults(func=_config)

    from .tools import calibrate, eval_cache, eval_router, explain, policy_check, train_router

    _command(sub, "explain", "show the routing decision for a prompt", explain, _explain)
    policy = sub.add_parser("policy", help="policy tools")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    _command(psub, "check", "validate policy files", policy_check, _policy_check)
    _command(
        sub, "eval-router", "APGR of the routing scorer on RouteLLM CSVs", eval_router, _eval_router
    )
    _command(
        sub,
        "eval-cache",
        "semantic cache precision and recall on labelled question pairs",
        eval_cache,
        _eval_cache,
    )
    _command(
        sub,
        "train-router",
        "fit learned scorer weights from labelled prompts",
        train_router,
        _train_router,
    )
    _command(sub, "calibrate", "cascade thresholds from labelled prompts", calibrate, _calibrate)
    models = sub.add_parser("models", help="local model tools (memory estimate)")
    from .tools.models import configure_parser as configure_models

    configure_models(models)
    models.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
