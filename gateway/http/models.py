"""/admin/models: which file serves each local model name, verified swaps and rollbacks."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import Forbidden
from ..pipeline.body import read_json, validation_error
from ..services import LOCAL, SETTINGS
from .ui import over_loopback


class SwapRequest(BaseModel):
    """POST /admin/models: move `name` to the file at `path`, once it proves itself."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    path: Path
    sha256: str = Field(pattern=re.compile(r"^[0-9a-fA-F]{64}$"))
    signature: str | None = Field(None, min_length=1, description="base64 Ed25519 over sha256")
    canary_percent: int | None = Field(
        None, ge=1, le=99, description="send this share of the name's requests to the new file"
    )

    @field_validator("path")
    @classmethod
    def _no_nul(cls, v: Path) -> Path:
        # No file system path holds a NUL; os.stat would raise ValueError deep in the swap.
        if "\x00" in str(v):
            raise ValueError("a path must not contain a NUL byte")
        return v


def _guard(request: web.Request) -> None:
    """Loading files by path is the box's most powerful lever: on a box with no admin key it
    is offered over loopback only (as the status page is), never to the LAN."""
    if request.app[SETTINGS].server.admin_key is None and not over_loopback(request):
        raise Forbidden(
            "Model administration without an admin key is served only on loopback; set "
            "GATEWAY_SERVER__ADMIN_KEY."
        )


async def list_local_models(request: web.Request) -> web.Response:
    _guard(request)
    fleet = request.app[LOCAL]
    return web.json_response({"object": "list", "data": fleet.describe()})


async def swap_model(request: web.Request) -> web.Response:
    _guard(request)
    body = await read_json(request)
    try:
        wanted = SwapRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    fleet = request.app[LOCAL]
    entry = await fleet.swap(
        wanted.name,
        wanted.path,
        wanted.sha256,
        signature=wanted.signature,
        canary_percent=wanted.canary_percent,
    )
    return web.json_response({"status": "canary" if wanted.canary_percent else "swapped", **entry})


async def promote_model(request: web.Request) -> web.Response:
    _guard(request)
    fleet = request.app[LOCAL]
    entry = await fleet.promote(request.match_info["name"])
    return web.json_response({"status": "promoted", **entry})


async def rollback_model(request: web.Request) -> web.Response:
    _guard(request)
    fleet = request.app[LOCAL]
    entry = await fleet.rollback(request.match_info["name"])
    return web.json_response({"status": "rolled_back", **entry})
