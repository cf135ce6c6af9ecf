"""POST /v1/feedback: the app that got an answer says whether it was good.

`{"request_id": "...", "score": -1..1}` or `{"request_id": "...", "good": true|false}`, with
the same API key as the request: 200 when stored, 404 for an id not answered for this key
recently (or with learning off), 409 for a second score of one request, 400 for a bad body.
"""

from __future__ import annotations

import math

from aiohttp import web

from ..errors import InvalidRequest, NotFound
from ..pipeline.body import read_json
from ..services import LEARNING
from .auth import tenant_of

_FIELDS = {"request_id", "score", "good"}


async def feedback(request: web.Request) -> web.Response:
    learning = request.app.get(LEARNING)
    if learning is None:
        raise NotFound(
            "Feedback is not collected on this gateway (learning.enabled is false).",
            code="learning_disabled",
        )
    body = await read_json(request)
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {unknown[0]}",
            param=unknown[0],
            code="unknown_parameter",
        )
    rid = body.get("request_id")
    if not isinstance(rid, str) or not 0 < len(rid) <= 128:
        raise InvalidRequest(
            "`request_id` must be the x-request-id of an answer (a string).",
            param="request_id",
            code="invalid_request_id",
        )
    score = _score(body)
    label = await learning.feedback(tenant_of(request), rid, score)
    return web.json_response(
        {"object": "feedback", "request_id": rid, "score": score, "label": label}
    )


def _score(body: dict[str, object]) -> float:
    if ("score" in body) == ("good" in body):
        raise InvalidRequest(
            "Give exactly one of `score` (-1 to 1) or `good` (true or false).",
            param="score",
            code="invalid_score",
        )
    if "good" in body:
        good = body["good"]
        if not isinstance(good, bool):
            raise InvalidRequest(
                "`good` must be true or false.", param="good", code="invalid_score"
            )
        return 1.0 if good else -1.0
    s = body["score"]
    if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
        raise InvalidRequest("`score` must be a number.", param="score", code="invalid_score")
    if not -1 <= s <= 1:
        raise InvalidRequest(
            "`score` must be between -1 (bad) and 1 (good).", param="score", code="invalid_score"
        )
    return float(s)
