"""The local embedding context: one KV stream per input, flash attention, on the real GGUF."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.local.embedder import LocalEmbedder
from gateway.settings import LocalEmbeddingSettings, SettingsError, load_settings

TEXTS = [f"Shift note {i}: line {i % 5} stopped twice before noon." for i in range(16)]


async def embed(settings: LocalEmbeddingSettings, groups: list[list[str]]) -> list[Any]:
    e = LocalEmbedder(settings)
    try:
        out = []
        for g in groups:
            out.append(np.stack((await e.embed(list(g)))[0]))
        out.append(e)
        return out
    finally:
        await e.close()


async def test_an_input_embeds_to_the_same_vector_alone_and_packed_with_fifteen() -> None:
    # Each input has its own KV stream, so the attention kernel sees the same cells whatever
    # else shares the decode: the same floats, not merely the same direction.
    packed, alone, e = await embed(LocalEmbeddingSettings(), [TEXTS, [TEXTS[7]]])
    assert e.n_seq_max == 16 and e.decode_calls == 2  # 16 inputs, one decode; then one
    assert np.allclose(packed[7], alone[0], atol=1e-6)


async def test_inputs_per_decode_are_n_ctx_over_n_batch() -> None:
    settings = LocalEmbeddingSettings(n_ctx=1024, n_batch=256)
    packed, e = await embed(settings, [TEXTS[:8]])
    assert e.n_seq_max == 4 and e.decode_calls == 2  # 8 short inputs, 4 streams: two decodes
    one, _ = await embed(settings, [[TEXTS[5]]])
    assert np.allclose(packed[5], one[0], atol=1e-6)


async def test_flash_attention_setting_reaches_llama_cpp() -> None:
    on, _ = await embed(LocalEmbeddingSettings(flash_attn=True), [TEXTS[:4]])
    off, _ = await embed(LocalEmbeddingSettings(flash_attn=False), [TEXTS[:4]])
    # Another attention kernel: f16 rounding in other places, the same vectors to about 1e-4.
    assert not np.array_equal(on, off)
    assert float(np.min(np.sum(on * off, axis=1))) > 0.999


def test_n_batch_beyond_2048_is_refused_naming_it() -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(local={"embedding": {"n_batch": 4096, "n_ctx": 16384}})
    assert "local.embedding.n_batch" in str(err.value)


async def test_streams_stop_at_what_llama_cpp_takes() -> None:
    # 4096 / 8 would be 512 streams; llama.cpp takes no more sequences than outputs per decode
    # (n_batch), and would abort the process on a context with more.
    (vectors, e) = await embed(LocalEmbeddingSettings(n_ctx=4096, n_batch=8), [["pump", "seal"]])
    assert e.n_seq_max == 8 and vectors.shape == (2, e.width)
