"""The label store: what the box learned about its own traffic, bounded and durable.

One row per label, in a DurableLog (SQLite, WAL, oldest dropped first and counted) whose
`kind` is the label's source: `shadow` (a judge compared the local answer with the cloud's),
`feedback` (the client said), `cascade` (the local model was not confident and the cloud
answered instead). A row keeps the router's feature vector of the prompt (dense features and
CRC-32 hashed word terms, learned.vector), never the text unless `learning.keep_prompts`,
and never the text of a private request.

Each row is also tagged (a column of its own, indexed) with its tenant: the 12-hex sha256
prefix of the API key (http/auth.tenant_id), "" for requests without one; never the key. One
tenant holds at most `learning.max_labels_per_key` rows: past that, its own oldest go, so a
busy or hostile key never pushes out another's labels. Stores written before the tag existed
are tagged from the rows' `tenant` field when opened.

Label: 1.0 = the local answer was not good enough (the cloud should have answered), 0.0 = it
was; feedback scores in between are kept as given. That is the target `train-router` fits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..durable import DurableLog, Record
from ..routing.learned import FEATURE_VERSION, vector, vector_version
from ..routing.training import Example

log = logging.getLogger(__name__)

Source = Literal["shadow", "feedback", "cascade"]
SOURCES: tuple[Source, ...] = ("shadow", "feedback", "cascade")
NO_KEY = ""  # the tag of labels from requests without an API key


def key_of(rec: Record) -> str:
    """Whose label a row is: its tenant id, or NO_KEY."""
    tenant = rec.body.get("tenant")
    return tenant if isinstance(tenant, str) else NO_KEY


class LabelStore:
    # Labels stored fleet-wide since the last retrain, where a shared store counts them
    # (shared_labels.py); None here: each process counts its own.
    since: int | None = None

    def __init__(
        self,
        path: Path,
        cap: int,
        *,
        keep_prompts: bool = False,
        per_key: int | None = None,
        on_added: Callable[[str, int], None] | None = None,
    ) -> None:
        self.log = DurableLog(path, cap)
        self.log.tag_untagged_sync("tenant", NO_KEY)  # a store from before per-key tags
        self.keep_prompts = keep_prompts
        self.per_key = per_key
        self._on_added = on_added  # (source, rows dropped by the cap)

    def __len__(self) -> int:
        return len(self.log)

    async def reset_since(self) -> None:
        """A retrain starts: nothing to reset here (each process counts its own labels; the
        shared store, shared_labels.py, keeps the fleet's count)."""

    @property
    def dropped(self) -> int:
        return self.log.dropped

    async def add(
        self,
        source: Source,
        *,
        label: float,
        tenant: str | None,
        route: str,
        prompt: str | None = None,
        vec: dict[str, Any] | None = None,
        private: bool = False,
        request_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Store one label; give the prompt (its vector is computed here) or the vector.

        `prompt` is written to disk only when keep_prompts is on and `private` is false.
        """
        if source not in SOURCES:
            raise ValueError(f"unknown label source {source!r}")
        if not 0.0 <= label <= 1.0:
            raise ValueError("label must be in [0, 1]")
        if vec is None:
            if prompt is None:
                raise ValueError("give the prompt or its vector")
            vec = vector(prompt)
        body: dict[str, Any] = {"v": vec, "label": label, "tenant": tenant, "route": route}
        if request_id is not None:
            body["request_id"] = request_id
        if detail:
            body["detail"] = detail
        if self.keep_prompts and not private and prompt is not None:
            body["prompt"] = prompt
        tag = tenant if tenant is not None else NO_KEY
        dropped = await self._append(source, body, tag)
        log.info(
            "label stored",
            extra={"source": source, "label": label, "route": route, "request_id": request_id},
        )
        if dropped:
            log.info("label store full: oldest labels dropped", extra={"dropped": dropped})
        if self._on_added is not None:
            self._on_added(source, dropped)

    async def _append(self, source: Source, body: dict[str, Any], tag: str) -> int:
        """Write one row; the rows the caps dropped."""
        return await self.log.append(source, [body], tag=tag, tag_cap=self.per_key)

    async def counts_by_key(self) -> dict[str, int]:
        """Labels held per tenant id (NO_KEY for requests without a key)."""
        counts = await self.log.counts_by_tag()
        return {k if k is not None else NO_KEY: n for k, n in counts.items()}

    async def rows(self) -> list[Record]:
        """Every row, oldest first (on the store's own thread)."""
        return await self.log.head(max(len(self.log), 1))

    async def close(self) -> None:
        await self.log.close()


def trains_router(rec: Record) -> bool:
    """Feedback on a cloud answer says nothing about the local model: kept, not trained on.
    Nor is a row whose vector another feature version computed (its terms mean other words):
    it stays until the cap ages it out."""
    if vector_version(rec.body.get("v") or {}) != FEATURE_VERSION:
        return False
    return rec.kind != "feedback" or rec.body.get("route") == "local"


def example_of(rec: Record) -> Example:
    b = rec.body
    label = float(b["label"])
    return Example(str(b.get("prompt") or ""), label, label, vector=b["v"])


def read_store_examples(path: Path) -> list[Example]:
    """The store's labels as training examples (`train-router --from-store`)."""
    if not path.is_file():
        raise ValueError(f"{path}: no label store there")
    store = DurableLog(path, cap=max(1, 1 << 40))  # never appended to: the cap is moot
    try:
        return [example_of(r) for r in store.iter_sync() if trains_router(r)]
    finally:
        store.close_sync()
