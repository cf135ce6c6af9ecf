"""Command line: serve, explain, policy check, eval-router."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import create_app
    from .logs import setup_logging
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
    setup_logging(settings.server.log_level)
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        print=lambda msg: print(f"edge-gateway: {msg}", file=sys.stderr),
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=settings.server.shutdown_grace_s,
    )
    return 0


def _config(args: argparse.Namespace) -> int:
    from .config_doc import render

    sys.stdout.write(render())
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
