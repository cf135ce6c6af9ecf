"""OpenAI request models (unknown fields kept for the cloud) and response builders."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

# Far above any real model's output, low enough to reject nonsense before it costs anything.
ABSURD_MAX_TOKENS = 1_000_000


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    # A text part's text is a string: a number or object would reach the model as its repr.
    text: StrictStr | None = None

    @model_validator(mode="after")
    def _text_part_has_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text content part needs a string `text`")
        return self


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None

    @model_validator(mode="after")
    def _content_required(self) -> Message:
        # Only assistant turns may omit content (they may carry tool calls instead).
        if self.content is None and self.role not in ("assistant", "function"):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        """The message's text, parts joined; images contribute nothing."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text or "" for p in self.content if p.type == "text")

    def has_image(self) -> bool:
        return isinstance(self.content, list) and any(
            p.type in ("image_url", "input_image", "image") for p in self.content
        )


class NullIsAbsent(BaseModel):
    """A body model where null is read as absent.

    OpenAI's spec marks its optional request fields nullable, and clients generated from it
    (Java, Kotlin, C#, Go) send an unset field as null: one rule for every body model, so a
    null field takes its default (`stream`: false) and a required one is missing, rather than
    each field listing None among its types.
    """

    # A required field whose null the spec gives a meaning (its documented default).
    NULL_MEANS: ClassVar[dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and None in data.values():
            fields, means = cls.model_fields, cls.NULL_MEANS
            return {
                k: means.get(k, v) if v is None else v
                for k, v in data.items()
                if v is not None or k not in fields or k in means
            }
        return data


class _Sampling(NullIsAbsent):
    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1)
    stream: StrictBool = False
    max_tokens: StrictInt | None = Field(None, ge=1, le=ABSURD_MAX_TOKENS)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, ge=0, le=1)
    n: StrictInt | None = Field(None, ge=1, le=128)
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    presence_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    frequency_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    user: StrictStr | None = None
    stream_options: dict[str, Any] | None = None

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def upstream_body(self) -> dict[str, Any]:
        """The request as the client sent it (unknown fields included), for the cloud."""
        return self.model_dump(exclude_none=True, exclude_unset=True)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=ABSURD_MAX_TOKENS)
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def prompt_text(self) -> str:
        return "\n".join(m.text() for m in self.messages)

    def content_chars(self) -> int:
        return sum(len(m.text()) for m in self.messages)


class CompletionRequest(_Sampling):
    # Required, but null is the spec's default: a document's start.
    NULL_MEANS: ClassVar[dict[str, Any]] = {"prompt": "<|endoftext|>"}
    prompt: StrictStr | list[StrictStr]
    # The spec's minimum is 0 here (the prompt's echo or logprobs alone, from the cloud).
    max_tokens: StrictInt | None = Field(None, ge=0, le=ABSURD_MAX_TOKENS)
    echo: StrictBool | None = None
    logprobs: StrictInt | None = Field(None, ge=0, le=5)
    suffix: StrictStr | None = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one prompt")
        return v

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def prompts(self) -> list[str]:
        """Every prompt; a list gives one choice (or `n`) per prompt."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def prompt_text(self) -> str:
        return "\n".join(self.prompts())

    def content_chars(self) -> int:
        return sum(len(p) for p in self.prompts()) + len(self.suffix or "")


AnyRequest = ChatRequest | CompletionRequest


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def stream_chunk(
    chat: bool,
    rid: str,
    model: str,
    created: int,
    content: dict[str, Any] | str | None,
    finish_reason: str | None = None,
    usage_: dict[str, Any] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One stream chunk, chat (`content` is the delta) or completions (`content` is the text);
    None: a chunk without choices (the usage-only one)."""
    choices = (
        []
        if content is None
        else [
            {
                "index": 0,
                "delta" if chat else "text": content,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        ]
    )
    chunk: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage_ is not None:
        chunk["usage"] = usage_
    return chunk
