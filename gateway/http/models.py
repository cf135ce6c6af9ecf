"""/admin/models: which file serves each local model name, verified swaps and rollbacks."""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..services import SERVICES
from .requests import read_json, validation_error


class SwapRequest(BaseModel):
    """POST /admin/models: move `name` to the file at `path`, once it proves itself."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    path: Path
    sha256: str = Field(pattern=re.compile(r"^[0-9a-fA-F]{64}$"))
    signature: str | None = Field(None, min_length=1, description="base64 Ed25519 over sha256")


async def list_local_models(request: web.Request) -> web.Response:
    fleet = request.app[SERVICES].local
    return web.json_response({"object": "list", "data": fleet.describe()})


async def swap_model(request: web.Request) -> web.Response:
    body = await read_json(request)
    try:
        wanted = SwapRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    fleet = request.app[SERVICES].local
    entry = await fleet.swap(wanted.name, wanted.path, wanted.sha256, signature=wanted.signature)
    return web.json_response({"status": "swapped", **entry})


async def rollback_model(request: web.Request) -> web.Response:
    fleet = request.app[SERVICES].local
    entry = await fleet.rollback(request.match_info["name"])
    return web.json_response({"status": "rolled_back", **entry})
