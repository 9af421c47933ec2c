"""ONNX Runtime (CPU) as a Runtime: sessions with explicit, reproducible threading.

Besides the Runtime (``OnnxRuntime``), the ONNX-Runtime-only tools live here: ``session`` (with
graph-optimization level, optimized-model output and the profiler), ``input_spec``, ``input_shape``,
``accepts_opset`` and ``loads``.
"""
from __future__ import annotations

import collections
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from ..core.errors import ExportError
from .base import deploy_config, Runner, file_size, timed_runs

_LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


def session(path: str | os.PathLike, threads: int = 2, *, optimized_model_path: str | None = None,
            level: str = "all", profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU InferenceSession using ``threads`` intra-op threads and one inter-op thread
    (``profile_prefix``: ONNX Runtime's profiler on, its trace written under that prefix)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = _LEVELS[level]
    opts.log_severity_level = 3
    if optimized_model_path:
        opts.optimized_model_filepath = str(optimized_model_path)
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(profile_prefix)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises several unrelated types
        raise ExportError(f"ONNX Runtime cannot load {path}: {str(e).splitlines()[0]}") from None


def input_spec(sess: ort.InferenceSession) -> tuple[str, list]:
    """(name, shape) of the session's first input; symbolic dimensions are strings."""
    inp = sess.get_inputs()[0]
    return inp.name, inp.shape


def input_shape(path: str | os.PathLike) -> tuple[int, ...]:
    """The first input's shape of an .onnx file, each symbolic or unknown dimension as 1."""
    _, dims = input_spec(session(path, threads=1))
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in dims)


def loads(model: Any) -> bool:
    """Whether ONNX Runtime loads ``model`` (an onnx.ModelProto)."""
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime raises several unrelated types; any of them means "no"
        return False
    return True


def accepts_opset(opset: int) -> bool:
    """Whether ONNX Runtime loads a model stamped with this ai.onnx opset (a one-node probe)."""
    from onnx import TensorProto, helper

    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", io_[:1], io_[1:])
    ops = [helper.make_opsetid("", opset)]
    try:
        ir = helper.find_min_ir_version_for(ops)
        model = helper.make_model(graph, opset_imports=ops, ir_version=ir)
    except Exception:  # noqa: BLE001 - an opset the onnx package does not know
        return False
    return loads(model)


INTEGER_OPS = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm", "QLinearAdd",
               "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearGlobalAveragePool",
               "QLinearAveragePool", "QLinearMul", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid",
               "NhwcQLinearConv", "QLinearSoftmax"}
FLOAT_COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "NchwcConv", "ConvTranspose"}


def _onnx():
    import onnx

    return onnx


def integer_ops(path: str | os.PathLike, threads: int = 2) -> dict[str, Any]:
    """Op counts of the graph ONNX Runtime actually runs (after its optimisation), which compute
    ops are integer, and which stayed float."""
    with tempfile.TemporaryDirectory() as d:
        opt = Path(d) / "optimized.onnx"
        try:
            session(path, threads=threads, optimized_model_path=str(opt), level="all")
            g = _onnx().load(str(opt)).graph
        except Exception:  # noqa: BLE001 - some layouts cannot be saved; the extended level can
            session(path, threads=threads, optimized_model_path=str(opt), level="extended")
            g = _onnx().load(str(opt)).graph
    counts = collections.Counter(n.op_type for n in g.node)
    integer = {k: v for k, v in counts.items() if k in INTEGER_OPS}
    floats = []
    for n in g.node:
        if n.op_type in FLOAT_COMPUTE_OPS:
            weight = next((i for i in n.input[1:2]), "")
            floats.append({"op": n.op_type, "node": n.name, "weight": weight})
    return {"ops": dict(counts), "integer_ops": integer, "float_compute": floats}



class OrtRunner:
    """An InferenceSession as a Runner: one batch in, the first output (or every output) out."""

    def __init__(self, sess: ort.InferenceSession):
        self.session = sess
        first = sess.get_inputs()[0]
        self.input_name = first.name
        dim = first.shape[0] if first.shape else None
        self.batch = dim if isinstance(dim, int) and dim > 0 else None  # a file exported with a fixed batch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.outputs(x)[0]

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every output; a batch other than a fixed-batch file's runs in pieces of that batch (the last
        piece padded by repeating its last image, the padding's outputs dropped)."""
        n = self.batch
        if n is None or x.shape[0] == n:
            return tuple(self.session.run(None, {self.input_name: x}))
        parts = []
        for i in range(0, x.shape[0], n):
            piece = x[i:i + n]
            real = piece.shape[0]
            if real < n:
                piece = np.concatenate([piece, np.repeat(piece[-1:], n - real, axis=0)])
            outs = self.session.run(None, {self.input_name: piece})
            if any(o.ndim == 0 or o.shape[0] != n for o in outs):
                raise ValueError(f"this file runs batches of exactly {n} image(s), and its outputs are not one row "
                                 f"per image: give it batches of {n}")
            parts.append([o[:real] for o in outs])
        return tuple(np.concatenate([p[k] for p in parts]) for k in range(len(parts[0])))


class OnnxRuntime:
    """ONNX Runtime's CPU execution provider; artifacts are .onnx files."""

    name = "onnxruntime"
    suffix = ".onnx"
    weight_bits = (8, 4)  # integer weight widths it deploys (int8 QDQ; 4-bit weights packed as INT4)

    def version(self) -> str:
        return f"onnxruntime {ort.__version__}"

    def export(self, model, path: str | os.PathLike, example, *, loader: Any = None) -> dict:
        """The deployable file: a model made by a deployable-format config (a quantization) is written
        by that config's registered exporter (int8 QDQ for PTQ/QAT), any other by the verified float
        export."""
        from ..core.registry import export_for
        from .onnx_export import onnx_export

        cfg = deploy_config(model)
        if cfg is not None:
            return export_for(cfg)(model, path, example, cfg, loader=loader)
        return onnx_export(model, path, input_shape=tuple(example.shape), loader=loader)

    def load(self, artifact: str | os.PathLike, *, threads: int = 2) -> OrtRunner:
        return OrtRunner(session(artifact, threads=threads))  # an ExportError when it cannot

    def time(self, runner: Runner, x: np.ndarray, *, warmup: int, runs: int) -> list[float]:
        if isinstance(runner, OrtRunner):  # the bare session call: nothing of ours inside the timing
            sess, feed = runner.session, {runner.input_name: x}
            return timed_runs(lambda: sess.run(None, feed), warmup=warmup, runs=runs)
        return timed_runs(lambda: runner(x), warmup=warmup, runs=runs)

    def kernels(self, artifact: str | os.PathLike, *, threads: int = 1) -> dict:
        """What the file runs as: its compute nodes after ONNX Runtime's optimisation, integer or float."""
        ops = integer_ops(artifact, threads=threads)
        floats = collections.Counter(f["op"] for f in ops["float_compute"])
        return {"runtime": self.version(), "integer": ops["integer_ops"], "float": dict(floats),
                "float_nodes": [f["weight"] or f["node"] for f in ops["float_compute"]]}

    def size(self, artifact: str | os.PathLike) -> int:
        """The file plus the external-data files it names (a directory: every file in it)."""
        p = Path(artifact)
        size = file_size(p)
        if p.is_file() and p.suffix == self.suffix:
            import onnx

            m = onnx.load(str(p), load_external_data=False)
            ext = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
            size += sum((p.parent / loc).stat().st_size for loc in ext if (p.parent / loc).is_file())
        return size
