"""One JSON object per log line, so edge boxes can ship logs without parsing prose."""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from typing import Any

import orjson

# Attributes every LogRecord has; anything else was passed with extra= and is ours to print.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`bodies` off (server.log_bodies, the default): an exception is written as its class
    and where it was raised, never its message. Messages quote what they failed on (a
    client's schema in a grammar error, a field's value in a validation error, a request
    line in a parse error), and that may be private."""

    def __init__(self, *, bodies: bool = False) -> None:
        super().__init__()
        self.bodies = bodies

    def formatException(self, ei: Any) -> str:
        if self.bodies:
            return super().formatException(ei)
        lines = []
        exc: BaseException | None = ei[1]
        while exc is not None:
            frames = traceback.extract_tb(exc.__traceback__)
            lines.append(type(exc).__name__ + " (message withheld: server.log_bodies is off)")
            lines += [f"  {f.filename}:{f.lineno} in {f.name}" for f in frames]
            exc = exc.__cause__ or exc.__context__
        return "\n".join(lines)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _second(int(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = self.formatException(record.exc_info)
        try:  # orjson: the request line is written once per request, on the loop
            return orjson.dumps(out, default=str).decode()
        except TypeError:  # what only the standard library takes (non-string keys, big ints)
            return json.dumps(out, default=str)


REQUEST_LOGGER = "gateway.request"  # the line per request (http/observe.py)


def _no_caller(stack_info: bool = False, stacklevel: int = 1) -> tuple[str, int, str, None]:
    return "(unknown file)", 0, "(unknown function)", None


@functools.lru_cache(maxsize=4)
def _second(t: int) -> str:
    """The timestamp up to its seconds, formatted once per second, not once per line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def setup_logging(level: str, *, bodies: bool = False) -> None:
    # No line says which source line, thread or process wrote it, so the logging module
    # need not find out on every call (the logging HOWTO's "Optimization"). The caller's
    # frame walk is most of the cost of a record: the request line, written once per
    # request, skips it (its records name no file, line or function).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.getLogger(REQUEST_LOGGER).findCaller = _no_caller  # type: ignore[method-assign]
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(bodies=bodies))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # litellm and aiohttp's access log are chatty; our own request line replaces the latter.
    for noisy in ("LiteLLM", "litellm", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
