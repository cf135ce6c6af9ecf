"""The opening every model endpoint shares: the one place a request is admitted.

Chat, completions, Responses and embeddings each parse their own body (pipeline/body.py),
then open here: the tenant, its admission (rate limits; whether its cloud budget is spent),
the client's cache control and the request's deadline. `run` holds the answer to that
deadline; `answered` records what came back. This is also the one read of the app's
services on a model request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from ..cache import CacheControl
from ..errors import RequestTimeout
from ..services import SERVICES, Services
from ..settings import ServerSettings
from .auth import tenant_of
from .middlewares import REQUEST_ID
from .observe import RECORD, RequestRecord

if TYPE_CHECKING:
    from ..backends.base import Endpoint
    from ..pipeline.outcome import Outcome
    from ..schemas import AnyRequest

T = TypeVar("T")


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


@dataclass(slots=True)
class Opening:
    """An admitted request: who sent it, what it may spend, and until when it may run."""

    request: web.Request
    services: Services
    tenant: str | None
    budget_spent: bool  # the key's daily cloud budget is spent: the router keeps it local
    cc: CacheControl
    record: RequestRecord
    deadline: float  # on the event loop's clock

    @classmethod
    async def admit(cls, request: web.Request, services: Services, req: Any = None) -> Opening:
        """`req` (chat, completion or embedding request) is reserved against the key's limits
        now and settled when the answer is in (observe), so concurrency cannot overshoot."""
        tenant = tenant_of(request)
        record = request[RECORD]
        record.in_flight = services.limiter.enter(tenant)  # observe gives it back at the end
        record.admission = await services.limiter.admit(tenant, req)
        budget_spent = record.admission.budget_spent
        cc = CacheControl.parse(request.headers.get("Cache-Control"))
        deadline = deadline_of(record.started, services.settings.server)
        return cls(request, services, tenant, budget_spent, cc, record, deadline)

    async def run(self, answer: Awaitable[T]) -> T:
        """The answer, or a 504 once `server.request_timeout_s` has passed."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await answer
        except TimeoutError:
            if asyncio.get_running_loop().time() < self.deadline:
                raise  # not our bound: someone else's timeout
            raise timed_out(self.services.settings.server) from None

    async def dispatch(self, req: AnyRequest, endpoint: Endpoint) -> Outcome:
        """A chat or completions request through the dispatcher, within the deadline."""
        answer = self.services.dispatcher.handle(
            req,
            endpoint,
            self.tenant,
            self.cc,
            budget_spent=self.budget_spent,
            on_decision=self.record.decided,
        )
        return await self.run(answer)

    def answered(self, outcome: Outcome) -> None:
        self.record.outcome = outcome
        self.record.backend_s = outcome.backend_seconds

    async def learn(self, req: AnyRequest, endpoint: Endpoint, outcome: Outcome) -> None:
        """A chat answer: its text captured on opt-in, remembered for feedback and shadowing."""
        services, record = self.services, self.record
        # Text is captured only on opt-in: the log (server.log_bodies) or the status page.
        if services.settings.server.log_bodies or services.settings.ui.show_prompts:
            record.prompt_text = req.prompt_text()
            record.answer_parts = []
        if services.learning is not None:  # remember it for feedback; maybe shadow-judge it
            await services.learning.answered(
                self.request[REQUEST_ID], req, endpoint, outcome, record, asyncio.current_task()
            )

    def usage(self, obj: dict[str, Any], text: Callable[[], str]) -> None:
        """A whole answer's usage, and its text when the body is captured."""
        self.record.usage_from(obj)
        if self.record.answer_parts is not None:
            self.record.answer_parts.append(text())


def deadline_of(started: float, server: ServerSettings) -> float:
    """`server.request_timeout_s` after the request arrived, on the event loop's clock."""
    elapsed = time.perf_counter() - started
    return asyncio.get_running_loop().time() + server.request_timeout_s - elapsed


def timed_out(server: ServerSettings) -> RequestTimeout:
    return RequestTimeout(
        f"The request took longer than {server.request_timeout_s:g} s (server.request_timeout_s)."
    )
