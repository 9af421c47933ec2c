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

from _artifact_diag import diag_text, diagnostics, size_breakdown, size_text  # noqa: E402
from _peer_flows import (ROLES, edgeslim_config, one_line, peer_executorch, peer_flow_text,  # noqa: E402
                         peer_litert, peer_onnxruntime, peer_openvino)

RUNTIMES = ("onnxruntime", "openvino", "litert", "executorch")
SPEED_MODELS = ("resnet18", "mobilenet_v2")
ACCURACY_MODELS = ("lenet5", "resnet20", "mobilenetv2_tiny")
EPOCHS = {"lenet5": 3, "resnet20": 4, "mobilenetv2_tiny": 2}  # as benchmarks/quantization.py
PEER = {"onnxruntime": "ORT quantize_static", "openvino": "NNCF quantize",
        "litert": "litert-torch PT2E", "executorch": "XNNPACKQuantizer PT2E"}
SPEED_TARGET, SIZE_TARGET = 1.0, 3.9  # edgeslim's speed-up >= the peer's; fp32 / int8 bytes >= 3.9
DROP_TARGET, AGREE_TARGET = 0.3, 99.9  # points of top-1; % top-1 agreement of fp32 artifacts with PyTorch


def load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


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
