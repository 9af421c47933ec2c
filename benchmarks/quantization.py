"""Quantization benchmark: edgeslim PTQ / AdaRound / QAT against ONNX Runtime's quantize_static.

    .venv/bin/python benchmarks/quantization.py                 # everything (~15-30 min on 2 busy cores)
    .venv/bin/python benchmarks/quantization.py --train-only    # only the cached reference models
    .venv/bin/python benchmarks/quantization.py --part accuracy|speed

Accuracy: lenet5, resnet20 and mobilenetv2_tiny on Fashion-MNIST (short training, cached under
benchmarks/.cache/quantization/), 256 calibration images (the first two training batches) for
both tools, accuracy of every deployed file measured in ONNX Runtime on the same test images.
Speed: torchvision resnet18 / mobilenet_v2 / resnet50 at 1x3x224x224, batch 1, 2 threads; fp32,
edgeslim int8 and the peer's int8 files timed interleaved in one process.
Writes the `quantization` section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
CACHE = ROOT / ".cache" / "quantization"
# (epochs, max batches per epoch): kept small, the machine has 2 shared cores
EPOCHS = {"lenet5": (3, None), "resnet20": (1, 200), "mobilenetv2_tiny": (1, 100)}
SHARED = {"resnet20": "resnet20-fashion-mnist-e1-s0-sgd-lrNone",
          "mobilenetv2_tiny": "mobilenetv2_tiny-fashion-mnist-e0.25-s0-sgd-lrNone"}


def trained(spec: str):
    """(model, checkpoint dir, test top-1), trained once (short runs: this machine has 2 shared cores)."""
    import torch

    from edgeslim import data as D
    from edgeslim import models
    from edgeslim.train import evaluate, fit

    # prefer the references the foundation's benchmarks already trained (benchmarks/_common.cached_trained)
    shared = SHARED.get(spec)
    if shared and (ROOT / ".cache" / shared / "checkpoint" / "edgeslim.json").exists():
        model, meta = models.load(ROOT / ".cache" / shared / "checkpoint")
        return model.eval(), ROOT / ".cache" / shared / "checkpoint", meta.get("metrics", {}).get("test_top1")
    epochs, max_batches = EPOCHS.get(spec, (1, 200))
    ckpt = CACHE / (f"{spec}_e{epochs}" + (f"_b{max_batches}" if max_batches else "")) / "checkpoint"
    if (ckpt / "edgeslim.json").exists():
        model, meta = models.load(ckpt)
        return model.eval(), ckpt, meta.get("metrics", {}).get("test_top1")
    torch.set_num_threads(2)
    data = D.load("fashion-mnist", batch_size=128)
    model = models.create(spec, num_classes=10, in_channels=1)
    t = time.time()
    fit(model, data, epochs=epochs, lr=0.05, optimizer="sgd", max_batches=max_batches, progress=False)
    top1 = evaluate(model, data.test)["top1"]
    models.save(model, ckpt, spec=spec, input_shape=(1, 28, 28), build={"num_classes": 10, "in_channels": 1},
                metrics={"test_top1": top1, "train_seconds": time.time() - t})
    print(f"{spec}: {epochs} epochs, test top-1 {top1:.2f}% in {time.time() - t:.0f}s", flush=True)
    return model.eval(), ckpt, top1


# -- helpers ---------------------------------------------------------------------------------------------

def _reader(batches, name="input"):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: b.numpy()} for b in batches])

        def get_next(self):
            return next(self.it, None)

    return Reader()


def peer_quantize(fp32_path, out_path, batches, method: str) -> float:
    """ONNX Runtime's own static quantization: QDQ, per-channel int8 weights, uint8 activations. Seconds."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    t = time.perf_counter()
    pre = Path(str(out_path) + ".pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception:  # noqa: BLE001 - pre-processing is a recommendation, not required
        src = fp32_path
    quantize_static(str(src), str(out_path), _reader(batches, name), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}[method])
    if pre.exists():
        pre.unlink()
    return time.perf_counter() - t


def _fmt(v, nd=2):
    return "–" if v is None else f"{v:.{nd}f}"


# -- accuracy ------------------------------------------------------------------------------------------

def accuracy_part(specs, test_batches: int, qat_batches: int, work: Path, done: dict | None = None,
                  adaround_iters: int = 200, only: tuple = ()) -> str:
    """Rows per model are kept in ``done`` (spec -> rows) so models can be run one at a time."""
    import torch

    from edgeslim import data as D
    from edgeslim.export import onnx as export_onnx
    from edgeslim.measure import onnx_accuracy
    from edgeslim.quant import PTQ, export, quantize_with_details
    from edgeslim.quant.qat import QAT
    from edgeslim.train import evaluate

    torch.set_num_threads(2)
    data = D.load("fashion-mnist", batch_size=128)
    calib = [x for x, _ in data.calibration_batches(2)]  # 256 images, same for both tools
    test = []
    for i, (x, y) in enumerate(data.test):
        if i >= test_batches:
            break
        test.append((x, y))
    n_test = sum(len(y) for _, y in test)
    done = {} if done is None else done
    for spec in specs:
        rows = done[spec] = []
        model, _, _ = trained(spec)
        d = work / spec
        d.mkdir(parents=True, exist_ok=True)
        export_onnx(model, d / "fp32.onnx", calib[0][:1])
        fp32 = onnx_accuracy(d / "fp32.onnx", test)["top1"]
        rows.append((spec, "fp32 ONNX", None, fp32, 0.0, None))
        print(f"{spec}: fp32 {fp32:.2f}", flush=True)

        def ours(label, cfg, dataset):
            if only and not any(label.startswith(o) for o in only):
                return
            t = time.perf_counter()
            q, det = quantize_with_details(model, cfg, data=dataset, progress=False)
            secs = time.perf_counter() - t
            sim = evaluate(q, test)["top1"]
            path = d / (label.replace(" ", "_").replace("/", "") + ".onnx")
            export(q, path, calib[0])
            dep = onnx_accuracy(path, test)["top1"]
            rows.append((spec, label, sim, dep, fp32 - dep, secs))
            print(f"{spec}: {label} sim {sim:.2f} deployed {dep:.2f} ({secs:.1f}s)", flush=True)

        for cal in ("minmax", "entropy"):
            ours(f"edgeslim PTQ W8A8 {cal}", PTQ(bits=8, calibration=cal, calib_batches=2), calib)
        for method in (() if only else ("minmax", "entropy")):
            out = d / f"peer_{method}.onnx"
            secs = peer_quantize(d / "fp32.onnx", out, calib, method)
            dep = onnx_accuracy(out, test)["top1"]
            rows.append((spec, f"ORT quantize_static W8A8 {method}", None, dep, fp32 - dep, secs))
            print(f"{spec}: peer {method} {dep:.2f} ({secs:.1f}s)", flush=True)
        ours("edgeslim PTQ W4A8 nearest", PTQ(weight_bits=4, act_bits=8, calibration="entropy", calib_batches=2), calib)
        ours(f"edgeslim PTQ W4A8 AdaRound ({adaround_iters} it/layer)",
             PTQ(weight_bits=4, act_bits=8, calibration="entropy", calib_batches=2, adaround=True,
                 adaround_iters=adaround_iters), calib)
        ours(f"edgeslim QAT W4A4 (LSQ, {qat_batches} batches; first/last layer 8-bit)",
             QAT(bits=4, calibration="mse", calib_batches=2, epochs=1, max_batches=qat_batches, lr=5e-4), data)
    return accuracy_table(done, n_test, qat_batches)


def accuracy_table(done: dict, n_test: int, qat_batches: int) -> str:
    lines = [f"Accuracy: Fashion-MNIST, top-1 % on the first {n_test} test images; calibration: the same 256 "
             "training images for both tools; every 'deployed' figure is the ONNX file run in ONNX Runtime "
             "(QAT: trained for the number of batches of 128 in its label, Adam lr 1e-4).", "",
             "| model | variant | simulated | deployed (ORT) | drop vs fp32 ONNX | quantize time (s) |",
             "|---|---|---:|---:|---:|---:|"]
    for spec, label, sim, dep, drop, secs in [r for k in done for r in done[k]]:
        lines.append(f"| {spec} | {label} | {_fmt(sim)} | {_fmt(dep)} | {_fmt(drop)} | {_fmt(secs, 1)} |")
    return "\n".join(lines)


# -- speed ---------------------------------------------------------------------------------------------

def speed_part(names, calib_images: dict, runs: int, work: Path, done: dict | None = None) -> str:
    import torch
    import torchvision

    from edgeslim.export import onnx as export_onnx
    from edgeslim.measure import artifact_size, bench
    from edgeslim.quant import PTQ, export, quantize_with_details
    from edgeslim.quant.onnx_qdq import integer_ops

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    lines = ["Speed: torchvision models (random weights), 1x3x224x224, batch 1, 2 intra-op threads, ONNX Runtime "
             f"CPU, {runs} interleaved timed runs each; both int8 files calibrated on the same random images "
             "(MinMax for the peer; entropy for edgeslim).", "",
             "| model | calib images | fp32 ms | edgeslim int8 ms (speed-up) | ORT quantize_static int8 ms (speed-up) "
             "| fp32 MB | edgeslim MB (x smaller) | peer MB (x smaller) | edgeslim calibration s | peer quantize s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        model = getattr(torchvision.models, name)(weights=None).eval()
        n = calib_images.get(name, 32)
        batches = [torch.randn(16, 3, 224, 224, generator=g) for _ in range(max(1, n // 16))]
        d = work / name
        d.mkdir(parents=True, exist_ok=True)
        export_onnx(model, d / "fp32.onnx", batches[0][:1], verify=False)
        t = time.perf_counter()
        q, det = quantize_with_details(model, PTQ(bits=8, calibration="entropy", calib_batches=len(batches)),
                                       data=batches, progress=False)
        ours_s = time.perf_counter() - t
        export(q, d / "edgeslim_int8.onnx", batches[0])
        iops = integer_ops(d / "edgeslim_int8.onnx")
        peer_s = peer_quantize(d / "fp32.onnx", d / "peer_int8.onnx", batches, "minmax")
        paths = [d / "fp32.onnx", d / "edgeslim_int8.onnx", d / "peer_int8.onnx"]
        lat = bench(paths, (1, 3, 224, 224), threads=2, warmup=5, runs=runs)
        ms = [r["median_ms"] for r in lat]
        mb = [artifact_size(p) / 1e6 for p in paths]
        print(f"{name}: {ms} ms, {mb} MB, ours {ours_s:.1f}s (calib {det['calib_seconds']}s), peer {peer_s:.1f}s, "
              f"int ops {iops['integer_ops']}", flush=True)
        if done is not None:
            done[name] = {"ms": ms, "mb": mb, "ours_s": ours_s, "calib_s": det["calib_seconds"], "peer_s": peer_s,
                          "images": n}
        lines.append(f"| {name} | {n} | {ms[0]:.2f} | {ms[1]:.2f} ({ms[0] / ms[1]:.2f}x) | {ms[2]:.2f} "
                     f"({ms[0] / ms[2]:.2f}x) | {mb[0]:.1f} | {mb[1]:.1f} ({mb[0] / mb[1]:.2f}x) | {mb[2]:.1f} "
                     f"({mb[0] / mb[2]:.2f}x) | {ours_s:.1f} | {peer_s:.1f} |")
        if iops["float_compute"]:
            lines.append(f"| | float compute nodes left in edgeslim's file: {len(iops['float_compute'])} | | | | | | | | |")
    return "\n".join(lines)


NOTES = [
    "These runs shared 2 cores with other jobs (load average 15-19): latencies and times are inflated and noisy. "
    "For resnet18 the edgeslim and peer int8 files run the same ops after ONNX Runtime's optimisation "
    "(QLinearConv x20, QLinearAdd x8, QLinearGlobalAveragePool, QGemm), so the speed-up gap between them here is "
    "most likely noise; an earlier run gave edgeslim 2.28x vs 2.10x on mobilenet_v2.",
    "Entropy calibration loses 11 points on mobilenetv2_tiny, where minmax loses nothing; the W4A8 rows use entropy "
    "activations and so carry that loss. This is an open bug in the entropy observer (a fix for ReLU zero spikes "
    "went in before these rows were measured).",
    "AdaRound ran with 60 iterations per layer on resnet20 / mobilenetv2_tiny (time limit) and did worse than "
    "rounding to nearest there; with 100 on lenet5 it matched nearest.",
    "QAT W4A4 was measured on lenet5 only; the resnet20 and mobilenetv2_tiny QAT runs were stopped at the time limit.",
    "The reference models are the foundation's short-trained checkpoints (resnet20 1 epoch, mobilenetv2_tiny 0.25 "
    "epoch; lenet5 3 epochs), and every accuracy is on the first 2048 test images.",
]


def targets(parts: dict) -> str:
    """The issue's numbers, checked against what this run measured."""
    out = ["Targets (issue 3), as measured above:", ""]

    def mark(ok):
        return "met" if ok else "**not met**"

    for spec, rows in parts.get("accuracy_rows", {}).items():
        r = {label: (sim, dep, drop) for _, label, sim, dep, drop, _ in rows}
        best = min((r[k] for k in r if k.startswith("edgeslim PTQ W8A8")), key=lambda v: v[2], default=None)
        peer = min((r[k][2] for k in r if k.startswith("ORT quantize_static")), default=None)
        if best is not None and peer is not None:
            out.append(f"- {spec}: int8 PTQ drop {best[2]:.2f} pt (<= 0.3 and <= peer's {peer:.2f}): "
                       f"{mark(best[2] <= 0.3 and best[2] <= peer + 1e-9)}")
        gaps = [abs(sim - dep) for sim, dep, _ in r.values() if sim is not None]
        if gaps:
            out.append(f"- {spec}: simulated vs deployed within 0.3 pt (max gap {max(gaps):.2f}): {mark(max(gaps) <= 0.3)}")
        ada = [k for k in r if k.startswith("edgeslim PTQ W4A8 AdaRound")]
        if ada:
            d = r[ada[0]][2]
            out.append(f"- {spec}: W4A8 AdaRound drop {d:.2f} pt (<= 1): {mark(d <= 1.0)}")
        qat_rows = [k for k in r if k.startswith("edgeslim QAT W4A4")]
        if qat_rows:
            d = r[qat_rows[0]][2]
            out.append(f"- {spec}: QAT W4A4 drop {d:.2f} pt (<= 1.5): {mark(d <= 1.5)}")
    for name, v in parts.get("speed_rows", {}).items():
        ms, mb = v["ms"], v["mb"]
        out.append(f"- {name}: int8 speed-up {ms[0] / ms[1]:.2f}x vs peer {ms[0] / ms[2]:.2f}x (at least as fast): "
                   f"{mark(ms[0] / ms[1] >= ms[0] / ms[2])}; size {mb[0] / mb[1]:.2f}x smaller (>= 3.9x): "
                   f"{mark(mb[0] / mb[1] >= 3.9)}")
        if name == "resnet18":
            out.append(f"- resnet18: calibration with {v['images']} images {v['calib_s']:.1f} s (< 60 s; the peer's "
                       f"whole quantize_static took {v['peer_s']:.1f} s in the same run): {mark(v['calib_s'] < 60)}")
    return "\n".join(out)


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--part", choices=("all", "accuracy", "speed", "report"), default="all")
    ap.add_argument("--models", default="lenet5,resnet20,mobilenetv2_tiny")
    ap.add_argument("--speed-models", default="resnet18,mobilenet_v2,resnet50")
    ap.add_argument("--test-batches", type=int, default=16, help="test batches of 128 (default 16 = 2048 images)")
    ap.add_argument("--qat-batches", type=int, default=60)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--adaround-iters", type=int, default=200)
    ap.add_argument("--only", default="", help="comma-separated label prefixes to (re)run, e.g. 'edgeslim QAT'")
    args = ap.parse_args(argv)
    if args.train_only:
        for s in EPOCHS:
            trained(s)
        return 0
    from _common import results_section

    work = CACHE / "runs"
    section = ROOT / ".cache" / "quantization" / "sections.json"
    import json

    def merge(update: dict) -> dict:
        """Re-read before writing: several runs (accuracy per model, speed) may share the file."""
        cur = json.loads(section.read_text()) if section.exists() else {}
        for k, v in update.items():
            if isinstance(v, dict) and isinstance(cur.get(k), dict):
                cur[k].update(v)
            else:
                cur[k] = v
        section.write_text(json.dumps(cur))
        return cur

    if args.part in ("all", "accuracy"):
        done: dict = {}
        only = tuple(v for v in args.only.split(",") if v)
        accuracy_part(args.models.split(","), args.test_batches, args.qat_batches, work, done, args.adaround_iters,
                      only)
        cur = json.loads(section.read_text()).get("accuracy_rows", {}) if section.exists() else {}
        for spec, rows in done.items():  # replace rows by label, keep the others
            keep = {r[1]: r for r in cur.get(spec, [])}
            if only:
                keep = {k: v for k, v in keep.items() if not any(k.startswith(o) for o in only)}
            keep.update({r[1]: r for r in rows})
            done[spec] = list(keep.values())
        parts = merge({"accuracy_rows": done, "test_batches": args.test_batches, "qat_batches": args.qat_batches})
    if args.part in ("all", "speed"):
        calib = {"resnet18": 256, "mobilenet_v2": 64, "resnet50": 32}
        rows: dict = {}
        md = speed_part(args.speed_models.split(","), calib, args.runs, work, rows)
        parts = merge({"speed_rows": rows, "speed": md})
    parts = merge({})
    if parts.get("accuracy_rows"):
        parts["accuracy"] = accuracy_table(parts["accuracy_rows"], parts.get("test_batches", 16) * 128,
                                           parts.get("qat_batches", 60))
    md = "## Quantization (edgeslim.quantize vs ONNX Runtime quantize_static)\n\n" + "\n\n".join(
        parts[k] for k in ("accuracy", "speed") if k in parts) + "\n\n" + targets(parts) + (
        "\n\nNotes:\n\n" + "\n".join(f"- {n}" for n in NOTES))
    results_section("quantization", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
