"""One way to open a Redis client from a URL, for the cache, the limits and the state store.

The deployment shapes redis-py supports, each named by its URL:

- `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS), `unix:///path.sock[?db=N]`:
  one server, redis-py's own URL parsing (query options such as `ssl_cert_reqs` pass through).
- `redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]` (and
  `rediss+sentinel://` for TLS to the servers): the master of `service_name` as the listed
  Sentinels report it, found again after a failover. The form is the one the `limits` package
  and Flask-Limiter document; Celery's `sentinel://` names one Sentinel per URL, which does not
  fit one setting. The password is the servers'; `?sentinel_password=` sets the Sentinels' own.
- `redis+cluster://[user:password@]host:port[,host:port...]` (and `rediss+cluster://`): a Redis
  Cluster, any of its nodes as a start. A Cluster has only database 0: a `/N` other than `/0`
  is refused by `parse`, so a misconfigured URL stops start-up instead of failing per request.

Callers only ever call `connect` (and `parse` to validate a URL at start-up); the client
returned is asyncio redis-py's `Redis` or `RedisCluster`, which share the commands used here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

Kind = Literal["single", "sentinel", "cluster"]

_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_CLUSTER = ("redis+cluster", "rediss+cluster")
_SINGLE = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisTarget:
    """What a Redis URL names, parsed without connecting."""

    kind: Kind
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)


def _hosts(netloc: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.rsplit("@", 1)[-1].split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # [ipv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        try:
            hosts.append((host, int(port) if port else default_port))
        except ValueError:
            raise ValueError(f"bad port in Redis URL host {part!r}") from None
    if not hosts:
        raise ValueError("a Sentinel or Cluster Redis URL names at least one host:port")
    return tuple(hosts)


def _credentials(netloc: str) -> tuple[str | None, str | None]:
    if "@" not in netloc:
        return None, None
    userinfo = netloc.rsplit("@", 1)[0]
    user, sep, password = userinfo.partition(":")
    if not sep:  # "password@host", as redis-py reads a lone userinfo
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def parse(url: str) -> RedisTarget:
    """The shape a URL names; ValueError with the reason when it names none (never connects)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in _SINGLE:
        return RedisTarget(kind="single", url=url, tls=scheme == "rediss")
    if scheme not in _SENTINEL + _CLUSTER:
        raise ValueError(
            f"unsupported Redis URL scheme {scheme!r}: use redis://, rediss://, unix://,"
            " redis+sentinel://host:port[,host:port]/service[/db] or"
            " redis+cluster://host:port[,host:port]"
        )
    # urlsplit refuses a comma-separated netloc's "port", so the netloc is split by hand.
    rest = url.split("://", 1)[1]
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    options = parse_qs(query)
    username, password = _credentials(netloc)
    parts = [p for p in path.split("/") if p]
    if scheme in _CLUSTER:
        if parts not in ([], ["0"]):
            raise ValueError(
                f"Redis Cluster has only database 0: drop '/{'/'.join(parts)}' from the URL"
                " (the gateway's keys are prefixed, so they can share database 0)"
            )
        return RedisTarget(
            kind="cluster",
            url=url,
            hosts=_hosts(netloc, 6379),
            tls=scheme.startswith("rediss"),
            username=username,
            password=password,
        )
    if not parts or len(parts) > 2:
        raise ValueError("a Sentinel Redis URL ends with /service_name or /service_name/db")
    try:
        db = int(parts[1]) if len(parts) == 2 else 0
    except ValueError:
        raise ValueError(f"bad database number {parts[1]!r} in a Sentinel Redis URL") from None
    return RedisTarget(
        kind="sentinel",
        url=url,
        hosts=_hosts(netloc, 26379),
        service=unquote(parts[0]),
        db=db,
        tls=scheme.startswith("rediss"),
        username=username,
        password=password,
        sentinel_password=next(iter(options.get("sentinel_password", [])), None),
    )


def redacted(url: str) -> str:
    """The URL with any password replaced, for log lines and errors."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        user = netloc.rsplit("@", 1)[0].partition(":")[0]
        netloc = f"{user}:***@" + netloc.rsplit("@", 1)[1]
    return f"{scheme}{sep}{netloc}{slash}{tail.split('?', 1)[0]}"


def connect(
    url: str,
    *,
    timeout_s: float = 0.5,
    decode_responses: bool = False,
    max_connections: int | None = None,
    health_check_interval: float = 0,
) -> Any:
    """An asyncio redis-py client for `url` (any form above), each socket bounded by `timeout_s`.

    Connects lazily: nothing is sent until the first command, so a Redis that is down at
    start-up is a per-request error (the callers fail open or closed), not a crash.
    """
    shape = parse(url)
    common: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "decode_responses": decode_responses,
        "health_check_interval": health_check_interval,
    }
    if shape.kind == "single":
        import redis.asyncio as redis

        if max_connections is not None:
            common["max_connections"] = max_connections
        return redis.Redis.from_url(url, retry_on_timeout=False, **common)
    auth: dict[str, Any] = {"username": shape.username, "password": shape.password}
    if shape.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode

        return _cluster_class()(
            startup_nodes=[ClusterNode(h, p) for h, p in shape.hosts],
            ssl=shape.tls,
            max_connections=max_connections or 100,
            **auth,
            **common,
        )
    return _sentinel_master(shape, common, auth, max_connections)


def _cluster_class() -> Any:
    from redis.asyncio.cluster import RedisCluster

    class ShieldedCluster(RedisCluster):
        """A Cluster client whose slot-map discovery outlives its callers' timeouts.

        The first command (and the first after a MOVED) fetches the slot map, a few round
        trips to several nodes. Under a tight per-operation bound (limits.timeout_s, the
        cache's timeout_ms) each caller's timeout would cancel it and the next caller would
        start again, so on a busy box the map might never arrive: it runs in a task of its
        own that every caller waits on, shielded, and only the waiting is bounded.
        """

        _discovery: asyncio.Task[Any] | None = None

        async def initialize(self, *args: Any, **kwargs: Any) -> Any:
            if not self._initialize:
                return self
            task = self._discovery
            if task is None or task.done():
                task = asyncio.ensure_future(super().initialize(*args, **kwargs))
                # A caller that timed out never reads its error: read here, not logged twice.
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
                self._discovery = task
            await asyncio.shield(task)
            return self

    return ShieldedCluster


def _sentinel_master(
    shape: RedisTarget, common: dict[str, Any], auth: dict[str, Any], max_connections: int | None
) -> Any:
    import redis.asyncio as redis
    from redis.asyncio.sentinel import Sentinel, SentinelManagedSSLConnection

    class SentinelRedis(redis.Redis):
        """The master's client; closing it closes the Sentinel connections too."""

        sentinels: Sentinel | None = None

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            if self.sentinels is not None:
                for s in self.sentinels.sentinels:
                    await s.aclose()

    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
    }
    if shape.sentinel_password:
        sentinel_kwargs["password"] = shape.sentinel_password
    sentinel = Sentinel(list(shape.hosts), sentinel_kwargs=sentinel_kwargs)
    extra: dict[str, Any] = {"db": shape.db, **auth, **common}
    if shape.tls:
        extra["connection_class"] = SentinelManagedSSLConnection
    if max_connections is not None:
        extra["max_connections"] = max_connections
    assert shape.service is not None
    client = sentinel.master_for(shape.service, redis_class=SentinelRedis, **extra)
    client.sentinels = sentinel
    return client
