"""POST /v1/embeddings with the official OpenAI SDK against real gateways: the embedded model
through llama.cpp, a real redis-server for the cache, the fake cloud as the only fake."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from gateway.services import SERVICES
from gateway.settings import SettingsError, load_settings
from tests.conftest import RedisServer, RunningGateway, cloud_settings
from tests.fakes.cloud import EMBEDDING_WIDTH, FakeCloud

SMOLLM2_WIDTH = 576  # SmolLM2-135M's hidden size
DOCS = [
    f"Work order {i}: replace the seal on pump P-{100 + i} and log the pressure." for i in range(16)
]
FRESH = {"Cache-Control": "no-cache, no-store"}


def vec(e: Any) -> np.ndarray:
    return np.asarray(e.embedding, dtype=np.float64)


def embedding_cloud(cloud: FakeCloud, **extra: Any) -> dict[str, Any]:
    """A chat cloud and an embedding cloud model, both the fake."""
    settings = cloud_settings(cloud, **extra)
    settings["cloud"]["embedding_models"] = [
        cloud.model_entry(name="embed-fake", model="openai/text-embedding-3-small")
    ]
    return settings


async def test_local_embeddings_with_no_cloud(gateway: RunningGateway) -> None:
    c = gateway.client("unused")
    raw = await c.embeddings.with_raw_response.create(model="auto", input="The pump is leaking.")
    assert raw.headers["x-gateway-route"] == "local"
    one = raw.parse()
    assert one.model == "smollm2-135m-instruct"
    assert len(one.data) == 1 and one.usage.prompt_tokens > 0
    assert one.usage.total_tokens == one.usage.prompt_tokens
    v = vec(one.data[0])
    assert v.shape == (SMOLLM2_WIDTH,)
    assert gateway.app[SERVICES].embeddings.local.width == SMOLLM2_WIDTH  # type: ignore[union-attr]
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)

    local = gateway.app[SERVICES].embeddings.local  # type: ignore[union-attr]
    decodes = local.decode_calls
    many = await c.embeddings.create(model="local", input=DOCS, encoding_format="float")
    # 16 inputs of ~25 tokens fit local.embedding.n_batch (512): one decode call, not 16.
    assert local.decode_calls == decodes + 1
    assert [d.index for d in many.data] == list(range(16))
    vs = np.stack([vec(d) for d in many.data])
    assert vs.shape == (16, SMOLLM2_WIDTH)
    assert np.allclose(np.linalg.norm(vs, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(v, 6)) for v in vs}) == 16  # different texts, different vectors

    # Identical inputs give identical vectors: repeated in one request (computed once), and
    # in a later request (the per-input cache hands back the stored vector).
    again = await c.embeddings.create(model="local", input=[DOCS[3], "other", DOCS[3]])
    assert np.array_equal(vec(again.data[0]), vec(again.data[2]))
    assert np.array_equal(vec(again.data[0]), vs[3])
    # Computed afresh in another batch (no-cache), llama.cpp's kernels for another batch size
    # move the floats in the 4th decimal: the same direction, not the same bits.
    fresh = {"Cache-Control": "no-cache"}
    alone = await c.embeddings.create(model="local", input=DOCS[3], extra_headers=fresh)
    assert float(vec(alone.data[0]) @ vs[3]) > 0.9999

    # Token ids (the local model's vocabulary) and lists of them.
    ids = await c.embeddings.create(model="local", input=[28120, 905])
    assert vec(ids.data[0]).shape == (SMOLLM2_WIDTH,) and ids.usage.prompt_tokens == 2
    lists = await c.embeddings.create(model="local", input=[[28120, 905], [28120]])
    assert len(lists.data) == 2
    assert np.allclose(vec(lists.data[0]), vec(ids.data[0]), atol=1e-6)
    # Token ids of a text embed as the text does.
    text = await c.embeddings.create(model="local", input="hello world", encoding_format="float")
    assert np.allclose(vec(text.data[0]), vec(ids.data[0]), atol=1e-6)

    # base64 (what the SDK asks for by default) decodes to the same floats.
    b64 = await c.embeddings.with_raw_response.create(
        model="local", input=DOCS[:2], encoding_format="base64"
    )
    body = b64.http_response.json()
    decoded = np.frombuffer(base64.b64decode(body["data"][1]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vs[1], atol=1e-6)

    assert gateway.metric("edge_gateway_embedding_requests_total", route="local") >= 6
    assert gateway.metric("edge_gateway_embedding_inputs_total", route="local") >= 16


async def test_local_refuses_what_it_cannot_honour(gateway_factory: Any) -> None:
    gw = await gateway_factory(local={"embedding": {"n_batch": 32, "n_ctx": 64}})
    c = gw.client("unused")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"input": "x " * 200}, "input", "context_length_exceeded"),
        ({"input": ""}, "input", "invalid_value"),
        ({"input": []}, "input", "invalid_value"),
        ({"input": [[]]}, "input", "invalid_value"),
        ({"input": ["a"] * 2049}, "input", "too_many_inputs"),
        ({"input": [10**9]}, "input", "invalid_value"),
        ({"input": "x", "dimensions": 64}, "dimensions", "unsupported_value"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
        ({"input": [1, "a"]}, "input", "invalid_type"),
    ]
    for body, param, code in cases:
        with pytest.raises(openai.BadRequestError) as err:
            await c.embeddings.create(model="local", **body)
        assert err.value.code == code, body
        assert (err.value.body or {}).get("param") == param, body  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError) as err:
        await c.embeddings.create(model="local", input="x", extra_body={"truncate": "END"})
    assert err.value.code == "unsupported_parameter" and "truncate" in str(err.value)
    with pytest.raises(openai.NotFoundError) as nf:
        await c.embeddings.create(model="no-such-model", input="x")
    assert nf.value.code == "model_not_found"
    # The width of the model is accepted as `dimensions`.
    ok = await c.embeddings.create(model="local", input="x", dimensions=SMOLLM2_WIDTH)
    assert len(ok.data[0].embedding) == SMOLLM2_WIDTH


async def test_matryoshka_dimensions_truncate_and_renormalise(gateway_factory: Any) -> None:
    gw = await gateway_factory(local={"embedding": {"truncate_dimensions": True}})
    c = gw.client("unused")
    full = await c.embeddings.create(model="local", input="a seal", encoding_format="float")
    cut = await c.embeddings.create(model="local", input="a seal", dimensions=64)
    v, w = vec(full.data[0]), vec(cut.data[0])
    assert w.shape == (64,) and np.linalg.norm(w) == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(w, v[:64] / np.linalg.norm(v[:64]), atol=1e-5)
    with pytest.raises(openai.BadRequestError):
        await c.embeddings.create(model="local", input="a seal", dimensions=SMOLLM2_WIDTH + 1)


async def test_cache_hit_per_input_in_redis(
    gateway_factory: Any, redis_server: RedisServer
) -> None:
    gw = await gateway_factory(cache={"redis_url": redis_server.url, "key_prefix": "egw:embt:"})
    c = gw.client("unused")
    first = await c.embeddings.with_raw_response.create(model="auto", input=DOCS[:4])
    assert first.headers["x-gateway-cache"] == "miss"
    assert first.headers["x-gateway-cache-inputs"] == "0/4"
    await gw.app[SERVICES].embeddings.cache.cache.drain()  # type: ignore[union-attr]
    assert len(redis_server.client().keys("egw:embt:emb:*")) >= 4
    second = await c.embeddings.with_raw_response.create(model="auto", input=DOCS[:4])
    assert second.headers["x-gateway-cache"] == "hit"
    assert second.headers["x-gateway-route"] == "cache"
    assert np.allclose(vec(second.parse().data[2]), vec(first.parse().data[2]), atol=1e-7)
    assert second.parse().usage.prompt_tokens == first.parse().usage.prompt_tokens
    assert gw.metric("edge_gateway_cache_requests_total", result="hit") == 1
    assert gw.metric("edge_gateway_embedding_requests_total", route="cache") == 1
    assert gw.metric("edge_gateway_embedding_inputs_total", route="cache") == 4
    # Re-indexing: only the new input is computed.
    third = await c.embeddings.with_raw_response.create(model="auto", input=[*DOCS[:4], "new"])
    assert third.headers["x-gateway-cache-inputs"] == "4/5"
    assert third.headers["x-gateway-route"] == "local"
    assert gw.metric("edge_gateway_embedding_inputs_total", route="local") == 5
    # Another key is another tenant: nothing shared.
    other = openai.AsyncOpenAI(base_url=gw.base_url, api_key="another-key", max_retries=0)
    theirs = await other.embeddings.with_raw_response.create(model="auto", input=DOCS[:4])
    assert theirs.headers["x-gateway-cache"] == "miss"
    # no-store: computed and not kept.
    await c.embeddings.create(
        model="auto", input="kept nowhere", extra_headers={"Cache-Control": "no-store"}
    )
    again = await c.embeddings.with_raw_response.create(model="auto", input="kept nowhere")
    assert again.headers["x-gateway-cache"] == "miss"


async def test_private_input_stays_local_with_the_cloud_up(
    gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    gw = await gateway_factory(**embedding_cloud(fake_cloud))
    c = gw.client("unused")
    private = ["Contact jane.doe@example.com about the pump", "fine"]
    raw = await c.embeddings.with_raw_response.create(model="auto", input=private)
    assert raw.headers["x-gateway-route"] == "local"
    assert "private-data-stays-local" in raw.headers["x-gateway-reason"]
    assert raw.parse().model == "smollm2-135m-instruct"
    assert len(raw.parse().data[0].embedding) == SMOLLM2_WIDTH
    # A named cloud model cannot be given the local model's vectors instead: a clear 400.
    with pytest.raises(openai.BadRequestError) as named:
        await c.embeddings.create(model="embed-fake", input=private)
    err = named.value.body
    assert isinstance(err, dict) and err["code"] == "private_data" and err["param"] == "model"
    assert "private-data-stays-local" in err["message"] and "email" in err["message"]
    assert named.value.response.headers["x-gateway-route"] == "local"
    # Private data in `user` (or any other field) is private data too.
    with pytest.raises(openai.BadRequestError, match="private data"):
        await c.embeddings.create(model="embed-fake", input="fine", user="jane.doe@example.com")
    assert fake_cloud.embedding_requests == []
    assert not [h for h in fake_cloud.hits if h[1].endswith("/embeddings")]


async def test_named_cloud_model_reaches_the_cloud(
    gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    gw = await gateway_factory(**embedding_cloud(fake_cloud))
    c = gw.client("unused")
    raw = await c.embeddings.with_raw_response.create(
        model="embed-fake",
        input=["a", "b", "a"],
        encoding_format="float",
        user="u1",
        extra_body={"api_key": "sk-attacker", "input_type": "query"},
    )
    assert raw.headers["x-gateway-route"] == "cloud"
    e = raw.parse()
    assert e.model == "embed-fake" and len(e.data) == 3
    vs = np.stack([vec(d) for d in e.data])
    assert vs.shape == (3, EMBEDDING_WIDTH)
    assert np.allclose(np.linalg.norm(vs, axis=1), 1.0, atol=1e-5)  # normalised by the gateway
    assert np.allclose(vs[0], vs[2])
    sent = fake_cloud.embedding_requests[-1]
    # Each distinct input is sent once.
    assert sent["model"] == "text-embedding-3-small" and sent["input"] == ["a", "b"]
    assert sent["user"] == "u1" and sent["input_type"] == "query"  # passed on as body fields
    headers = [h for m, p, h in fake_cloud.hits if p == "/v1/embeddings"][-1]
    assert headers["Authorization"] == "Bearer sk-fake-cloud-secret-123"
    # Discoverable: the cloud embedding model is in /v1/models and retrievable.
    assert "embed-fake" in [m.id for m in (await c.models.list()).data]
    assert (await c.models.retrieve("embed-fake")).id == "embed-fake"

    # base64 from the gateway decodes to its floats.
    b64 = await c.embeddings.with_raw_response.create(
        model="embed-fake", input="a", encoding_format="base64"
    )
    decoded = np.frombuffer(
        base64.b64decode(b64.http_response.json()["data"][0]["embedding"]), "<f4"
    )
    assert np.allclose(decoded, vs[0], atol=1e-6)

    # `dimensions` is the cloud model's business: passed on.
    d = await c.embeddings.create(model="embed-fake", input="z", dimensions=4)
    assert len(d.data[0].embedding) == 4 and fake_cloud.embedding_requests[-1]["dimensions"] == 4

    # Upstream refusals keep their 4xx and never carry the key.
    await fake_cloud.set_mode("echo400")
    with pytest.raises(openai.BadRequestError) as br:
        await c.embeddings.create(model="embed-fake", input="q")
    assert "sk-fake-cloud-secret-123" not in str(br.value.body)


async def test_privacy_rules_hold_for_token_ids_and_rules_naming_a_chat_model(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    import tiktoken

    from gateway.embeddings.features import _vocabularies

    policy = tmp_path / "cloud-first.yaml"
    policy.write_text(
        "version: 1\ndefault: cloud\nrules:\n"
        "  - {name: private-data-stays-local, enforce: true, when: {pii: true}, route: local}\n"
        # A rule picking a chat model by name still means local for embeddings, never skipped.
        "  - {name: long-stays-local, enforce: true, when: {prompt_tokens: {gte: 40}},"
        " route: local, model: smollm2-135m-instruct}\n"
    )
    gw = await gateway_factory(
        **embedding_cloud(fake_cloud),
        policy={"file": str(policy)},
        local={"embedding": {"name": "embed-local"}},
    )
    c = gw.client("unused")
    _vocabularies()  # points tiktoken at the vocabularies shipped with litellm: no download
    secret = "Contact john.doe@example.com about the pump"
    for vocabulary in ("cl100k_base", "o200k_base"):
        ids = tiktoken.get_encoding(vocabulary).encode(secret)
        # Kept local: answered there, or refused there when an id is past the local model's
        # vocabulary (the refusal names it); nothing reaches the cloud (checked below).
        try:
            raw = await c.embeddings.with_raw_response.create(model="auto", input=[ids])
            assert raw.headers["x-gateway-route"] == "local", vocabulary
        except openai.BadRequestError as exc:
            assert "local embedding model" in str(exc), vocabulary
    with pytest.raises(openai.BadRequestError, match="local embedding model"):
        await c.embeddings.create(model="auto", input=[[10**7, 1]])  # nobody can read these
    raw = await c.embeddings.with_raw_response.create(model="auto", input="valve " * 60)
    assert raw.headers["x-gateway-route"] == "local"
    assert "long-stays-local" in raw.headers["x-gateway-reason"]
    assert fake_cloud.embedding_requests == []
    ok = await c.embeddings.with_raw_response.create(model="auto", input="a plain sentence")
    assert ok.headers["x-gateway-route"] == "cloud"


async def test_offline_auto_falls_back_to_local_and_named_fails(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    policy = tmp_path / "cloud-first.yaml"
    policy.write_text(
        "version: 1\ndefault: cloud\nrules:\n"
        "  - {name: private-data-stays-local, enforce: true, when: {pii: true}, route: local}\n"
        "offline: {order: [cache, local]}\n"
    )
    gw = await gateway_factory(**embedding_cloud(fake_cloud), policy={"file": str(policy)})
    c = gw.client("unused")
    up = await c.embeddings.with_raw_response.create(model="auto", input="spare parts list")
    assert up.headers["x-gateway-route"] == "cloud"
    assert len(up.parse().data[0].embedding) == EMBEDDING_WIDTH
    await fake_cloud.set_mode("refuse")
    # What the cloud embedded before is still served, from the cache, with the uplink gone.
    cached = await c.embeddings.with_raw_response.create(model="auto", input="spare parts list")
    assert cached.headers["x-gateway-route"] == "cache"
    assert len(cached.parse().data[0].embedding) == EMBEDDING_WIDTH
    down = await c.embeddings.with_raw_response.create(model="auto", input="a new text")
    assert down.headers["x-gateway-route"] == "local"
    assert down.headers["x-gateway-degraded"] == "true"
    assert down.parse().model == "smollm2-135m-instruct"  # says whose vectors these are
    # The breaker is open now: the cloud's cached vectors are still served, not local ones.
    assert not gw.app[SERVICES].embeddings.breakers["embed-fake"].reachable  # type: ignore[union-attr]
    still = await c.embeddings.with_raw_response.create(model="auto", input="spare parts list")
    assert still.headers["x-gateway-route"] == "cache"
    assert len(still.parse().data[0].embedding) == EMBEDDING_WIDTH
    # A named model never silently becomes another vector space.
    with pytest.raises(openai.InternalServerError) as err:
        await c.embeddings.create(model="embed-fake", input="another new text")
    assert err.value.status_code == 503


async def test_litellm_path_reaches_the_cloud(gateway_factory: Any, fake_cloud: FakeCloud) -> None:
    gw = await gateway_factory(**embedding_cloud(fake_cloud, passthrough=False))
    c = gw.client("unused")
    e = await c.embeddings.create(
        model="embed-fake", input=["x", "y"], extra_body={"base_url": "http://127.0.0.2:9/"}
    )
    assert len(e.data) == 2 and len(e.data[0].embedding) == EMBEDDING_WIDTH
    sent = fake_cloud.embedding_requests[-1]
    assert sent["input"] == ["x", "y"]
    # A client field never becomes a litellm call option: it reached the configured host.
    assert sent.get("base_url") == "http://127.0.0.2:9/"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (
            {"local": {"embedding": {"model_path": "/nonexistent.gguf"}}},
            "local.embedding.model_path",
        ),
        ({"local": {"embedding": {"n_batch": 4096}}}, "local.embedding"),
        ({"local": {"embedding": {"pooling": "max"}}}, "local.embedding.pooling"),
        ({"cloud": {"embedding_models": [{"name": "auto", "model": "openai/x"}]}}, "cloud"),
    ],
)
def test_bad_embedding_setting_is_refused_naming_it(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(**overrides)
    assert named in str(err.value)


async def test_name_and_pooling_settings(gateway_factory: Any) -> None:
    mean = await gateway_factory(local={"embedding": {"name": "smol-embed", "pooling": "mean"}})
    last = await gateway_factory(local={"embedding": {"pooling": "last"}})
    a = await mean.client("unused").embeddings.create(model="smol-embed", input=DOCS[0])
    assert a.model == "smol-embed"
    assert mean.app[SERVICES].embeddings.local.pooling == "mean"  # type: ignore[union-attr]
    b = await last.client("unused").embeddings.create(model="local", input=DOCS[0])
    assert last.app[SERVICES].embeddings.local.pooling == "last"  # type: ignore[union-attr]
    assert float(vec(a.data[0]) @ vec(b.data[0])) < 0.99  # another pooling, another vector


async def test_the_packaged_sentence_encoder_serves_embeddings(
    gateway_factory: Any, tmp_path: Path
) -> None:
    """local.embedding.packaged: all-minilm-l6-v2, a real embedding model (the semantic
    cache's encoder) instead of the chat model's hidden states: 384 dimensions, a paraphrase
    nearer than another question, the very vectors of the semantic cache's encoder."""
    from gateway.semantic.onnx_encoder import OnnxEncoder, ensure_onnx

    gw = await gateway_factory(
        local={"embedding": {"packaged": "all-minilm-l6-v2"}}, state={"dir": str(tmp_path)}
    )
    c = gw.client("unused")
    texts = [
        "How do I reset the PLC on line 3?",
        "What's the reset procedure for the line-3 PLC?",
        "Why is the sky blue?",
    ]
    got = await c.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
    assert got.model == "all-MiniLM-L6-v2"
    vs = np.stack([vec(d) for d in got.data])
    assert vs.shape == (3, 384)
    assert float(vs[0] @ vs[1]) > float(vs[0] @ vs[2]) + 0.3
    assert (tmp_path / "models").is_dir()  # converted into the state dir, once
    encoder = OnnxEncoder(ensure_onnx(tmp_path / "onnx"))
    try:
        reference, _ = await encoder.embed(texts)
    finally:
        await encoder.close()
    for v, r in zip(vs, reference, strict=True):
        assert float(v @ r) > 0.999
    # Named by its id in /v1/models like any local embedding model; model_path excludes it.
    assert "all-MiniLM-L6-v2" in {m.id for m in (await c.models.list()).data}
    with pytest.raises(SettingsError, match="model_path or packaged"):
        load_settings(local={"embedding": {"packaged": "all-minilm-l6-v2", "model_path": __file__}})


async def test_a_full_queue_is_429_not_a_wait(gateway_factory: Any) -> None:
    gw = await gateway_factory(local={"embedding": {"max_queue": 1}})
    c = gw.client("unused")
    await c.embeddings.create(model="local", input="load the model first")
    big = [f"{d} (copy {k})" for k in range(4) for d in DOCS]  # 64 inputs: a busy worker

    async def one(i: int) -> int:
        try:
            await c.embeddings.create(
                model="local", input=[f"{i} {t}" for t in big], extra_headers=FRESH
            )
        except openai.RateLimitError as exc:
            assert exc.response.headers["Retry-After"]
            return 429
        return 200

    codes = await asyncio.gather(*(one(i) for i in range(5)))
    # One running, one waiting (max_queue 1): the rest are refused at once.
    assert codes.count(200) == 2 and codes.count(429) == 3, codes


def test_policy_check_knows_embedding_models(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    policy = tmp_path / "p.yaml"
    policy.write_text(
        "version: 1\ndefault: local\nrules:\n  - {name: long, when: {prompt_tokens: {gt: 400}},"
        " route: embed-cloud}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_CLOUD__MODELS"] = '[{"name": "chat-cloud", "model": "openai/gpt-4o-mini"}]'

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", "policy", "check", str(policy)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert check().returncode != 0  # an unknown target
    env["GATEWAY_CLOUD__EMBEDDING_MODELS"] = (
        '[{"name": "embed-cloud", "model": "openai/text-embedding-3-small"}]'
    )
    done = check()
    assert done.returncode == 0, done.stdout + done.stderr
