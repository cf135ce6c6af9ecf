"""The local wing: the embedded llama.cpp model and several named models behind one backend.

The engine and what it runs:
- model.py      the GGUF: locating the embedded one, loading, tokenizer, chat template
- sampling.py   per-request sampler chains, stop strings across tokens, logprobs
- slots.py      what the engine schedules: jobs and KV slots
- engine.py     the thread that owns the llama.cpp context and decodes all slots per step
- constraint.py llguidance: the vocabulary bridge, compiled grammars, the per-slot token mask
- structured.py JSON answers (response_format) as grammars
- tool_calls.py tool calls as grammars, and the call in OpenAI's shape
- fields.py     what the local path does with each request field
- backend.py    LocalBackend: the admission check, prompt building, the plain single answer
- answer.py     the general path: several choices, prompt lists, echo, grammars, their shapes
- embedder.py   the local embedding model, its own context and thread

Several models:
- memory.py     the resident-size estimate from a GGUF's own metadata, and what the box has
- verify.py     a file's SHA-256 and its detached Ed25519 signature (a leaf)
- entry.py      a model name and the files serving it
- pool.py       the named models: residency, leases, LRU and keep-alive
- route.py      one request's lease on its model's file
- swap.py       verified swaps, canary, promote and rollback
"""

from __future__ import annotations

from .backend import LocalBackend
from .model import EMBEDDED_FILE, EMBEDDED_PACKAGE, embedded_model_path

__all__ = ["EMBEDDED_FILE", "EMBEDDED_PACKAGE", "LocalBackend", "embedded_model_path"]
