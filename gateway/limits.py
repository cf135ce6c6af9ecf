"""Per-key limits: requests and tokens per minute, and a daily cloud budget in USD.

Counters live in Redis when `limits.redis_url` is set (any URL gateway/state/redis.py takes:
one server, Sentinel or Cluster), so gateways behind one load balancer share them; in process
otherwise. Both keep the same rules:

- Reserve at admission. A request is admitted while what its key has used and reserved is
  below the limit; it then reserves its requested work at once: one request, its prompt
  tokens (estimated from characters, as OpenAI's limiter estimates them) plus `max_tokens`
  (or `limits.default_max_tokens`), and that many tokens at the cloud's price on the day
  budget. Check and reservation are one atomic step (one Lua script, one Redis round trip),
  so N concurrent requests on any number of replicas overshoot a limit by at most one
  request's reservation, never by N.
- Settle when the answer is in: the difference between what was used and what was reserved
  is added (a refund when negative) to the same window. A request that failed or was
  cancelled before an answer gives its tokens and dollars back (its request still counts).
- A Redis that is down or slower than `limits.timeout_s` fails open (the request goes on,
  unchecked) or closed (503 `limits_unavailable`) per `limits.fail_mode`; either way the
  metric `edge_gateway_limits_unenforced_total{stage,reason}` counts it and a log line says
  so (at most one per `_LOG_EVERY_S`, with how many were not logged).

The `limits` package was weighed and not used: its costed `hit` refuses a hit whose cost does
not fit (so a request asking for more than a whole minute's tokens is never admitted) and
still counts a refused fixed-window hit, it has no way to give a reservation back, its
counters are integers (the budget is in dollars), and three limits checked together would be
three round trips that are not atomic with one another.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from .errors import GatewayError, RateLimited
from .settings import LimitSettings

if TYPE_CHECKING:
    from .costs import Prices

log = logging.getLogger(__name__)

# Tokens per message of chat framing (role and separators), as the router counts them.
_PER_MESSAGE = 3
_CHARS_PER_TOKEN = 4
_MINUTE_TTL_S = 120  # a window outlives its minute so a late settle still finds it
_DAY_TTL_S = 2 * 86400
_LOG_EVERY_S = 30.0

Refusal = Literal["requests", "tokens", "budget"]
_REFUSALS: dict[int, Refusal] = {1: "requests", 2: "tokens", 3: "budget"}


class LimitsUnavailable(GatewayError):
    """limits.fail_mode=closed and the counters could not be consulted in time."""

    status = 503
    type = "service_unavailable"
    default_code = "limits_unavailable"

    def __init__(self, message: str, *, retry_after: float = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, round(retry_after)))})


@dataclass(frozen=True)
class Plan:
    """One admission: per limit (requests, tokens, budget) its key, cap (0: none) and amount."""

    keys: tuple[str, str, str]
    caps: tuple[float, float, float]
    amounts: tuple[float, float, float]
    refuse_spent: bool  # a spent budget refuses (429) rather than routing local


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


class Counters(Protocol):
    async def get(self, key: str) -> float: ...

    async def add(self, key: str, amount: float, ttl_s: int) -> float: ...

    async def reserve(self, plan: Plan) -> tuple[int, bool]:
        """(0 or the refused limit's number, budget spent); reserves only when admitted."""
        ...

    async def close(self) -> None: ...


def _ttl(index: int) -> int:
    return _DAY_TTL_S if index == 2 else _MINUTE_TTL_S


class MemoryCounters:
    """In-process counters with O(1) amortised expiry and a cap on how many keys it tracks.

    Keys are created with one of a few TTLs, so one FIFO per TTL is also in expiry order:
    expired keys are dropped from the front as requests come, never by scanning the table.
    Past `max_keys` the oldest keys go first (a flood of new keys forgets old windows early,
    it never slows every request down).
    """

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_keys = max_keys
        self._data: dict[str, tuple[float, float]] = {}  # key -> (expires, value)
        self._fifos: dict[int, deque[tuple[float, str]]] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._data)

    def _expire(self, now: float) -> None:
        for fifo in self._fifos.values():
            while fifo and (fifo[0][0] < now or len(self._data) > self.max_keys):
                expires, key = fifo.popleft()
                item = self._data.get(key)
                if item is not None and item[0] == expires:
                    del self._data[key]

    def _get(self, key: str) -> float:
        item = self._data.get(key)
        if item is None or item[0] < self._clock():
            return 0.0
        return item[1]

    def _add(self, key: str, amount: float, ttl_s: int) -> float:
        now = self._clock()
        self._expire(now)
        item = self._data.get(key)
        if item is None or item[0] < now:
            item = (now + ttl_s, 0.0)
            self._fifos.setdefault(ttl_s, deque()).append((item[0], key))
        value = item[1] + amount
        self._data[key] = (item[0], value)
        return value

    async def get(self, key: str) -> float:
        return self._get(key)

    async def add(self, key: str, amount: float, ttl_s: int) -> float:
        return self._add(key, amount, ttl_s)

    async def reserve(self, plan: Plan) -> tuple[int, bool]:
        # No await between check and reservation: atomic on the event loop, as the script is.
        spent = False
        for i, (key, cap) in enumerate(zip(plan.keys, plan.caps, strict=True)):
            if cap and self._get(key) >= cap:
                if i < 2 or plan.refuse_spent:
                    return i + 1, i == 2
                spent = True
        for i, (key, cap, amount) in enumerate(
            zip(plan.keys, plan.caps, plan.amounts, strict=True)
        ):
            if cap and amount > 0 and not (i == 2 and spent):
                self._add(key, amount, _ttl(i))
        return 0, spent

    async def close(self) -> None:
        self._data.clear()
        self._fifos.clear()


# KEYS: requests, tokens and budget counters (one hash tag: one Cluster slot).
# ARGV: the three caps (0: none), the three amounts, the two TTLs, refuse-when-spent (1/0).
# Uses only commands of Redis 2.6+ (TTL then EXPIRE instead of Redis 7's EXPIRE NX).
_RESERVE = """
local spent = 0
for i = 1, 3 do
  local cap = tonumber(ARGV[i])
  if cap > 0 and tonumber(redis.call('GET', KEYS[i]) or '0') >= cap then
    if i < 3 or ARGV[9] == '1' then return {i, i == 3 and 1 or 0} end
    spent = 1
  end
end
for i = 1, 3 do
  local amount = tonumber(ARGV[i + 3])
  if tonumber(ARGV[i]) > 0 and amount > 0 and not (i == 3 and spent == 1) then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[i + 3])
    if redis.call('TTL', KEYS[i]) < 0 then
      redis.call('EXPIRE', KEYS[i], i == 3 and ARGV[8] or ARGV[7])
    end
  end
end
return {0, spent}
"""

_ADD = """
local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return v
"""


def _num(x: float) -> str:
    return repr(float(x))


class RedisCounters:
    """The counters in Redis, each operation one script call bounded by `timeout_s`."""

    def __init__(self, url: str, *, timeout_s: float = 0.1, client: Any = None) -> None:
        from .state.redis import connect

        self.timeout_s = timeout_s
        self.client = client if client is not None else connect(url, timeout_s=timeout_s)

    async def get(self, key: str) -> float:
        async with asyncio.timeout(self.timeout_s):
            v = await self.client.get(key)
        return float(v) if v is not None else 0.0

    async def add(self, key: str, amount: float, ttl_s: int) -> float:
        async with asyncio.timeout(self.timeout_s):
            value = await self.client.eval(_ADD, 1, key, _num(amount), ttl_s)
        return float(value)

    async def reserve(self, plan: Plan) -> tuple[int, bool]:
        args = [*map(_num, plan.caps), *map(_num, plan.amounts), _MINUTE_TTL_S, _DAY_TTL_S]
        async with asyncio.timeout(self.timeout_s):
            code, spent = await self.client.eval(
                _RESERVE, 3, *plan.keys, *args, "1" if plan.refuse_spent else "0"
            )
        return int(code), bool(spent)

    async def warm(self, timeout_s: float) -> None:
        """One round trip at start-up: a Cluster client learns its slot map, a Sentinel one
        its master, outside the per-request bound."""
        async with asyncio.timeout(timeout_s):
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


def estimate_prompt_tokens(req: Any) -> int:
    """Prompt tokens from the character count (no tokenizer on the admission path)."""
    chars = req.content_chars() if hasattr(req, "content_chars") else 0
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
                items.append((self._keys(self._who(tenant))[1], float(tokens), _MINUTE_TTL_S))
            if s.daily_cloud_budget_usd and cloud_usd > 0:
                items.append((self._keys(self._who(tenant))[2], cloud_usd, _DAY_TTL_S))
        else:
            if admission.token_key is not None and tokens != admission.tokens:
                items.append((admission.token_key, tokens - admission.tokens, _MINUTE_TTL_S))
            if admission.budget_key is not None and cloud_usd != admission.usd:
                items.append((admission.budget_key, cloud_usd - admission.usd, _DAY_TTL_S))
            elif s.daily_cloud_budget_usd and admission.budget_spent and cloud_usd > 0:
                # Routed local past the budget yet answered by the cloud (a failover): charge it.
                items.append((self._keys(self._who(tenant))[2], cloud_usd, _DAY_TTL_S))
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

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.counters.close()
