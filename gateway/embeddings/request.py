"""The embeddings request as OpenAI defines it, its bounds, and the response shapes."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, StrictInt, StrictStr, field_validator

from ..errors import InvalidRequest
from ..pipeline.body import validated
from ..schemas import NullIsAbsent
from ..settings import ServerSettings
from ..vectors import Item

# OpenAI's own bound on the inputs of one request.
MAX_INPUTS = 2048
# Token ids are 32-bit in every tokenizer we could pass them to.
TOKEN_ID_MAX = 2**31 - 1
TokenId = Annotated[StrictInt, Field(ge=0, le=TOKEN_ID_MAX)]


class EmbeddingRequest(NullIsAbsent):
    """Unknown fields are kept: passed on to a cloud model, refused by the local one."""

    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1, examples=["auto", "local"])
    input: StrictStr | list[StrictStr] | list[TokenId] | list[list[TokenId]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: StrictInt | None = Field(None, ge=1, le=65536)
    user: StrictStr | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _token_ids_in_range(cls, v: Any) -> Any:
        """A token list with an id out of range is named by its place ('input[1]' or
        'input[0][3]'), not reported as the union's first branch (a string) would be."""
        if not isinstance(v, list):
            return v
        rows = [(f"[{i}]", x) for i, x in enumerate(v)]
        if v and all(isinstance(x, list) for x in v):
            rows = [(f"[{i}][{j}]", t) for i, x in enumerate(v) for j, t in enumerate(x)]
        for where, t in rows:
            if isinstance(t, int) and not isinstance(t, bool) and not 0 <= t <= TOKEN_ID_MAX:
                raise InvalidRequest(
                    f"Invalid value for 'input{where}': {t} is not a token id "
                    f"(token ids run from 0 to {TOKEN_ID_MAX}).",
                    param="input",
                    code="invalid_value",
                )
        return v

    def items(self) -> list[Item]:
        """Every input: a string, a list of strings, one token list or a list of token lists."""
        v = self.input
        if isinstance(v, str):
            return [v]
        if v and isinstance(v[0], int):
            return [list(v)]
        return list(v)  # type: ignore[arg-type]

    def texts(self) -> list[str]:
        return [i for i in self.items() if isinstance(i, str)]

    def extra_fields(self) -> list[str]:
        return sorted(self.model_extra or {})

    def upstream_body(self) -> dict[str, Any]:
        """What a cloud embedding model gets: the client's fields, unknown ones included."""
        return self.model_dump(exclude_none=True, exclude_unset=True)


def _check(req: EmbeddingRequest, server: ServerSettings) -> None:
    items = req.items()
    if not items:
        raise InvalidRequest(
            "'input' must not be an empty list.", param="input", code="invalid_value"
        )
    for i, item in enumerate(items):
        if len(item) == 0:
            what = "string" if isinstance(item, str) else "token list"
            raise InvalidRequest(
                f"input[{i}] is an empty {what}; every input needs some content.",
                param="input",
                code="invalid_value",
            )
    # Text characters plus token ids: the same bound as a chat request's text.
    size = sum(len(i) for i in items)
    if size > server.max_content_chars:
        raise InvalidRequest(
            f"The request has {size} characters and token ids of input; this gateway accepts "
            f"at most {server.max_content_chars} (server.max_content_chars).",
            param="input",
            code="content_too_long",
        )


def parse_embedding_request(body: dict[str, Any], server: ServerSettings) -> EmbeddingRequest:
    """A validated request within the server's bounds, or a 400 naming what is wrong."""
    raw = body.get("input")
    if isinstance(raw, list) and len(raw) > MAX_INPUTS:
        # Checked on the raw JSON, before validation spends time on a hostile list.
        raise InvalidRequest(
            f"Too many inputs: {len(raw)} > {MAX_INPUTS}.", param="input", code="too_many_inputs"
        )
    req = validated(EmbeddingRequest, body)
    _check(req, server)
    return req


def encode(vector: np.ndarray, encoding_format: str | None) -> list[float] | str:
    """float: a JSON list; base64: the little-endian float32 bytes, as OpenAI sends them."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.astype(np.float64).tolist()  # in C: a million floats in milliseconds


def response(
    vectors: list[np.ndarray], *, model: str, tokens: int, encoding_format: str | None
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
