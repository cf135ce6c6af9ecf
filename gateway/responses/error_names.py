"""Errors of the chat path renamed for /v1/responses: `messages[3]` back to `input[1]`, chat's
`response_format` and `max_tokens` back to `text.format` and `max_output_tokens`."""

from __future__ import annotations

import re

from ..errors import GatewayError

_RENAMES = (
    ("response_format.json_schema.schema", "text.format.schema"),
    ("response_format", "text.format"),
    ("max_completion_tokens", "max_output_tokens"),
    ("max_tokens", "max_output_tokens"),
    ("reasoning_effort", "reasoning.effort"),
    ("verbosity", "text.verbosity"),
)
_MESSAGE = re.compile(r"messages\[(\d+)\]")
# A Responses function tool is flat: chat's `tools[i].function.parameters` is `tools[i].parameters`.
_TOOL_FUNCTION = re.compile(r"(?<![\w.])tools\[(\d+)\]\.function\.")


class ErrorNames:
    """Rewrites a chat-path error so its `param` and message name the Responses fields."""

    def __init__(self, origins: list[str]) -> None:
        self.origins = origins

    def _name(self, text: str) -> str:
        def origin(m: re.Match[str]) -> str:
            k = int(m.group(1))
            return self.origins[k] if k < len(self.origins) else "input"

        text = _MESSAGE.sub(origin, text)
        text = _TOOL_FUNCTION.sub(r"tools[\1].", text)
        for old, new in _RENAMES:
            text = re.sub(rf"(?<![\w.]){re.escape(old)}(?![\w])", new, text)
        return re.sub(r"(?<![\w.])messages(?![\w\[])", "input", text)

    def fix(self, exc: GatewayError) -> GatewayError:
        if exc.param:
            exc.param = self._name(exc.param)
        exc.message = self._name(exc.message)
        return exc
