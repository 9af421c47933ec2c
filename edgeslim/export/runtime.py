"""ONNX Runtime sessions with explicit, reproducible threading."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from ..core.errors import ExportError


def session(path: str | os.PathLike, threads: int = 2, *, optimized_model_path: str | None = None,
            level: str = "all", profile_prefix: str | None = None) -> ort.InferenceSession:
    """A CPU InferenceSession using ``threads`` intra-op threads and one inter-op thread
    (``profile_prefix``: ONNX Runtime's profiler on, its trace written under that prefix)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
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
    inp = sess.get_inputs()[0]
    return inp.name, inp.shape


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return sess.run(None, {name: x})[0]


def version() -> str:
    return ort.__version__


def accepts_opset(opset: int) -> bool:
    """Whether ONNX Runtime loads a model stamped with this ai.onnx opset (a one-node probe)."""
    from onnx import TensorProto, helper

    io_ = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", io_[:1], io_[1:])
    ops = [helper.make_opsetid("", opset)]
    try:
        ir = helper.find_min_ir_version_for(ops)
        model = helper.make_model(graph, opset_imports=ops, ir_version=ir)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises several unrelated types; any of them means "no"
        return False
    return True
