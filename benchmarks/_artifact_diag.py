"""What an int8 artifact runs in integer arithmetic and where its bytes are, per runtime
(benchmarks/runtime_peers.py's diagnostics), read from the compiled graph or the file itself."""
from __future__ import annotations

from pathlib import Path

from _peer_flows import ROLES, one_line


def ort_ops(path: str) -> dict:
    """Op types of the graph ONNX Runtime runs after its optimization, and the float compute ops left."""
    from collections import Counter

    from edgeslim.quantization.onnx_qdq import integer_ops

    r = integer_ops(path, threads=1)
    return {"ops": r["ops"], "float_compute": dict(Counter(f["op"] for f in r["float_compute"]))}


_OV_SKIP = {"Input", "Output", "Const", "Parameter", "Result", "Reorder", "Reshape", "Transpose"}


def ov_precisions(path: str) -> dict:
    """{layerType: {runtimePrecision: count}} of the compiled model's runtime graph (OpenVINO CPU, 1
    thread), without the plumbing layers; plus the f32 Convolution / FullyConnected / Eltwise layer names."""
    from edgeslim import runtimes

    runner = runtimes.get("openvino").load(path, threads=1)
    table: dict = {}
    float_layers = []
    for op in runner.compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
        if kind in _OV_SKIP:
            continue
        table.setdefault(kind, {}).setdefault(prec, 0)
        table[kind][prec] += 1
        if prec in ("f32", "f16", "bf16") and kind in ("Convolution", "FullyConnected", "Eltwise", "MatMul",
                                                       "GroupConvolution", "Pooling"):
            names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else op.get_friendly_name()
            float_layers.append(f"{kind}:{names[:80]}")
    return {"precisions": table, "float_layers": float_layers[:30], "n_float_layers": len(float_layers),
            "activation_grids": fq_grids(path)}


def fq_grids(path: str) -> dict:
    """How the IR's activation FakeQuantize layers place their grid: zero at the low end (unsigned, zero
    point 0), centred (signed symmetric) or elsewhere (an asymmetric grid: a nonzero zero point, which the
    CPU plugin's int8 convolutions compensate for at run time)."""
    import numpy as np
    import openvino as ov

    kinds = {"zero-point 0 (unsigned)": 0, "symmetric (signed)": 0, "asymmetric (zero point != 0)": 0}
    for op in ov.Core().read_model(path).get_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        src = op.input_value(0).get_node()
        if src.get_type_name() == "Constant" or src.get_type_name() == "Convert":
            continue  # a weight's grid
        lo, hi = (np.asarray(op.input_value(i).get_node().get_data(), np.float64).ravel()
                  for i in (1, 2))
        if np.all(lo == 0):
            kinds["zero-point 0 (unsigned)"] += 1
        elif np.allclose(-lo, hi, rtol=0.02) or np.allclose(-lo, hi * 128 / 127, rtol=0.002):
            kinds["symmetric (signed)"] += 1
        else:
            kinds["asymmetric (zero point != 0)"] += 1
    return kinds


def tflite_ops(path: str) -> dict:
    """{op name: {input dtype: count}} of a .tflite (XNNPACK delegates what it can of these)."""
    from edgeslim import runtimes

    interp = runtimes.get("litert").load(path, threads=1).interpreter
    details = {t["index"]: t for t in interp.get_tensor_details()}
    table: dict = {}
    for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's own op listing
        ins = [i for i in op.get("inputs", []) if i >= 0]
        dt = str(details[ins[0]]["dtype"].__name__) if ins and ins[0] in details else "?"
        table.setdefault(op["op_name"], {}).setdefault(dt, 0)
        table[op["op_name"]][dt] += 1
    return {"ops": table}


def diagnostics(runtime: str, path: str) -> dict | None:
    try:
        if runtime == "onnxruntime":
            return ort_ops(path)
        if runtime == "openvino":
            return ov_precisions(path)
        if runtime == "litert":
            return tflite_ops(path)
    except Exception as e:  # noqa: BLE001 - a diagnostic, never a reason to stop
        return {"error": one_line(e)}
    return None


def size_breakdown(runtime: str, path: str) -> dict | None:
    """Where an artifact's bytes are: OpenVINO's .xml (the graph as text) and .bin (the constants); a
    .tflite's constant buffers by type and its quantization parameters (a float32 scale and an int64 zero
    point per channel of a per-channel tensor, one of each per tensor otherwise)."""
    try:
        if runtime == "openvino":
            xml = Path(path)
            return {"xml": xml.stat().st_size, "bin": xml.with_suffix(".bin").stat().st_size}
        if runtime == "litert":
            return tflite_bytes(path)
    except Exception as e:  # noqa: BLE001
        return {"error": one_line(e)}
    return None


def tflite_bytes(path: str) -> dict:
    """A .tflite's constant bytes by tensor type and its quantization parameters (read from the flatbuffer)."""
    from ai_edge_litert import schema_py_generated as schema

    raw = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(raw, 0)
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    buffers: dict = {}
    scales = zero_points = 0
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            b = model.Buffers(t.Buffer())
            n = (b.DataLength() or int(b.Size())) if b is not None else 0
            if n:
                buffers[types.get(t.Type(), "?")] = buffers.get(types.get(t.Type(), "?"), 0) + n
            q = t.Quantization()
            if q is not None:
                scales += q.ScaleLength()
                zero_points += q.ZeroPointLength()
    return {"buffers": buffers, "quant_scales": scales, "quant_param_bytes": 4 * scales + 8 * zero_points}


def size_text(runtime: str, sizes: dict) -> str:
    parts = []
    for role in ROLES:
        d = sizes.get(role)
        if not d or d.get("error"):
            continue
        if runtime == "openvino":
            parts.append(f"{role} .xml {d['xml'] / 1e6:.3f} MB + .bin {d['bin'] / 1e6:.3f} MB")
        elif runtime == "litert":
            buf = ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in sorted(d["buffers"].items()) if v > 1000)
            parts.append(f"{role}: constants {buf}; {d['quant_scales']} quantization scales "
                         f"({d['quant_param_bytes'] / 1e6:.3f} MB of float32 scale + int64 zero-point arrays)")
    return "; ".join(parts)


def diag_text(runtime: str, diag: dict) -> str:
    parts = []
    for role in ("edgeslim", "peer"):
        d = diag.get(role)
        if not d:
            continue
        if d.get("error"):
            parts.append(f"{role}: diagnostic failed ({d['error']})")
        elif runtime == "onnxruntime":
            ops = d["ops"]
            main = {k: v for k, v in ops.items() if k in ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul",
                                                         "QGemm", "QLinearAdd", "QLinearGlobalAveragePool", "Conv",
                                                         "Gemm", "MatMul", "Add", "QuantizeLinear", "DequantizeLinear",
                                                         "QLinearConcat")}
            parts.append(f"{role}: {', '.join(f'{k} {v}' for k, v in sorted(main.items()))}; float compute "
                         f"{sum(d['float_compute'].values())} ({', '.join(f'{k} {v}' for k, v in d['float_compute'].items()) or 'none'})")
        elif runtime == "openvino":
            prec = d["precisions"]
            txt = ", ".join(f"{k} " + "/".join(f"{p}:{n}" for p, n in sorted(v.items()))
                            for k, v in sorted(prec.items()))
            grids = ", ".join(f"{k} {v}" for k, v in (d.get("activation_grids") or {}).items() if v)
            parts.append(f"{role}: {txt}; float compute layers {d['n_float_layers']}"
                         + (f" (e.g. {'; '.join(d['float_layers'][:3])})" if d["float_layers"] else "")
                         + (f"; activation FakeQuantize grids: {grids}" if grids else ""))
        elif runtime == "litert":
            ops = d["ops"]
            keys = [k for k in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "ADD", "MEAN",
                                "AVERAGE_POOL_2D", "QUANTIZE", "DEQUANTIZE") if k in ops]
            parts.append(f"{role}: " + ", ".join(f"{k} " + "/".join(f"{dt}:{n}" for dt, n in ops[k].items())
                                                  for k in keys))
    return " | ".join(parts)
