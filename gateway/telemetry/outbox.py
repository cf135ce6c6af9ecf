"""The outbox: routing records appended to a bounded SQLite queue, shipped in order.

Store-and-forward, as AWS Greengrass stream manager and Azure IoT Edge do it for telemetry:
every request's record lands on the box first (gateway/durable.py, WAL, capped, oldest
dropped first and counted), and one background shipper sends the oldest rows in batches as
OTLP/HTTP JSON. A row leaves the queue only after the receiver answered 2xx for its batch, so
an outage of any length, or a restart, loses nothing the cap did not push out; rows go out in
insertion order because the shipper always takes the head and never runs two batches at
once. Delivery is at-least-once: a batch the receiver took but whose answer was lost (a
timeout, a crash between the 2xx and the delete) is sent again; each record carries an id the
gateway made for it (`log.record.uid`) so the far side can drop the repeat, and every batch
names the replica that sent it (`service.instance.id`), so records of a fleet stay apart.

The request path never waits for any of it: `add` only appends to a list in memory; a writer
task moves that list into SQLite (off the loop, on the log's own thread) and wakes the shipper.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import aiohttp

from ..durable import DurableLog, Record
from ..metrics import Metrics
from ..settings import TelemetrySettings
from . import otlp

log = logging.getLogger(__name__)

KIND = "route"  # the DurableLog row kind of routing records


def _version() -> str:
    try:
        return metadata.version("edge-gateway")
    except metadata.PackageNotFoundError:
        return "0"


class Outbox:
    def __init__(
        self,
        settings: TelemetrySettings,
        metrics: Metrics,
        *,
        reachable: Callable[[], bool] = lambda: True,
    ) -> None:
        url = settings.logs_url()
        if url is None:
            raise ValueError("the outbox needs telemetry.endpoint")
        self.settings = settings
        self.url = url
        self.metrics = metrics
        # Whether the uplink is up as the gateway sees it (the cloud breakers); while it says
        # no, the shipper waits instead of spending its retries on a dead link.
        self.reachable = reachable
        self.log: DurableLog | None = None
        self._pending: list[dict[str, Any]] = []
        self._wrote = asyncio.Event()  # rows reached SQLite: the shipper may have work
        self._added = asyncio.Event()  # records are waiting in memory for the writer
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ship_lock = asyncio.Lock()  # one batch in flight, ever: order and no double send
        self._version = _version()
        self._resource = settings.resource()  # read once: the host name does not change
        metrics.telemetry_outbox_depth.set_function(self.depth)

    def depth(self) -> int:
        return (len(self.log) if self.log is not None else 0) + len(self._pending)

    # -- the request path -----------------------------------------------------------------

    def add(self, record: dict[str, Any]) -> None:
        """Queue one record; never blocks, never raises into the request."""
        self._pending.append(record)
        over = len(self._pending) - self.settings.cap
        if over > 0:  # the disk cannot keep up: memory is bounded by the same cap
            del self._pending[:over]
            self.metrics.telemetry_dropped.labels("cap").inc(over)
        self._added.set()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        # Opening the file (and counting what a previous run left) touches the disk: off the loop.
        try:
            self.log = await asyncio.to_thread(DurableLog, s.store_path, s.cap)
        except (OSError, sqlite3.Error) as exc:
            # Name the file and the settings that place it: on a read-only root the fix is a
            # writable state.dir (a volume), not a guess at which path the gateway wanted.
            raise OSError(
                f"cannot open {s.store_path} (telemetry.store_path, under state.dir unless"
                f" absolute): {exc}"
            ) from exc
        if len(self.log):
            log.info("telemetry outbox has records from before", extra={"records": len(self.log)})
            self._wrote.set()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=s.timeout_s),
            headers={"Content-Type": "application/json"},
        )
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="outbox-writer"),
            asyncio.create_task(self._ship_loop(), name="outbox-shipper"),
        ]

    async def final_flush(self, budget_s: float) -> None:
        """Shutdown: store what is in memory, then one bounded attempt to ship the rest."""
        self._stop.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(budget_s, 0.0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._write_pending()
                while self.log is not None and len(self.log):
                    if await self._ship_batch() not in ("ok", "rejected"):
                        break  # the receiver is down: the rows stay for the next start

    async def close(self) -> None:
        self._stop.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:  # a task that died must not keep the store and session open
                log.exception("telemetry outbox: a background task had failed")
        self._tasks = []
        try:
            await self._write_pending()  # nothing accounted is lost: it waits on disk
        except Exception:
            log.exception("telemetry outbox: records in memory could not be stored")
        if self._session is not None:
            await self._session.close()
        if self.log is not None:
            await self.log.close()
            self.log = None

    # -- writer ---------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._added.wait()
            self._added.clear()
            try:
                await self._write_pending()
            except Exception:  # a full or broken disk must not kill the writer
                log.exception("telemetry outbox: cannot write records")
                await asyncio.sleep(1.0)

    async def _write_pending(self) -> None:
        if not self._pending or self.log is None:
            return
        batch, self._pending = self._pending, []
        try:
            dropped = await self.log.append(KIND, batch)
        except Exception:
            # The write failed: put them back, in order, for the next try. (Not on
            # cancellation: the log's thread still finishes a write it has started.)
            self._pending[:0] = batch
            raise
        if dropped:
            self.metrics.telemetry_dropped.labels("cap").inc(dropped)
        self._wrote.set()

    # -- shipper --------------------------------------------------------------------------

    async def _ship_loop(self) -> None:
        s = self.settings
        failures = 0
        while not self._stop.is_set():
            assert self.log is not None
            if not len(self.log):
                self._wrote.clear()
                await self._wrote.wait()
                continue
            # Let a batch fill: ship at batch_size rows or flush_interval after the first.
            # A retry does not wait again: its rows have waited long enough.
            fill_deadline = asyncio.get_running_loop().time() + s.flush_interval_s
            while not failures and len(self.log) < s.batch_size and not self._stop.is_set():
                self._wrote.clear()
                left = fill_deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wrote.wait(), left)
            if s.wait_for_cloud and not self.reachable():
                await self._pause(s.flush_interval_s)
                continue
            try:
                result = await self._ship_batch()
            except Exception:  # the disk, not the receiver: log it and try again later
                log.exception("telemetry outbox: cannot read or remove records")
                result = "failed"
            if result in ("ok", "rejected"):
                failures = 0
                continue
            # The exponent stops growing once the cap is reached: 2.0**1024 would overflow and
            # end the shipper after a long enough outage.
            delay = min(s.backoff_max_s, s.backoff_base_s * 2.0 ** min(failures, 60))
            failures += 1
            # Equal jitter: at least half the delay, so boxes that lost the same uplink at
            # the same moment do not all come back at once.
            wait = random.uniform(delay / 2, delay)
            if isinstance(result, float):  # the receiver's Retry-After, bounded by our max
                wait = max(wait, min(result, s.backoff_max_s))
            await self._pause(wait)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _ship_batch(self) -> str | float:
        """Send the oldest rows once. "ok", "rejected" (dropped), "failed" or a Retry-After."""
        assert self.log is not None and self._session is not None
        async with self._ship_lock:
            rows = await self.log.head(self.settings.batch_size, KIND)
            if not rows:
                return "ok"
            outcome = await self._post(rows)
            if outcome in ("ok", "rejected"):
                await self.log.remove([r.id for r in rows])
            if outcome == "ok":
                self.metrics.telemetry_last_success.set(time.time())
            return outcome

    def _encode(self, rows: list[Record]) -> bytes:
        s = self.settings
        body = otlp.encode(
            otlp.export_request(
                (r.body for r in rows),
                service_name=s.service_name,
                resource_attributes=self._resource,
                version=self._version,
            )
        )
        return gzip.compress(body, compresslevel=6) if s.compression == "gzip" else body

    async def _post(self, rows: list[Record]) -> str | float:
        assert self._session is not None
        s = self.settings
        # A full batch is a megabyte of JSON: encode (and compress) it off the loop.
        body = await asyncio.to_thread(self._encode, rows)
        headers = s.headers()
        if s.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        m = self.metrics
        try:
            async with self._session.post(self.url, data=body, headers=headers) as resp:
                answer = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            m.telemetry_send_failures.labels("unreachable").inc()
            log.info(
                "telemetry receiver unreachable; will retry",
                extra={"error": type(exc).__name__, "records": len(rows)},
            )
            return "failed"
        if 200 <= status < 300:
            rejected, why = otlp.rejected_in(answer)
            if rejected:  # partial success: OTLP says do not retry those
                m.telemetry_dropped.labels("rejected").inc(rejected)
                log.warning(
                    "telemetry receiver rejected some records",
                    extra={"rejected": rejected, "error": why[:200]},
                )
            m.telemetry_shipped.inc(len(rows) - rejected)
            return "ok"
        if 400 <= status < 500 and status not in (408, 429):
            # The receiver will never take this batch: drop it rather than block the queue.
            m.telemetry_dropped.labels("rejected").inc(len(rows))
            m.telemetry_send_failures.labels(f"{status // 100}xx").inc()
            log.warning(
                "telemetry receiver refused a batch; dropped",
                extra={"status": status, "records": len(rows)},
            )
            return "rejected"
        m.telemetry_send_failures.labels(f"{status // 100}xx").inc()
        log.info(
            "telemetry receiver answered an error; will retry",
            extra={"status": status, "records": len(rows)},
        )
        if retry_after and retry_after.isdigit():
            return float(retry_after)
        return "failed"
