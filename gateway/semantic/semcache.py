"""The semantic cache: the sentence encoder, the index and the verifier behind one look-up.

A look-up runs after the exact cache missed: the question is encoded (on the encoder's own
worker thread, never on the event loop), its partition searched, and each candidate above
the policy's threshold, best first, put to the verifier; the first it accepts names the
exact-cache entry whose answer is served. Whatever goes wrong on the way (the encoder cannot
load, a timeout, Redis down, the answer gone) is a miss: the cache fails closed, never
serving an answer it did not verify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..metrics import Metrics
from ..settings import Settings
from .index import InProcessIndex, RedisIndex, SemanticIndex
from .policy_block import SemanticCacheConfig
from .verifier import verify

log = logging.getLogger(__name__)

Getter = Callable[[str], Awaitable[dict[str, Any] | None]]

CANDIDATES = 3  # nearest stored questions put to the verifier, best first
RETRY_LOAD_S = 60.0  # after a failed encoder load, the next try waits this long


class SentenceEncoder(Protocol):
    """onnx_encoder.OnnxEncoder (the default) or local.embedder.LocalEmbedder (a GGUF)."""

    async def embed(self, texts: list[Any]) -> tuple[list[np.ndarray], list[int]]: ...

    async def close(self) -> None: ...


def open_encoder(path: Path, *, threads: int = 2, max_queue: int = 64) -> SentenceEncoder:
    """The encoder of a model file: an ONNX graph (onnx_encoder.ensure_onnx) in onnxruntime,
    anything else as a sentence-encoder GGUF in llama.cpp. Blocking (an ONNX session loads
    here): call it off the event loop."""
    if path.suffix == ".onnx":
        from .onnx_encoder import OnnxEncoder

        return OnnxEncoder(path, threads=threads, max_queue=max_queue)
    from ..local.embedder import LocalEmbedder
    from .gguf_encoder import encoder_settings

    return LocalEmbedder(encoder_settings(path, n_threads=threads, max_queue=max_queue))


@dataclass(frozen=True, slots=True)
class SemanticMatch:
    """A verified candidate: the exact-cache key of its answer, and how close it was."""

    answer_key: str
    similarity: float
    question: str
    answer: dict[str, Any]


class SemanticCache:
    @classmethod
    def build(cls, settings: Settings, metrics: Metrics) -> SemanticCache:
        """Entries in the cache's Redis when one is configured (every replica finds what any
        stored), in process otherwise; the encoder is loaded on first use."""
        c = settings.cache
        index: SemanticIndex
        # A partition never holds more than the whole index may.
        entries = min(SemanticCacheConfig().max_entries, c.semantic_max_entries)
        parts = c.semantic_max_partitions
        if c.redis_url:
            from ..redis_client import connect

            timeout_s = c.timeout_ms / 1000
            index = RedisIndex(
                connect(c.redis_url, timeout_s=timeout_s, max_connections=16),
                prefix=c.key_prefix,
                timeout_s=timeout_s,
                max_entries=entries,
                max_partitions=parts,
                ttl_s=c.ttl_s,
                max_total=c.semantic_max_entries,
            )
        else:
            index = InProcessIndex(entries, parts, c.ttl_s, max_total=c.semantic_max_entries)
        return cls(
            index,
            metrics,
            models_dir=settings.state.dir / "models",
            model_path=c.semantic_model_path,
            timeout_s=c.semantic_timeout_ms / 1000,
        )

    def __init__(
        self,
        index: SemanticIndex,
        metrics: Metrics,
        *,
        models_dir: Path,
        model_path: Path | None,
        timeout_s: float,
    ) -> None:
        self.index = index
        self.metrics = metrics
        self.models_dir = models_dir
        self.model_path = model_path
        self.timeout_s = timeout_s
        self._encoder: SentenceEncoder | None = None
        self._loading: asyncio.Task[SentenceEncoder] | None = None
        self._failed_at = -RETRY_LOAD_S
        self._tasks: set[asyncio.Task[Any]] = set()
        metrics.semantic_entries.set_function(index.entries)

    # -- the encoder ------------------------------------------------------------------------

    async def _load(self) -> SentenceEncoder:
        path = self.model_path  # an operator's sentence-encoder GGUF, run by llama.cpp
        if path is None:  # the packaged MiniLM, run by onnxruntime
            from .onnx_encoder import ensure_onnx

            # Writing ~90 MB of weights once per state dir: off the loop, as the session load.
            path = await asyncio.to_thread(ensure_onnx, self.models_dir)
        encoder = await asyncio.to_thread(open_encoder, path)
        try:
            await encoder.embed(["warm up"])  # loads the model, and a first run's allocations
        except BaseException:
            await encoder.close()
            raise
        log.info("semantic cache encoder ready", extra={"model": path.name})
        return encoder

    async def encoder(self) -> SentenceEncoder:
        """The loaded encoder; the first caller starts the load, every caller may wait on it
        (a cancelled wait leaves the load running for the next)."""
        if self._encoder is not None:
            return self._encoder
        if self._loading is None:
            if time.monotonic() - self._failed_at < RETRY_LOAD_S:
                raise RuntimeError("the semantic cache encoder failed to load; retrying later")
            self._loading = asyncio.create_task(self._load())
        loading = self._loading
        try:
            self._encoder = await asyncio.shield(loading)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._loading is loading:
                self._loading, self._failed_at = None, time.monotonic()
                log.warning("the semantic cache encoder could not be loaded", exc_info=True)
            raise
        return self._encoder

    @property
    def state(self) -> str:
        """The encoder as the status page shows it: unused, loading, ready or failed."""
        if self._encoder is not None:
            return "ready"
        if self._loading is not None:
            return "loading"
        return "failed" if self._failed_at > 0 else "unused"

    async def embed(self, question: str) -> np.ndarray:
        vectors, _ = await (await self.encoder()).embed([question])
        return vectors[0]

    # -- look-up and store ------------------------------------------------------------------

    async def lookup(
        self, cfg: SemanticCacheConfig, question: str, partition: str, get: Getter
    ) -> tuple[SemanticMatch | None, np.ndarray | None]:
        """The verified match for `question` (searched in `partition`: everything else about
        the request, hashed) with its stored answer, and the question's vector
        (kept for the store; None when encoding failed). `get(key)` reads the exact cache: an
        entry whose answer is gone (evicted, expired) is no hit."""
        started = time.perf_counter()
        vector = None
        self.index.bound(cfg.max_entries)  # the policy's bound, hot-reloaded: before a search
        try:
            async with asyncio.timeout(self.timeout_s):
                vector = await self.embed(question)
                match = await self._match(cfg, question, partition, vector, get)
        except Exception as exc:  # TimeoutError included: every failure is a miss
            self.metrics.semantic_lookups.labels("error").inc()
            log.info(
                "semantic cache look-up failed: a miss",
                extra={"error": type(exc).__name__, "timeout_s": self.timeout_s},
            )
            return None, vector
        finally:
            self.metrics.semantic_seconds.observe(time.perf_counter() - started)
        return match, vector

    async def _match(
        self,
        cfg: SemanticCacheConfig,
        question: str,
        partition: str,
        vector: np.ndarray,
        get: Getter,
    ) -> SemanticMatch | None:
        m = self.metrics
        rejected = False
        for cand in await self.index.search(partition, vector, k=CANDIDATES):
            if cand.similarity < cfg.threshold:
                break  # best first: the rest are further away
            if cfg.verifier == "strict":
                verdict = verify(cand.question, question, cand.similarity, threshold=cfg.threshold)
                if not verdict.accept:
                    m.semantic_rejections.labels(verdict.reason).inc()
                    rejected = True
                    continue
            answer = await get(cand.answer_key)
            if answer is None:
                continue  # evicted or expired with the exact cache: nothing to serve
            m.semantic_lookups.labels("hit").inc()
            return SemanticMatch(cand.answer_key, cand.similarity, cand.question, answer)
        m.semantic_lookups.labels("rejected" if rejected else "miss").inc()
        return None

    def remember(
        self,
        question: str,
        partition: str,
        vector: np.ndarray | None,
        answer_key: str,
        cfg: SemanticCacheConfig,
    ) -> None:
        """Index a stored cloud answer under its question, in the background (encoding it
        first when the look-up did not: a client that said no-cache still stores)."""
        self.index.bound(cfg.max_entries)  # the policy's bound, hot-reloaded

        async def add() -> None:
            try:
                vec = vector if vector is not None else await self.embed(question)
                await self.index.add(partition, vec, question, answer_key)
            except Exception:  # IndexUnavailable, the encoder: the answer is still stored
                log.info("semantic cache: a stored answer was not indexed", exc_info=True)

        task = asyncio.create_task(add())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the indexing in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.drain()
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(BaseException):
                await self._loading
        if self._encoder is not None:
            await self._encoder.close()
        await self.index.close()
