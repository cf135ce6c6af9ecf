"""How much memory a GGUF will take once loaded, read from its metadata before any allocation.

resident = tensor bytes (the weights, mmapped and all touched by the first generation)
         + KV cache (every layer keeps K and V in f16 for every cell of the context)
         + overhead (llama.cpp's vocabulary tables, logits and attention scratch).

The overhead terms were fitted to RSS growth measured with `bench/model_memory.py` for both
GGUFs at hand (docs/BENCHMARKS.md); they over-estimate by a few percent, the safe side.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 2**20

# Fitted overhead (see the module docstring): a fixed part, a part per vocabulary entry
# (llama.cpp's token tables and the logits buffer) and a part per context cell and head
# (the attention scores the compute buffer touches).
OVERHEAD_FIXED = 4 * MIB
OVERHEAD_PER_VOCAB = 256
OVERHEAD_PER_CELL_HEAD = 160
KV_BYTES_PER_VALUE = 2  # f16 K and V, llama.cpp's default cache type


class ModelFileError(Exception):
    """The file is not a GGUF llama.cpp can use (corrupt, truncated, not a model)."""


class InsufficientMemory(Exception):
    """The model would not fit: the message names the estimate and the limit it exceeds."""

    def __init__(self, message: str, *, needed: int, limit: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.limit = limit


@dataclass(frozen=True)
class GgufLayout:
    """What the estimate needs from a GGUF's metadata and tensor table."""

    architecture: str
    tensor_bytes: int
    n_layer: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int


@dataclass(frozen=True)
class Estimate:
    """The expected resident size of one model at a given context and slot count."""

    path: Path
    shape: GgufLayout
    n_ctx_total: int
    weights: int
    kv: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.overhead

    def describe(self) -> dict[str, Any]:
        s = self.shape
        return {
            "file": str(self.path),
            "architecture": s.architecture,
            "layers": s.n_layer,
            "heads": s.n_head,
            "kv_heads": s.n_head_kv,
            "embedding": s.n_embd,
            "vocab": s.n_vocab,
            "context_cells": self.n_ctx_total,
            "weights_mib": round(self.weights / MIB, 1),
            "kv_cache_mib": round(self.kv / MIB, 1),
            "overhead_mib": round(self.overhead / MIB, 1),
            "total_mib": round(self.total / MIB, 1),
        }


_shapes: dict[tuple[str, int, int], GgufLayout] = {}
_shapes_lock = threading.Lock()


def read_shape(path: Path) -> GgufLayout:
    """The GGUF's shape; cached per (path, size, mtime): GGUFReader parses every token string,
    seconds for a 262k vocabulary, so a reload on demand must not pay it again. Blocking."""
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror}") from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _shapes_lock:
        cached = _shapes.get(key)
    if cached is not None:
        return cached
    shape = _parse(path, st.st_size)
    with _shapes_lock:
        _shapes[key] = shape
    return shape


def _parse(path: Path, size: int) -> GgufLayout:
    from gguf import GGUFReader  # numpy-heavy: only when a file is checked

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, struct and numpy errors alike
        raise ModelFileError(f"{path.name} is not a valid GGUF file: {exc}") from None

    def value(key: str) -> Any:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    arch = value("general.architecture")
    if not isinstance(arch, str):
        raise ModelFileError(f"{path.name} has no general.architecture: not a GGUF model")

    def number(name: str, default: int | None = None) -> int:
        v = value(f"{arch}.{name}")
        if v is None:
            if default is None:
                raise ModelFileError(f"{path.name} lacks {arch}.{name} in its metadata")
            return default
        if isinstance(v, list):  # per-layer counts (some architectures): the largest
            v = max(v)
        return int(v)

    tensor_bytes = sum(int(t.n_bytes) for t in reader.tensors)
    end = max((int(t.data_offset) + int(t.n_bytes) for t in reader.tensors), default=0)
    if not reader.tensors or end > size:
        raise ModelFileError(f"{path.name} is truncated: its tensors end past the file")
    n_embd = number("embedding_length")
    n_head = number("attention.head_count")
    head_dim = n_embd // max(1, n_head)
    tokens = reader.get_field("tokenizer.ggml.tokens")
    n_vocab = len(tokens.data) if tokens is not None else number("vocab_size", 0)
    return GgufLayout(
        architecture=arch,
        tensor_bytes=tensor_bytes,
        n_layer=number("block_count"),
        n_head=n_head,
        n_head_kv=number("attention.head_count_kv", n_head),
        key_length=number("attention.key_length", head_dim),
        value_length=number("attention.value_length", head_dim),
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_ctx_train=number("context_length", 0),
    )


def estimate(path: Path, *, n_ctx: int, parallel: int) -> Estimate:
    """Resident bytes for `parallel` slots of `n_ctx` tokens each (as the engine sizes them).
    Blocking (reads the file's header): call it off the event loop."""
    shape = read_shape(path)
    cells = n_ctx * parallel
    kv = shape.n_layer * cells * shape.n_head_kv * (shape.key_length + shape.value_length)
    overhead = (
        OVERHEAD_FIXED
        + shape.n_vocab * OVERHEAD_PER_VOCAB
        + cells * shape.n_head * OVERHEAD_PER_CELL_HEAD
    )
    return Estimate(
        path=path,
        shape=shape,
        n_ctx_total=cells,
        weights=shape.tensor_bytes,
        kv=kv * KV_BYTES_PER_VALUE,
        overhead=overhead,
    )


def available(
    *, cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")
) -> tuple[int, str]:
    """Bytes this process may still take, and where that figure comes from.

    Under a cgroup v2 memory limit (a container, a systemd unit with MemoryMax) the limit is
    what the OOM killer enforces, so it wins over the host's MemAvailable.
    """
    limit = _cgroup_headroom(cgroup_root, proc)
    if limit is not None:
        return limit
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable"
    except OSError:
        pass
    return 2**62, "unknown"


def _cgroup_headroom(root: Path, proc: Path) -> tuple[int, str] | None:
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    rel = next((ln[3:] for ln in lines if ln.startswith("0::")), None)
    if rel is None:
        return None
    folder = root / rel.lstrip("/")
    # The tightest limit on the way up to the root is the one that bites.
    best: tuple[int, str] | None = None
    while True:
        try:
            raw = (folder / "memory.max").read_text().strip()
            if raw != "max":
                used = int((folder / "memory.current").read_text().strip())
                room = max(0, int(raw) - used)
                if best is None or room < best[0]:
                    best = (room, f"cgroup memory.max {int(raw) // MIB} MiB")
        except (OSError, ValueError):
            pass
        if folder == root or root not in folder.parents:
            break
        folder = folder.parent
    return best


def check(est: Estimate, *, budget: int | None, name: str) -> None:
    """Raise InsufficientMemory naming both figures when the model would not fit."""
    check_budget(est, budget=budget, name=name)
    check_room(est, name=name)


def check_budget(est: Estimate, *, budget: int | None, name: str) -> None:
    need = est.total
    if budget is not None and need > budget:
        raise InsufficientMemory(
            f"model {name!r} needs about {need // MIB} MiB but its memory budget is "
            f"{budget // MIB} MiB",
            needed=need,
            limit=budget,
        )


def check_room(est: Estimate, *, name: str, freed: int = 0) -> None:
    """Against what the box has now, plus what unloading `freed` bytes of models would give."""
    need = est.total
    room, source = available()
    if need > room + freed:
        extra = f" plus {freed // MIB} MiB from unloading idle models" if freed else ""
        raise InsufficientMemory(
            f"model {name!r} needs about {need // MIB} MiB but only {room // MIB} MiB is "
            f"available ({source}){extra}",
            needed=need,
            limit=room + freed,
        )


def rss_bytes() -> int:
    """This process's resident set, for the bench and the admin view."""
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
