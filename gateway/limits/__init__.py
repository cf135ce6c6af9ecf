"""Per-key limits: requests and tokens per minute, and a daily cloud budget in USD.

Counters live in Redis when `limits.redis_url` is set (any URL gateway/redis_client.py takes:
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

from .counters import Counters, MemoryCounters, Plan, RedisCounters
from .limiter import Admission, Limiter, LimitsUnavailable, estimate_prompt_tokens

__all__ = [
    "Admission",
    "Counters",
    "Limiter",
    "LimitsUnavailable",
    "MemoryCounters",
    "Plan",
    "RedisCounters",
    "estimate_prompt_tokens",
]
