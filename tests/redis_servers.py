"""Real Redis deployment shapes on loopback, for tests: a Cluster of three masters and a master
with a replica watched by Sentinels, started from the Debian packages (redis-server,
redis-sentinel) in a temporary directory and stopped after.

Fixtures (imported by tests/conftest.py, so every test module can ask for them):

- `redis_cluster` (session): `RedisCluster` of three masters, `.url` is `redis+cluster://...`.
- `redis_sentinel` (session): `SentinelGroup`, master + replica + three Sentinels, `.url` is
  `redis+sentinel://.../<service>/0`; `.failover()` makes the replica the master and waits
  until the Sentinels and the new master agree.
- `own_redis_sentinel` (per test): the same, private, for a test that fails it over.

Every process is started with persistence off and protected mode off on 127.0.0.1 only.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.children import spawn

SERVICE = "egw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000, as Redis 6 and 7 both derive it) is
    free and valid too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port + 10000)) != 0:
                return port
    raise RuntimeError("no free port pair for a cluster node")


def _exe(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.fail(f"{name} is not installed: run `make system-deps` (it installs it)")
    return exe


def _wait_port(port: int, what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"{what} did not start on port {port}")


def _wait(check: Any, what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} (last error: {last!r})")


def _sync_client(port: int) -> Any:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)


class _Processes:
    """Processes this object started, stopped by their own pid on close."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="egw-redis-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with open(self.dir / f"{name}.log", "wb") as log:  # the child keeps its own copy
            proc = spawn(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _server_argv(port: int, *extra: str) -> list[str]:
    return [
        _exe("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        *extra,
    ]


class RedisCluster:
    """Three redis-server masters in cluster mode on loopback, all 16384 slots assigned."""

    def __init__(self, masters: int = 3) -> None:
        self._p = _Processes()
        self.ports = [free_cluster_port() for _ in range(masters)]
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> RedisCluster:
        for port in self.ports:
            conf = f"nodes-{port}.conf"
            self._p.spawn(
                _server_argv(port, "--cluster-enabled", "yes", "--cluster-config-file", conf),
                f"cluster-{port}",
            )
        for port in self.ports:
            _wait_port(port, "cluster node")
        subprocess.run(
            [_exe("redis-cli"), "--cluster", "create"]
            + [f"127.0.0.1:{p}" for p in self.ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ready() -> bool:
            for port in self.ports:
                info = _sync_client(port).cluster("INFO")
                if info.get("cluster_state") != "ok":
                    return False
            return True

        _wait(ready, "the cluster did not reach cluster_state:ok")
        return self

    def client(self) -> Any:
        """A synchronous cluster client, for assertions."""
        from redis.cluster import ClusterNode
        from redis.cluster import RedisCluster as SyncCluster

        return SyncCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in self.ports])

    def stop(self) -> None:
        self._p.close()


class SentinelGroup:
    """A master and a replica, watched by `sentinels` redis-sentinel processes (quorum 2)."""

    def __init__(self, sentinels: int = 3) -> None:
        self._p = _Processes()
        self.data_ports = [free_port(), free_port()]  # master first, at start
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.url = (
            "redis+sentinel://"
            + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
            + f"/{SERVICE}/0"
        )

    def start(self) -> SentinelGroup:
        master, replica = self.data_ports
        self._p.spawn(_server_argv(master), f"master-{master}")
        self._p.spawn(
            _server_argv(replica, "--replicaof", "127.0.0.1", str(master)), f"replica-{replica}"
        )
        _wait_port(master, "master")
        _wait_port(replica, "replica")
        quorum = min(2, len(self.sentinel_ports))
        for port in self.sentinel_ports:
            conf = self._p.dir / f"sentinel-{port}.conf"
            # Sentinel rewrites its config file, so each one gets its own, writable.
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master} {quorum}\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._p.spawn([_exe("redis-sentinel"), str(conf)], f"sentinel-{port}")
        for port in self.sentinel_ports:
            _wait_port(port, "sentinel")

        def replica_in_sync() -> bool:
            info = _sync_client(replica).info("replication")
            return bool(info.get("master_link_status") == "up")

        _wait(replica_in_sync, "the replica did not sync with the master")

        def sentinels_know_replica() -> bool:
            for port in self.sentinel_ports:
                replicas = _sync_client(port).execute_command("SENTINEL", "REPLICAS", SERVICE)
                if not replicas:
                    return False
            return True

        _wait(sentinels_know_replica, "the sentinels did not discover the replica")
        return self

    def master_port(self) -> int:
        """The port the first Sentinel reports as the master now."""
        _host, port = _sync_client(self.sentinel_ports[0]).execute_command(
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
        )
        return int(port)

    def master(self) -> Any:
        """A synchronous client on the current master, for assertions."""
        return _sync_client(self.master_port())

    def failover(self, timeout_s: float = 60) -> int:
        """Fail the master over to the replica (SENTINEL FAILOVER); wait until every Sentinel
        names the new master and it takes writes. Returns the new master's port."""
        old = self.master_port()
        _sync_client(self.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", SERVICE)
        new = next(p for p in self.data_ports if p != old)

        def switched() -> bool:
            for port in self.sentinel_ports:
                _h, p = _sync_client(port).execute_command(
                    "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
                )
                if int(p) != new:
                    return False
            role = _sync_client(new).execute_command("ROLE")[0]
            return bool(role == b"master")

        _wait(switched, "the failover did not complete", timeout_s)
        return new

    def stop(self) -> None:
        self._p.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real Redis Cluster of three masters on loopback, shared by the session."""
    cluster = RedisCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A real master + replica behind three Sentinels, shared by the session (do not fail
    it over: use `own_redis_sentinel` for that)."""
    group = SentinelGroup().start()
    yield group
    group.stop()


@pytest.fixture
def own_redis_sentinel() -> Iterator[SentinelGroup]:
    """A private master + replica + three Sentinels a test may fail over."""
    group = SentinelGroup().start()
    yield group
    group.stop()
