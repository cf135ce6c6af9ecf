"""The embedded llama.cpp model: a continuous-batching engine behind an OpenAI-shaped adapter.

- model.py     the GGUF: locating the embedded one, loading, tokenizer, chat template
- sampling.py  per-request sampler chains, stop strings across tokens, logprobs
- slots.py     what the engine schedules: jobs and KV slots
- engine.py    the thread that owns the llama.cpp context and decodes all slots per step
- structured.py JSON schemas and tool calls as grammars
- fields.py    what the local path does with each request field
- constraint.py llguidance: the vocabulary bridge, compiled grammars, the per-slot token mask
- choices.py   several choices (n, prompt lists, echo, grammars) and their OpenAI shapes
- backend.py   LocalBackend: admission, prompt building, responses and SSE chunks
"""

from __future__ import annotations

from .backend import LocalBackend
from .model import EMBEDDED_FILE, EMBEDDED_PACKAGE, embedded_model_path

__all__ = ["EMBEDDED_FILE", "EMBEDDED_PACKAGE", "LocalBackend", "embedded_model_path"]
