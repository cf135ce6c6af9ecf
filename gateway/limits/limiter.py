"""The limiter: plans a request's reservation, admits or refuses it, settles it later."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from ..errors import GatewayError, RateLimited
from ..jsonfast import dumps
from ..settings import LimitSettings
from .counters import DAY_TTL_S, MINUTE_TTL_S, Counters, Plan

if TYPE_CHECKING:
    from ..costs import Prices

log = logging.getLogger(__name__)

# Tokens per message of chat framing (role and separators), as the router counts them.
_PER_MESSAGE = 3
_CHARS_PER_TOKEN = 4
_LOG_EVERY_S = 30.0

Refusal = Literal["requests", "tokens", "budget", "concurrency"]
_REFUSALS: dict[int, Refusal] = {1: "requests", 2: "tokens", 3: "budget"}


class LimitsUnavailable(GatewayError):
    """limits.fail_mode=closed and the counters could not be consulted in time."""

    status = 503
    type = "service_unavailable"
    default_code = "limits_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


@dataclass
class Admission:
    """What admission reserved for one request, settled once after the answer."""

    budget_spent: bool = False
    reserved: bool = False  # False: admitted unchecked (limits inactive or failing open)
    tokens: float = 0.0
    usd: float = 0.0
    token_key: str | None = None
    budget_key: str | None = None
    settled: bool = False


def estimate_prompt_tokens(req: Any) -> int:
    """Prompt tokens from the character count (no tokenizer on the admission path): the
    text, and what else goes upstream and is billed as prompt (tool and function
    definitions, a response schema), so a 400 KB tool description is reserved as such."""
    chars = req.content_chars() if hasattr(req, "content_chars") else 0
    for name in ("tools", "functions", "response_format"):
        extra = getattr(req, name, None)
        if extra:
            chars += len(dumps(extra))
    if hasattr(req, "items"):  # an embedding request: strings and token lists
        chars = sum(len(i) * (1 if isinstance(i, str) else _CHARS_PER_TOKEN) for i in req.items())
    tokens = math.ceil(chars / _CHARS_PER_TOKEN)
    messages = getattr(req, "messages", None)
    if messages is not None:
        tokens += _PER_MESSAGE * (len(messages) + 1)
    return tokens


class Limiter:
    def __init__(
        self,
        settings: LimitSettings,
        counters: Counters,
        *,
        keyed: bool = True,
        on_limited: Callable[[str], None] = lambda _r: None,
        on_unenforced: Callable[[str, str], None] = lambda _s, _r: None,
        prices: Prices | None = None,
        cloud_models: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        # Without configured keys any Bearer token is accepted, so tokens are not identities:
        # all callers share one set of counters instead of one per made-up token.
        self.keyed = keyed
        self.counters = counters
        self._on_limited, self._on_unenforced = on_limited, on_unenforced
        # Reservations are priced as the answer will be: litellm's prices by model string.
        self._prices, self._cloud_models = prices, cloud_models or {}
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()
        self._in_flight: dict[str, int] = {}
        self._logged_at = -math.inf
        self._unlogged = 0

    @property
    def active(self) -> bool:
        s = self.settings
        return bool(s.requests_per_minute or s.tokens_per_minute or s.daily_cloud_budget_usd)

    async def start(self, timeout_s: float = 5.0) -> None:
        """Reach the counters once before traffic (bounded; a Redis down now is only logged:
        requests then fail open or closed as configured)."""
        warm = getattr(self.counters, "warm", None)
        if not self.active or warm is None:
            return
        try:
            await warm(max(timeout_s, self.settings.timeout_s))
        except Exception as exc:
            log.warning(
                "limit counters unreachable at start-up",
                extra={"error": type(exc).__name__, "fail_mode": self.settings.fail_mode},
            )

    def _keys(self, tenant: str) -> tuple[str, str, str]:
        # One hash tag per tenant: the three counters share a Cluster slot, so one script
        # may read and write them all.
        now = self._clock()
        minute = int(now // 60)
        day = time.strftime("%Y%m%d", time.gmtime(now))
        base = f"egw:lim:{{{tenant}}}"
        return f"{base}:req:{minute}", f"{base}:tok:{minute}", f"{base}:usd:{day}"

    def _usd(self, model: str | None, prompt: int, completion: int) -> float:
        """The most the request could cost in the cloud: its own cloud model's price, else
        the dearest configured one (admission comes before routing picks a target)."""
        if self._prices is None or not self._cloud_models:
            return 0.0
        target = self._cloud_models.get(model or "")
        models = [target] if target else list(self._cloud_models.values())
        return max(self._prices.cost(m, prompt, completion) for m in models)

    def _plan(self, tenant: str, req: Any) -> Plan:
        s = self.settings
        tokens = usd = 0.0
        if req is not None and (s.tokens_per_minute or s.daily_cloud_budget_usd):
            prompt = estimate_prompt_tokens(req)
            completion = 0
            if hasattr(req, "requested_max_tokens"):
                asked = req.requested_max_tokens() or s.default_max_tokens
                completion = asked * (getattr(req, "n", None) or 1)
            tokens = float(prompt + completion)
            if s.daily_cloud_budget_usd:
                usd = self._usd(getattr(req, "model", None), prompt, completion)
        return Plan(
            keys=self._keys(tenant),
            caps=(
                float(s.requests_per_minute),
                float(s.tokens_per_minute),
                float(s.daily_cloud_budget_usd),
            ),
            amounts=(1.0, tokens, usd),
            refuse_spent=s.budget_exceeded == "refuse",
        )

    async def admit(self, tenant: str | None, req: Any = None) -> Admission:
        """Check the key's limits and reserve `req`'s work; raise 429 past a limit.

        The admission's `budget_spent` is True when the cloud budget is spent (the request
        goes local). `req` is a chat, completion or embedding request; without one only the
        request itself is counted.
        """
        if not self.active:
            return Admission()
        plan = self._plan(self._who(tenant), req)
        try:
            code, spent = await self.counters.reserve(plan)
        except Exception as exc:  # counters unavailable: fail open or closed
            self._unenforced("admit", exc)
            if self.settings.fail_mode == "closed":
                raise LimitsUnavailable(
                    "Per-key limits cannot be checked right now; try again shortly.",
                    retry_after=1,
                ) from None
            return Admission()
        if code:
            self._refuse(_REFUSALS[code])
        s = self.settings
        return Admission(
            budget_spent=spent,
            reserved=True,
            tokens=plan.amounts[1] if s.tokens_per_minute else 0.0,
            usd=0.0 if spent or not s.daily_cloud_budget_usd else plan.amounts[2],
            token_key=plan.keys[1] if s.tokens_per_minute else None,
            budget_key=plan.keys[2] if s.daily_cloud_budget_usd else None,
        )

    def enter(self, tenant: str | None) -> str | None:
        """Count one more request of the key in progress; 429 past
        `limits.max_concurrent_per_key`. Returns what `leave` takes back (None: unbounded)."""
        cap = self.settings.max_concurrent_per_key
        if not cap:
            return None
        who = self._who(tenant)
        n = self._in_flight.get(who, 0)
        if n >= cap:
            self._on_limited("concurrency")
            raise RateLimited(
                f"Too many concurrent requests: {cap} of this key are in progress "
                "(limits.max_concurrent_per_key).",
                retry_after=1,
                code="too_many_concurrent_requests",
            )
        self._in_flight[who] = n + 1
        return who

    def leave(self, who: str | None) -> None:
        if who is None:
            return
        n = self._in_flight.get(who, 0) - 1
        if n > 0:
            self._in_flight[who] = n
        else:
            self._in_flight.pop(who, None)

    def _refuse(self, what: Refusal) -> None:
        s = self.settings
        self._on_limited(what)
        left = 60 - self._clock() % 60
        if what == "requests":
            raise RateLimited(
                f"Rate limit reached: {s.requests_per_minute} requests per minute.",
                retry_after=left,
                code="rate_limit_exceeded",
            )
        if what == "tokens":
            raise RateLimited(
                f"Rate limit reached: {s.tokens_per_minute} tokens per minute.",
                retry_after=left,
                code="tokens_rate_limit_exceeded",
            )
        raise RateLimited(
            f"Daily cloud budget of ${s.daily_cloud_budget_usd:g} is spent.",
            retry_after=self._seconds_to_midnight(),
            code="budget_exceeded",
        )

    def _unenforced(self, stage: str, exc: BaseException) -> None:
        reason = "timeout" if isinstance(exc, TimeoutError) else "error"
        self._on_unenforced(stage, reason)
        now = time.monotonic()
        if now - self._logged_at < _LOG_EVERY_S:
            self._unlogged += 1
            return
        self._logged_at, unlogged, self._unlogged = now, self._unlogged, 0
        log.warning(
            "limit counters unavailable; limits not enforced"
            if self.settings.fail_mode == "open" or stage == "settle"
            else "limit counters unavailable; requests refused (limits.fail_mode=closed)",
            extra={
                "stage": stage,
                "reason": reason,
                "error": type(exc).__name__,
                "fail_mode": self.settings.fail_mode,
                "timeout_s": self.settings.timeout_s,
                "not_logged_since": unlogged,
            },
        )

    def _who(self, tenant: str | None) -> str:
        return tenant if tenant and self.keyed else "anonymous"

    def _seconds_to_midnight(self) -> float:
        return 86400 - self._clock() % 86400

    def record(
        self,
        tenant: str | None,
        tokens: int,
        cloud_usd: float,
        admission: Admission | None = None,
    ) -> None:
        """Settle what a finished request used against its admission, in the background.

        Without an admission (a caller that reserved nothing) the whole use is charged to the
        current windows.
        """
        if not self.active:
            return
        if admission is not None:
            if admission.settled:
                return
            admission.settled = True
            if not admission.reserved:  # nothing to settle against: charge the whole use
                admission = None
        items: list[tuple[str, float, int]] = []
        s = self.settings
        if admission is None:
            if s.tokens_per_minute and tokens > 0:
                items.append((self._keys(self._who(tenant))[1], float(tokens), MINUTE_TTL_S))
            if s.daily_cloud_budget_usd and cloud_usd > 0:
                items.append((self._keys(self._who(tenant))[2], cloud_usd, DAY_TTL_S))
        else:
            if admission.token_key is not None and tokens != admission.tokens:
                items.append((admission.token_key, tokens - admission.tokens, MINUTE_TTL_S))
            if admission.budget_key is not None and cloud_usd != admission.usd:
                items.append((admission.budget_key, cloud_usd - admission.usd, DAY_TTL_S))
            elif s.daily_cloud_budget_usd and admission.budget_spent and cloud_usd > 0:
                # Routed local past the budget yet answered by the cloud (a failover): charge it.
                items.append((self._keys(self._who(tenant))[2], cloud_usd, DAY_TTL_S))
        if not items:
            return
        task = asyncio.create_task(self._settle(items))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def release(self, admission: Admission | None) -> None:
        """Give back what a request that got no answer (failed, cancelled) reserved."""
        if admission is not None:
            self.record(None, 0, 0.0, admission)

    async def _settle(self, items: list[tuple[str, float, int]]) -> None:
        try:
            for key, amount, ttl in items:
                await self.counters.add(key, amount, ttl)
        except Exception as exc:
            self._unenforced("settle", exc)

    async def drain(self) -> None:
        """Wait for the settlements still being written (they run after the answer)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.counters.close()
