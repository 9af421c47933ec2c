"""Runtime peers: on every runtime, fp32 vs edgeslim's int8 vs that runtime's own tool's int8, side by side.

    .venv/bin/python benchmarks/runtime_peers.py --quick                 # smoke test (tiny settings, writes nothing)
    .venv/bin/python benchmarks/runtime_peers.py --part accuracy         # Fashion-MNIST, 10,000 test images
    .venv/bin/python benchmarks/runtime_peers.py --part speed --rounds 7 # torchvision 224x224, 1 and 2 threads

Per runtime, three artifacts of the same model, built from the same calibration images:

- fp32: ``edgeslim.runtimes.get(NAME).export(model, ...)`` of the float model;
- edgeslim int8: ``edgeslim.quantize(model, PTQ(), data=calib)`` (the CLI's ``quantize`` defaults: 8-bit,
  min/max activation calibration, min/max per-channel weights, 8 calibration batches), then
  ``get(NAME).export(q, path, example, loader=calib)`` (the runtime's own int8 path);
- the peer's int8, with the peer's documented defaults: ONNX Runtime ``quant_pre_process`` +
  ``quantize_static``; NNCF ``nncf.quantize`` on ``ov.convert_model(fp32.onnx)``; litert-torch's
  ``PT2EQuantizer`` with ``get_symmetric_quantization_config()``; ExecuTorch's ``XNNPACKQuantizer``
  with ``get_symmetric_quantization_config(is_per_channel=True)`` (its docs' example).

Speed: median over rounds of fresh sessions (``edgeslim.measure.bench``: the three files timed one
session at a time, shuffled order each round), batch 1, each thread count. Accuracy: every artifact run
in its runtime on the 10,000 Fashion-MNIST test images. Writes the sections ``runtime-peers-speed`` and
``runtime-peers-accuracy`` of benchmarks/RESULTS.md. Artifacts are cached under
benchmarks/.cache/runtime_peers (``--fresh`` rebuilds them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))
CACHE = ROOT / ".cache" / "runtime_peers"

RUNTIMES = ("onnxruntime", "openvino", "litert", "executorch")
SPEED_MODELS = ("resnet18", "mobilenet_v2")
ACCURACY_MODELS = ("lenet5", "resnet20", "mobilenetv2_tiny")
EPOCHS = {"lenet5": 3, "resnet20": 4, "mobilenetv2_tiny": 2}  # as benchmarks/quantization.py
PEER = {"onnxruntime": "ORT quantize_static", "openvino": "NNCF quantize",
        "litert": "litert-torch PT2E", "executorch": "XNNPACKQuantizer PT2E"}
SPEED_TARGET, SIZE_TARGET = 1.0, 3.9  # edgeslim's speed-up >= the peer's; fp32 / int8 bytes >= 3.9
DROP_TARGET, AGREE_TARGET = 0.3, 99.9  # points of top-1; % top-1 agreement of fp32 artifacts with PyTorch
ROLES = ("fp32", "edgeslim", "peer")


def load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def one_line(e: BaseException) -> str:
    """The exception's type and the first non-empty line of its text (a table cell)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


def edgeslim_config():
    """The CLI ``edgeslim quantize`` defaults (edgeslim/quantization/cli.py build_config)."""
    from edgeslim.quantization import PTQ

    return PTQ(bits=8, calibration="minmax", weight_observer="minmax", per_channel=True, calib_batches=8)


# -- calibration and test data ------------------------------------------------------------------------

def fmnist(batch: int):
    import edgeslim.data

    return edgeslim.data.load("fashion-mnist", batch_size=batch, eval_batch_size=250)


def fmnist_calibration(images: int, batch: int) -> list:
    """The first ``images`` training images (dataset order), in batches of ``batch``: [(x, y), ...]."""
    return list(fmnist(batch).calibration_batches(max(1, images // batch)))


def calibration_224(images: int, batch: int) -> list:
    """Fashion-MNIST training images resized to 3x224x224 (bilinear, channel repeated): [(x, y), ...]."""
    import torch.nn.functional as F

    out = []
    for x, y in fmnist_calibration(images, batch):
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        out.append((x.contiguous(), y))
    return out


def chunks(calib: list, batch: int) -> list:
    """The calibration images regrouped in batches of exactly ``batch`` (a graph with a fixed batch);
    the last one is filled up with images from the start (as edgeslim's ExecuTorch path does)."""
    import torch

    flat = torch.cat([x for x, _ in calib])
    n = int(flat.shape[0])
    if n % batch:
        flat = torch.cat([flat, flat.repeat(batch // n + 1, 1, 1, 1)[:batch - n % batch]])
    return list(flat.split(batch))


# -- the peers' flows ---------------------------------------------------------------------------------

def peer_onnxruntime(src_onnx: Path, out: Path, calib: list, tmp: Path) -> dict:
    """ONNX Runtime's documented static flow: ``quant_pre_process`` (shape inference + optimization), then
    ``quantize_static`` with every default (QDQ, QInt8 activations and weights, per-tensor, MinMax)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(src_onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: x.numpy()} for x, _ in calib])

        def get_next(self):
            return next(self.it, None)

    pre, note = tmp / "pre.onnx", "quant_pre_process + quantize_static"
    try:
        quant_pre_process(str(src_onnx), str(pre))
        src = pre
    except Exception as e:  # noqa: BLE001 - the documented recommendation; record it and go on without
        src, note = src_onnx, f"quant_pre_process failed ({one_line(e)}); quantize_static on the fp32 file"
    quantize_static(str(src), str(out), Reader())
    return {"flow": note}


def peer_openvino(src_onnx: Path, out: Path, calib: list, tmp: Path) -> dict:
    """NNCF's documented flow: ``nncf.quantize(ov.convert_model(fp32.onnx), nncf.Dataset(images))`` with its
    defaults (preset PERFORMANCE: symmetric int8, per-channel weights, fast bias correction), one image per
    dataset item, ``subset_size`` = every calibration image; saved with ``ov.save_model`` (its default
    ``compress_to_fp16=True``: float constants left in the IR are stored as fp16)."""
    import nncf
    import openvino as ov

    images = [x[i:i + 1].numpy() for x, _ in calib for i in range(x.shape[0])]
    q = nncf.quantize(ov.convert_model(str(src_onnx)), nncf.Dataset(images), subset_size=len(images))
    ov.save_model(q, str(out))
    return {"flow": "nncf.quantize defaults", "images": len(images)}


def peer_litert(model, example, calib: list, out: Path) -> dict:
    """litert-torch's PT2E flow (its README): torch.export, ``PT2EQuantizer().set_global(
    get_symmetric_quantization_config())`` -- the config's defaults: static int8, per-tensor weights --,
    ``prepare_pt2e``, calibration, ``convert_pt2e(fold_quantize=False)``,
    ``litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=quantizer))``."""
    import torch
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config())
    m = prepare_pt2e(torch.export.export(model.eval(), (example,)).module(), quantizer)
    with torch.no_grad():
        for x in chunks(calib, int(example.shape[0])):
            m(x)
    m = convert_pt2e(m, fold_quantize=False)
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    edge = litert_torch.convert(m, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(out))
    return {"flow": "PT2EQuantizer + get_symmetric_quantization_config() (static, per-tensor)"}


def peer_executorch(model, example, calib: list, out: Path) -> dict:
    """ExecuTorch's XNNPACK quantization flow (its docs): ``XNNPACKQuantizer().set_global(
    get_symmetric_quantization_config(is_per_channel=True))``, torch.export, ``prepare_pt2e``, calibration,
    ``convert_pt2e``, torch.export again, ``to_edge_transform_and_lower`` with the XnnpackPartitioner."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    m = prepare_pt2e(torch.export.export(model.eval(), (example,)).module(), quantizer)
    with torch.no_grad():
        for x in chunks(calib, int(example.shape[0])):
            m(x)
    m = convert_pt2e(m)
    prog = to_edge_transform_and_lower(torch.export.export(m, (example,)), partitioner=[XnnpackPartitioner()])
    out.write_bytes(bytes(prog.to_executorch().buffer))
    return {"flow": "XNNPACKQuantizer + get_symmetric_quantization_config(is_per_channel=True)"}


# -- building the artifacts ---------------------------------------------------------------------------

class Artifacts:
    """fp32 / edgeslim int8 / peer int8 files of one model for each runtime, cached under ``root`` with a
    JSON record per file ({"path", "size_bytes", "seconds", "error", ...}); a record whose settings differ
    from this run's (or ``fresh``) is rebuilt, and so is a failed one."""

    def __init__(self, name: str, model, example, calib: list, root: Path, *, fresh: bool = False):
        self.name, self.model, self.example, self.calib = name, model.eval(), example, calib
        self.root, self.fresh = root, fresh
        self.settings = {"calib_images": sum(int(x.shape[0]) for x, _ in calib),
                         "calib_batch": int(calib[0][0].shape[0]), "example": list(example.shape),
                         "ptq": edgeslim_config().to_dict()}
        self._q = None
        self.quantize_seconds = None

    def quantized(self):
        """edgeslim's int8 simulation (one per model, shared by every runtime's export)."""
        if self._q is None:
            import edgeslim

            t = time.perf_counter()
            self._q = edgeslim.quantize(self.model, edgeslim_config(), data=self.calib, progress=False)
            self.quantize_seconds = time.perf_counter() - t
        return self._q

    def source_onnx(self) -> Path:
        """edgeslim's verified fp32 ONNX: the ONNX Runtime fp32 artifact and the peers' (ORT, NNCF) input."""
        return Path(self.get("onnxruntime", "fp32")["path"])

    def get(self, runtime: str, role: str) -> dict:
        from edgeslim import runtimes
        from edgeslim.measure import artifact_size

        d = self.root / runtime
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{role}{runtimes.suffix_of(runtime)}"
        record = d / f"{role}.json"
        if record.exists() and not self.fresh:
            info = json.loads(record.read_text())
            if info.get("settings") == self.settings and not info.get("error") and path.exists():
                return info
        info = {"path": str(path), "settings": self.settings, "error": None}
        t = time.perf_counter()
        try:
            info.update(self._build(runtime, role, path) or {})
            info["size_bytes"] = artifact_size(path)
        except Exception as e:  # noqa: BLE001 - a tool failing on a model is a result: recorded, then go on
            info["error"] = one_line(e)
            if os.environ.get("RUNTIME_PEERS_TRACE"):
                traceback.print_exc()
        info["seconds"] = round(time.perf_counter() - t, 2)
        record.write_text(json.dumps(info, default=str))
        state = info["error"] or f"{info['size_bytes'] / 1e6:.3f} MB"
        print(f"  [{self.name}] {runtime} {role}: {state} ({info['seconds']:.1f}s, load {load_avg()})", flush=True)
        return info

    def _build(self, runtime: str, role: str, path: Path) -> dict | None:
        import tempfile

        from edgeslim import runtimes

        if role == "fp32":
            return _slim(runtimes.get(runtime).export(self.model, path, self.example, loader=self.calib))
        if role == "edgeslim":
            info = _slim(runtimes.get(runtime).export(self.quantized(), path, self.example, loader=self.calib))
            return {**info, "quantize_seconds": round(self.quantize_seconds, 2)}
        if runtime in ("onnxruntime", "openvino"):
            flow = peer_onnxruntime if runtime == "onnxruntime" else peer_openvino
            with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                return flow(self.source_onnx(), path, self.calib, Path(tmp))
        flow = peer_litert if runtime == "litert" else peer_executorch
        return flow(self.model, self.example, self.calib, path)

    def all(self, runtime: str) -> dict:
        return {role: self.get(runtime, role) for role in ROLES}


def _slim(info: dict) -> dict:
    """The JSON-able scalars of an export's result (agreement figures, int8 layer lists)."""
    keep = {}
    for k, v in (info or {}).items():
        if isinstance(v, (int, float, str, bool)) or v is None or (isinstance(v, list) and len(v) < 40):
            keep[k] = v
        elif isinstance(v, dict):
            keep[k] = {a: b for a, b in v.items() if isinstance(b, (int, float, str, bool)) or b is None}
    return keep


# -- diagnostics: what runs in integer arithmetic -----------------------------------------------------

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


# -- speed --------------------------------------------------------------------------------------------

def speed_part(args, store: dict) -> None:
    import torch
    import torchvision

    from edgeslim.measure import bench

    torch.set_num_threads(2)
    threads = [int(t) for t in args.threads.split(",") if t]
    size = args.input_size
    for name in args.speed_models:
        print(f"[speed] {name}: building artifacts", flush=True)
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()  # random weights: nothing downloads
        calib = calibration_224(args.speed_calib, args.speed_calib_batch)
        if size != 224:
            import torch.nn.functional as F

            calib = [(F.interpolate(x, size=(size, size), mode="bilinear"), y) for x, y in calib]
        example = calib[0][0][:1]
        arts = Artifacts(name, model, example, calib, args.cache / "speed" / f"{name}-{size}", fresh=args.fresh)
        for rt in args.runtimes:
            files = arts.all(rt)
            ok = [r for r in ROLES if not files[r]["error"]]
            diag = {r: diagnostics(rt, files[r]["path"]) for r in ("edgeslim", "peer") if r in ok}
            sizes = {r: size_breakdown(rt, files[r]["path"]) for r in ok}
            for t in threads:
                key = f"{name}|{rt}|{t}"
                row = {"model": name, "runtime": rt, "threads": t, "input": [1, 3, size, size],
                       "files": {r: {k: files[r].get(k) for k in ("size_bytes", "error", "seconds", "flow",
                                                                   "quantize_seconds")} for r in ROLES},
                       "diagnostics": diag, "sizes": sizes, "run": store["run_id"]}
                if "fp32" in ok and len(ok) >= 2:
                    load0 = load_avg()
                    try:
                        res = bench([files[r]["path"] for r in ok], (1, 3, size, size), threads=t,
                                    rounds=args.rounds, runs=args.runs, warmup=args.warmup)
                        row["timing"] = {r: {"median_ms": v["median_ms"], "p90_ms": v["p90_ms"],
                                             "per_round_ms": v.get("per_round_ms", [v["median_ms"]]),
                                             "runtime": v["runtime"]} for r, v in zip(ok, res)}
                    except Exception as e:  # noqa: BLE001
                        row["timing_error"] = one_line(e)
                    row["load"] = [load0, load_avg()]
                store["rows"][key] = row
                print(f"[speed] {key}: " + speed_line(row), flush=True)
                save(store, args)


def speed_line(row: dict) -> str:
    t = row.get("timing") or {}
    parts = [f"{r} {t[r]['median_ms']:.2f} ms" for r in ROLES if r in t]
    return ", ".join(parts) or row.get("timing_error", "not timed")


def _spread(per_round: list) -> str:
    return f"{min(per_round):.2f}-{max(per_round):.2f}"


def speed_markdown(store: dict) -> str:
    rows = list(store["rows"].values())
    if not rows:
        return ""
    rounds = sorted({len(next(iter(r["timing"].values()))["per_round_ms"]) for r in rows if r.get("timing")})
    s = store.get("settings", {})
    lines = [
        "## Runtime peers: speed and size (fp32 vs edgeslim int8 vs each runtime's own int8 tool)", "",
        f"torchvision resnet18 / mobilenet_v2 with **random weights** (`weights=None`: nothing downloads; the "
        f"figures are speed and size only), input 1x3x{s.get('input_size', 224)}x{s.get('input_size', 224)}, "
        f"batch 1. Both int8 files calibrated on the same {s.get('calib_images', '?')} Fashion-MNIST training "
        "images resized to 3x224x224. Latency: `edgeslim.measure.bench` over "
        f"{'/'.join(map(str, rounds)) or '?'} rounds of fresh sessions (the three files of a row timed one "
        f"session at a time, in a new shuffled order each round; {s.get('warmup', '?')} warm-up + "
        f"{s.get('runs', '?')} timed runs per file and round); each figure is the median over rounds of the "
        "per-round medians, the range under it the spread of the per-round medians. Speed-up: the same "
        "runtime's fp32 median / the int8 median. Size: artifact bytes (OpenVINO: .xml + .bin).", "",
        "| model | runtime | threads | fp32 ms | edgeslim int8 ms (speed-up) | peer int8 ms (speed-up) "
        "| edgeslim / peer time (per-round range) | fp32 MB | edgeslim MB (x smaller) | peer MB (x smaller) "
        "| verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(speed_row(r))
    lines += ["", "Targets: edgeslim's int8 speed-up over the runtime's fp32 at least the peer's (equivalently: "
              "edgeslim time / peer time <= 1.00 on the medians) and its file at least 3.9x smaller than "
              "fp32.", ""]
    lines += peer_flow_text()
    lines += ["", "What each int8 file runs in integer arithmetic (compiled graph, edgeslim / peer):", ""]
    seen = set()
    for r in rows:
        k = (r["model"], r["runtime"])
        text = diag_text(r["runtime"], r.get("diagnostics") or {})
        if k in seen or not text:
            continue
        seen.add(k)
        lines.append(f"- {r['model']} on {r['runtime']}: {text}")
    sized = [(r["model"], r["runtime"], size_text(r["runtime"], r.get("sizes") or {})) for r in rows if r["threads"] == min(
        x["threads"] for x in rows if x["model"] == r["model"] and x["runtime"] == r["runtime"])]
    if any(t for *_, t in sized):
        lines += ["", "Where the bytes are (OpenVINO IR: graph text vs constants; LiteRT: tensor buffers vs the "
                  "per-channel quantization parameters the format stores):", ""]
        lines += [f"- {m} on {rt}: {t}" for m, rt, t in sized if t]
    loads = [f"{r['model']}/{r['runtime']}/{r['threads']}t {r['load'][0]}-{r['load'][1]}" for r in rows if r.get("load")]
    lines += ["", "1-minute load average at the start-end of each row's timing (2 cores, shared machine): "
              + ", ".join(loads) + "."]
    lines += run_notes(store)
    return "\n".join(lines)


def speed_row(r: dict) -> str:
    f, t = r["files"], r.get("timing") or {}
    mb = {k: (f[k]["size_bytes"] / 1e6 if f[k].get("size_bytes") else None) for k in ROLES}

    def cell(role):
        if f[role].get("error"):
            return f"failed: `{f[role]['error']}`"
        if role not in t:
            return "–"
        ms = t[role]["median_ms"]
        rng = _spread(t[role]["per_round_ms"])
        if role == "fp32":
            return f"{ms:.2f} ({rng})"
        return f"{ms:.2f} ({t['fp32']['median_ms'] / ms:.2f}x; {rng})" if "fp32" in t else f"{ms:.2f}"

    def size(role):
        if mb[role] is None:
            return "–"
        return f"{mb[role]:.2f}" if role == "fp32" else (f"{mb[role]:.2f} ({mb['fp32'] / mb[role]:.2f}x)"
                                                          if mb["fp32"] else f"{mb[role]:.2f}")

    ratio = "–"
    if "edgeslim" in t and "peer" in t:
        per = [a / b for a, b in zip(t["edgeslim"]["per_round_ms"], t["peer"]["per_round_ms"])]
        ratio = f"{t['edgeslim']['median_ms'] / t['peer']['median_ms']:.3f} ({min(per):.2f}-{max(per):.2f})"
    return (f"| {r['model']} | {r['runtime']} | {r['threads']} | {cell('fp32')} | {cell('edgeslim')} | "
            f"{cell('peer')} | {ratio} | {size('fp32')} | {size('edgeslim')} | {size('peer')} | "
            f"{speed_verdict(r, mb)} |")


def speed_verdict(r: dict, mb: dict) -> str:
    t = r.get("timing") or {}
    out = []
    if "edgeslim" in t and "fp32" in t:
        es, fp = t["edgeslim"]["median_ms"], t["fp32"]["median_ms"]
        if "peer" in t:
            sp_es, sp_peer = fp / es, fp / t["peer"]["median_ms"]
            if sp_es >= sp_peer * SPEED_TARGET:
                out.append("speed meets")
            else:
                pct = 100 * (1 - sp_es / sp_peer)
                per = [a / b for a, b in zip(t["edgeslim"]["per_round_ms"], t["peer"]["per_round_ms"])]
                out.append(f"speed misses by {pct:.1f}% ({sp_es:.2f}x vs {sp_peer:.2f}x)" if pct >= 0.05 else
                           f"speed misses by <0.1% ({sp_es:.3f}x vs {sp_peer:.3f}x)")
                if min(per) <= 1.0 <= max(per):
                    out[-1] += f", within the spread (edgeslim faster in {sum(x < 1 for x in per)}/{len(per)} rounds)"
        else:
            out.append("speed: no peer figure")
    else:
        out.append("speed: not measured" + (f" ({r['timing_error']})" if r.get("timing_error") else ""))
    if mb["edgeslim"] and mb["fp32"]:
        ratio = mb["fp32"] / mb["edgeslim"]
        out.append("size meets" if ratio >= SIZE_TARGET else f"size misses by {SIZE_TARGET - ratio:.2f}x "
                   f"({ratio:.2f}x)")
    return "; ".join(out)


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


def peer_flow_text() -> list[str]:
    cfg = edgeslim_config()
    return [
        "The flows (same model, same calibration images, per runtime):", "",
        f"- edgeslim int8: `edgeslim.quantize(model, PTQ(bits=8, calibration='{cfg.calibration}', weight_observer="
        f"'{cfg.weight_observer}', per_channel={cfg.per_channel}, calib_batches={cfg.calib_batches}), data=calib)` "
        "(the CLI `quantize` defaults: BN folded, int8 symmetric per-channel weights, uint8 per-tensor activations "
        "observed min/max), then `edgeslim.runtimes.get(NAME).export(q, path, example, loader=calib)`: QDQ ONNX "
        "(onnxruntime); the same QDQ ONNX through `ov.convert_model` to IR, fp32 constants kept fp32 (openvino); "
        "the simulation's float twin (edgeslim's int8 weights baked in) through litert-torch's PT2E quantizer, "
        "per-channel, static (litert) or XNNPACKQuantizer per-channel (executorch), calibrated on the same images.",
        "- ONNX Runtime peer: `quant_pre_process(fp32.onnx)` (the documented pre-processing: symbolic shape "
        "inference + ONNX Runtime optimization), then `quantize_static(pre.onnx, out, reader)` with every default: "
        "QDQ format, QInt8 activations and weights (S8S8), per-tensor weights, MinMax calibration.",
        "- OpenVINO peer: `nncf.quantize(ov.convert_model(fp32.onnx), nncf.Dataset(images), subset_size=N)` "
        "(N = every calibration image, one image per item; every other option default: preset PERFORMANCE, "
        "symmetric int8, per-channel weights, fast bias correction), `ov.save_model(q, out.xml)` with its "
        "default compress_to_fp16=True.",
        "- LiteRT peer: litert-torch's README flow, `torch.export` -> `prepare_pt2e(m, PT2EQuantizer().set_global("
        "get_symmetric_quantization_config()))` -> calibration -> `convert_pt2e(fold_quantize=False)` -> "
        "`litert_torch.convert(m, (example,), quant_config=QuantConfig(pt2e_quantizer=...))`; the config's "
        "defaults are static int8 activations and **per-tensor** weights (the README's example passes "
        "is_per_channel=True, is_dynamic=True, i.e. dynamic-range quantization, which uses no calibration images; "
        "the defaults are the static full-integer flow that does).",
        "- ExecuTorch peer: the XNNPACK quantization docs' flow, `XNNPACKQuantizer().set_global("
        "get_symmetric_quantization_config(is_per_channel=True))` (per-channel as the docs' example; the "
        "function's own default is per-tensor), `torch.export` -> `prepare_pt2e` -> calibration -> `convert_pt2e` "
        "-> `to_edge_transform_and_lower(torch.export(...), partitioner=[XnnpackPartitioner()])`.",
        "- PT2E graphs have a fixed batch: they are calibrated on the calibration images regrouped in batches of "
        "the example's batch (edgeslim's ExecuTorch path does the same; its LiteRT path calibrates a dynamic-batch "
        "capture on the loader's batches).",
    ]


# -- accuracy -----------------------------------------------------------------------------------------

def trained(spec: str):
    from _common import cached_trained

    model, ckpt, meta = cached_trained(spec, EPOCHS.get(spec, 1))
    return model.eval(), (meta.get("metrics") or {}).get("test_top1")


def test_arrays(limit: int | None):
    import numpy as np

    xs, ys = [], []
    for x, y in fmnist(128).test:
        xs.append(x.numpy())
        ys.append(y.numpy())
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def predict(run, x, batch: int = 256):
    import numpy as np

    return np.concatenate([np.asarray(run(x[i:i + batch])).argmax(1) for i in range(0, len(x), batch)])


def accuracy_part(args, store: dict) -> None:
    import torch

    from edgeslim import runtimes

    torch.set_num_threads(2)
    x, y = test_arrays(args.test_images)
    calib = fmnist_calibration(args.acc_calib, args.acc_calib_batch)
    for spec in args.accuracy_models:
        model, ref_top1 = trained(spec)
        with torch.no_grad():
            ref = predict(lambda a: model(torch.from_numpy(a)).numpy(), x)
        torch_top1 = 100.0 * float((ref == y).mean())
        example = calib[0][0][:args.acc_example_batch]
        arts = Artifacts(spec, model, example, calib, args.cache / "accuracy" / spec, fresh=args.fresh)
        q = arts.quantized()  # edgeslim's simulation: its own top-1, next to what each runtime deploys
        with torch.no_grad():
            sim = 100.0 * float((predict(lambda a: q(torch.from_numpy(a)).numpy(), x) == y).mean())
        for rt in args.runtimes:
            files = arts.all(rt)
            row = {"model": spec, "runtime": rt, "torch_top1": torch_top1, "n": int(len(y)), "run": store["run_id"],
                   "files": {r: {k: files[r].get(k) for k in ("size_bytes", "error", "flow")} for r in ROLES}}
            for role in ROLES:
                if files[role]["error"]:
                    continue
                try:
                    t0 = time.perf_counter()
                    pred = predict(runtimes.get(rt).load(files[role]["path"], threads=2), x)
                    row[role] = {"top1": 100.0 * float((pred == y).mean()),
                                 "agree": 100.0 * float((pred == ref).mean()),
                                 "seconds": round(time.perf_counter() - t0, 1)}
                except Exception as e:  # noqa: BLE001
                    row[role] = {"error": one_line(e)}
            row["sim_top1"] = sim
            store["rows"][f"{spec}|{rt}"] = row
            print(f"[accuracy] {spec} {rt}: " + ", ".join(
                f"{r} {row[r]['top1']:.2f} (agree {row[r]['agree']:.2f})" for r in ROLES if "top1" in row.get(r, {})),
                flush=True)
            save(store, args)


def accuracy_markdown(store: dict) -> str:
    rows = list(store["rows"].values())
    if not rows:
        return ""
    s = store.get("settings", {})
    n = sorted({r["n"] for r in rows})
    lines = [
        "## Runtime peers: deployed accuracy (fp32 vs edgeslim int8 vs each runtime's own int8 tool)", "",
        f"Fashion-MNIST reference models (benchmarks/_common.cached_trained, SGD, seed 0; epochs: "
        f"{', '.join(f'{k} {v}' for k, v in EPOCHS.items())}). Every figure is the artifact run in its runtime "
        f"(2 threads) on the {'/'.join(map(str, n))} test images; both int8 files calibrated on the same "
        f"{s.get('calib_images', '?')} training images (the first {s.get('calib_images', '?')}, in batches of "
        f"{s.get('calib_batch', '?')}). LiteRT / ExecuTorch files were exported at batch "
        f"{s.get('example_batch', '?')} (the runners run other batches in pieces). Drop: the same runtime's fp32 "
        "artifact's top-1 minus the int8 artifact's (points). Agreement: % of test images whose top-1 class "
        "equals PyTorch's fp32 model's. 'edgeslim sim' is edgeslim's PyTorch simulation of its int8 model.", "",
        "| model | runtime | PyTorch fp32 top-1 | fp32 artifact top-1 (agreement) | edgeslim sim | edgeslim int8 "
        "top-1 (drop) | peer int8 top-1 (drop) | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(accuracy_row(r))
    lines += ["", f"Targets: on every runtime, edgeslim's deployed int8 within {DROP_TARGET} points top-1 of the "
              f"fp32 model (drop <= {DROP_TARGET}), and the fp32 artifact's top-1 agreement with PyTorch >= "
              f"{AGREE_TARGET}%. The peers' drops are shown for comparison, not judged.", ""]
    lines += peer_flow_text()
    lines += run_notes(store)
    return "\n".join(lines)


def _acc_cell(r: dict, role: str) -> str:
    f = r["files"][role]
    if f.get("error"):
        return f"failed: `{f['error']}`"
    v = r.get(role) or {}
    if "error" in v:
        return f"run failed: `{v['error']}`"
    if "top1" not in v:
        return "–"
    if role == "fp32":
        return f"{v['top1']:.2f} ({v['agree']:.2f}%)"
    fp = (r.get("fp32") or {}).get("top1")
    return f"{v['top1']:.2f} ({fp - v['top1']:+.2f})" if fp is not None else f"{v['top1']:.2f}"


def accuracy_row(r: dict) -> str:
    verdict = []
    fp, es = r.get("fp32") or {}, r.get("edgeslim") or {}
    if "agree" in fp:
        verdict.append("fp32 agreement meets" if fp["agree"] >= AGREE_TARGET else
                       f"fp32 agreement misses by {AGREE_TARGET - fp['agree']:.2f} pt")
    else:
        verdict.append("fp32: not measured")
    if "top1" in es and "top1" in fp:
        drop = fp["top1"] - es["top1"]
        verdict.append("int8 meets" if drop <= DROP_TARGET + 1e-9 else f"int8 misses by {drop - DROP_TARGET:.2f} pt")
    else:
        verdict.append("int8: not measured")
    sim = r.get("sim_top1")
    return (f"| {r['model']} | {r['runtime']} | {r['torch_top1']:.2f} | {_acc_cell(r, 'fp32')} | "
            f"{'–' if sim is None else f'{sim:.2f}'} | {_acc_cell(r, 'edgeslim')} | {_acc_cell(r, 'peer')} | "
            f"{'; '.join(verdict)} |")


# -- store, notes, main -------------------------------------------------------------------------------

def run_notes(store: dict) -> list[str]:
    used = {r["run"] for r in store["rows"].values()}
    runs = [f"`{v['command']}` ({v['stamp']})" for k, v in store.get("runs", {}).items() if k in used]
    if len(runs) > 1:
        return ["", "Rows come from these runs: " + "; ".join(runs) + "."]
    return []


def store_path(args, part: str) -> Path:
    return args.cache / f"{part}.json"


def open_store(args, part: str, settings: dict) -> dict:
    from _common import this_command, utc_stamp

    path = store_path(args, part)
    store = json.loads(path.read_text()) if path.exists() and not args.quick else {"rows": {}, "runs": {}}
    if store.get("settings") not in (None, settings):
        store["rows"] = {}  # other settings: the old rows are not comparable
    store["settings"] = settings
    run_id = str(len(store["runs"]) + 1)
    store["runs"][run_id] = {"command": this_command(), "stamp": utc_stamp()}
    store["run_id"] = run_id
    store["part"] = part
    return store


def save(store: dict, args) -> None:
    path = store_path(args, store["part"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(store, indent=1, default=str))
    os.replace(tmp, path)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("speed", "accuracy", "all"), default="all")
    ap.add_argument("--models", default="", help="comma-separated; torchvision names go to the speed part, zoo "
                                                  "names to the accuracy part (default: resnet18,mobilenet_v2 and "
                                                  "lenet5,resnet20,mobilenetv2_tiny)")
    ap.add_argument("--runtimes", default=",".join(RUNTIMES))
    ap.add_argument("--threads", default="1,2", help="speed part: thread counts, e.g. 1,2")
    ap.add_argument("--rounds", type=int, default=7, help="speed part: rounds of fresh sessions")
    ap.add_argument("--runs", type=int, default=50, help="speed part: timed runs per file and round")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--no-write", action="store_true", help="print the sections, do not touch RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke test (own cache; writes nothing)")
    ap.add_argument("--fresh", action="store_true", help="rebuild cached artifacts")
    args = ap.parse_args(argv)
    args.runtimes = [r for r in args.runtimes.split(",") if r]
    bad = [r for r in args.runtimes if r not in RUNTIMES]
    if bad:
        ap.error(f"unknown runtime(s) {', '.join(bad)}; choose from {', '.join(RUNTIMES)}")
    names = [m for m in args.models.split(",") if m]
    import torchvision

    args.speed_models = [m for m in names if m not in EPOCHS and hasattr(torchvision.models, m)] or list(SPEED_MODELS)
    args.accuracy_models = [m for m in names if m in EPOCHS] or list(ACCURACY_MODELS)
    unknown = [m for m in names if m not in args.speed_models and m not in args.accuracy_models]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}")
    if names and not any(m in args.speed_models for m in names):
        args.speed_models = []
    if names and not any(m in args.accuracy_models for m in names):
        args.accuracy_models = []
    args.cache = CACHE
    args.input_size, args.speed_calib, args.speed_calib_batch = 224, 128, 16  # 8 batches: PTQ's calib_batches
    args.acc_calib, args.acc_calib_batch, args.acc_example_batch, args.test_images = 256, 32, 32, None
    if args.quick:
        args.cache = CACHE / "quick"
        args.no_write = True
        args.input_size, args.speed_calib, args.speed_calib_batch = 64, 16, 2
        args.acc_calib, args.acc_calib_batch, args.test_images = 64, 8, 1000
        args.rounds, args.runs, args.warmup = min(args.rounds, 2), min(args.runs, 5), min(args.warmup, 2)
        if not names:
            args.speed_models, args.accuracy_models = ["mobilenet_v2"], ["lenet5"]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    from _common import results_section

    args.cache.mkdir(parents=True, exist_ok=True)
    sections = []
    if args.part in ("accuracy", "all") and args.accuracy_models:
        store = open_store(args, "accuracy", {"calib_images": args.acc_calib, "calib_batch": args.acc_calib_batch,
                                              "example_batch": args.acc_example_batch, "test_images": args.test_images})
        accuracy_part(args, store)
        sections.append(("runtime-peers-accuracy", accuracy_markdown(store), store))
    if args.part in ("speed", "all") and args.speed_models:
        store = open_store(args, "speed", {"input_size": args.input_size, "calib_images": args.speed_calib,
                                           "runs": args.runs, "warmup": args.warmup})
        speed_part(args, store)
        sections.append(("runtime-peers-speed", speed_markdown(store), store))
    for name, md, store in sections:
        print("\n" + md + "\n")
        if not args.no_write and md:
            runs = [store["runs"][k] for k in sorted({r["run"] for r in store["rows"].values()}, key=int)]
            last = runs[-1]
            results_section(name, md, command=last["command"], stamp=last["stamp"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
