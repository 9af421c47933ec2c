"""Pruning benchmark: does channel pruning really speed models up, and what does it cost in accuracy?

    python benchmarks/pruning.py                       # everything
    python benchmarks/pruning.py --part speed          # torchvision models at 1x3x224x224
    python benchmarks/pruning.py --part accuracy       # Fashion-MNIST: resnet20 2x / 3x MACs, LeNet-300-100 90%
                                                       # (or --part resnet20 / --part lenet300 alone)
    python benchmarks/pruning.py --part none           # re-render RESULTS.md from saved measurements
    python benchmarks/pruning.py --part importance     # importance criteria on one table
    python benchmarks/pruning.py --part profile        # where the time goes: ORT per-op profile, base vs pruned

Speed: each torchvision model (random weights; speed does not depend on them) is pruned at channel
ratio 0.5 by edgeslim, by Torch-Pruning used directly (MetaPruner, L1, same ratio and round_to), and
by torch.nn.utils.prune (ln_structured on every conv, which only zeroes weights). All four ONNX files
are timed in one process with ONNX Runtime (batch 1, 2 threads), one session at a time, in rounds of
shuffled order (edgeslim.measure.bench).

Accuracy: trained references are cached under benchmarks/.cache/ (first run trains them).
Results go to the `pruning` section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import CACHE, cached_trained, results_section  # noqa: E402

import edgeslim  # noqa: E402
import edgeslim.runtimes  # noqa: E402
from edgeslim.measure import bench, count_macs, count_params  # noqa: E402
from edgeslim.core.registry import Context, run  # noqa: E402
from edgeslim.pruning import ChannelPrune, SparsePrune  # noqa: E402

SPEED_MODELS = ("resnet18", "mobilenet_v2", "resnet50", "densenet121", "vgg16_bn")
WORK = Path(os.environ.get("PRUNING_BENCH_WORK", CACHE / "pruning"))
PARTIAL = WORK / "partial.json"
IMP_EVAL_BATCHES = 40  # 5,120 test images per point in the importance table


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _load_partial() -> dict:
    return json.loads(PARTIAL.read_text()) if PARTIAL.exists() else {}


def _save_partial(d: dict) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    PARTIAL.write_text(json.dumps(d, indent=1))


# -- profile: where the speed-up is lost ------------------------------------------------------------
def profile(models, ratio: float, round_to: int, runs: int, threads: int, state: dict) -> None:
    """ONNX Runtime's own profiler on the baseline and the edgeslim-pruned file: kernel time per op
    type (median over runs), and the convolutions' throughput (conv MACs / conv kernel time)."""
    import torchvision

    from edgeslim.measure import ort_op_times

    shape = (1, 3, 224, 224)
    out = state.setdefault("profile", {})
    state["profile_args"] = [ratio, round_to, runs, threads]
    d = WORK / "profile"
    d.mkdir(parents=True, exist_ok=True)
    for name in models:
        _log(f"profile: {name}")
        base = getattr(torchvision.models, name)(weights=None).eval()
        es, _ = run(base, ChannelPrune(ratio=ratio, round_to=round_to), Context(input_shape=shape[1:], progress=False))
        row = {}
        for tag, m in (("baseline", base), ("edgeslim", es)):
            path = d / f"{name}-{tag}.onnx"
            edgeslim.runtimes.export_onnx(m, path, input_shape=shape)
            p = ort_op_times(path, shape, threads=threads, warmup=3, runs=runs)
            path.unlink()
            conv_macs = sum(r["macs"] for r in count_macs(m, shape)[1] if r.get("type") == "Conv2d")
            row[tag] = {"run_ms": p["run_ms"], "ops_ms": p["ops_ms"], "conv_gmacs": conv_macs / 1e9}
        out[name] = row
        _save_partial(state)


def profile_table(prof: dict, ratio: float, round_to: int, runs: int, threads: int) -> str:
    lines = [f"### Where the time goes: ONNX Runtime's profiler, baseline vs edgeslim (ratio {ratio}, round_to "
             f"{round_to}; median of {runs} runs, {threads} threads)", "",
             "Kernel time per op type. Conv throughput = MACs of the convolutions / their kernel time: when it "
             "falls after pruning, the speed-up falls short of the MACs reduction.", "",
             "| model | file | run ms | conv ms | conv GMACs | conv GMAC/s | other ops (ms) |",
             "|---|---|---:|---:|---:|---:|---|"]
    for name, row in prof.items():
        for tag in ("baseline", "edgeslim"):
            r = row[tag]
            conv = sum(v for k, v in r["ops_ms"].items() if "Conv" in k)
            other = ", ".join(f"{k} {v:.1f}" for k, v in r["ops_ms"].items() if "Conv" not in k and v >= 0.5)
            lines.append(f"| {name} | {tag} | {r['run_ms']:.1f} | {conv:.1f} | {r['conv_gmacs']:.3f} | "
                         f"{r['conv_gmacs'] / conv * 1e3:.1f} | {other} |")
        b, e = row["baseline"], row["edgeslim"]
        cb = sum(v for k, v in b["ops_ms"].items() if "Conv" in k)
        ce = sum(v for k, v in e["ops_ms"].items() if "Conv" in k)
        lines.append(f"| {name} | ratio | {b['run_ms'] / e['run_ms']:.2f}x | {cb / ce:.2f}x | "
                     f"{b['conv_gmacs'] / e['conv_gmacs']:.2f}x | {(e['conv_gmacs'] / ce) / (b['conv_gmacs'] / cb):.2f} | |")
    return "\n".join(lines)


# -- speed ------------------------------------------------------------------------------------
def _head(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def _torch_pruning(model: nn.Module, x: torch.Tensor, ratio: float, round_to: int) -> nn.Module:
    import torch_pruning as tp

    m = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                                  ignored_layers=[_head(m)], round_to=round_to)
    pruner.step()
    return m


def _torch_nn_utils_prune(model: nn.Module, ratio: float) -> nn.Module:
    from torch.nn.utils import prune as tprune

    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            tprune.ln_structured(mod, "weight", amount=ratio, n=1, dim=0)
            tprune.remove(mod, "weight")  # zeros stay in a dense tensor: nothing shrinks
    return m


def speed(models, ratio: float, round_to: int, runs: int, threads: int, state: dict, rounds: int = 5,
          redo: bool = False) -> list[dict]:
    """Rows per (model, method); each model's rows are saved as soon as they are measured, so an
    interrupted run resumes with the next model. ``redo`` measures the given models again (their
    saved rows are replaced; other models' rows stay)."""
    import torchvision

    shape = (1, 3, 224, 224)
    x = torch.randn(shape)
    if redo:
        state["speed"] = [r for r in state.get("speed", []) if r["model"] not in models]
    out = state.setdefault("speed", [])
    state["speed_args"] = [ratio, round_to, runs, threads, rounds]
    onnx_dir = WORK / "onnx"
    onnx_dir.mkdir(parents=True, exist_ok=True)
    for name in models:
        if any(r["model"] == name for r in out):
            _log(f"speed: {name} already measured (use --redo to measure it again)")
            continue
        _log(f"speed: {name}")
        base = getattr(torchvision.models, name)(weights=None).eval()
        t0 = time.perf_counter()
        es, det = run(base, ChannelPrune(ratio=ratio, round_to=round_to),
                      Context(input_shape=shape[1:], progress=False))
        t_es = time.perf_counter() - t0
        t0 = time.perf_counter()
        tpm = _torch_pruning(base, x, ratio, round_to).eval()
        t_tp = time.perf_counter() - t0
        tnu = _torch_nn_utils_prune(base, ratio).eval()
        variants = {"baseline": base, "edgeslim": es, "torch-pruning": tpm, "torch.nn.utils.prune": tnu}
        paths, parity = {}, {}
        for k, m in variants.items():
            p = onnx_dir / f"{name}-{k.replace('.', '_')}.onnx"
            info = edgeslim.runtimes.export_onnx(m, p, input_shape=shape, verify=True)
            paths[k], parity[k] = p, info["max_abs_diff"]
        macs = {k: count_macs(m, shape)[0] for k, m in variants.items()}
        params = {k: count_params(m) for k, m in variants.items()}
        _log(f"  timing {len(paths)} ONNX files ({rounds} rounds of fresh sessions in shuffled order x {runs} runs)")
        # one session at a time (idle ONNX Runtime threads spin and slow a neighbour); a session's speed on this
        # shared machine drifts more between sessions than between runs: the figure is the median over rounds
        res = bench(list(paths.values()), shape, threads=threads, warmup=10, runs=runs, rounds=rounds)
        lat = {k: res[i] for i, k in enumerate(paths)}
        for k in variants:
            row = {"model": name, "method": k, "params": params[k], "macs": macs[k],
                   "latency_ms": lat[k]["median_ms"], "p90_ms": lat[k]["p90_ms"],
                   "per_round_ms": lat[k].get("per_round_ms"),
                   "macs_reduction": macs["baseline"] / macs[k], "speedup": lat["baseline"]["median_ms"] / lat[k]["median_ms"],
                   "onnx_max_abs_diff": parity[k], "onnx_mb": paths[k].stat().st_size / 1e6,
                   "prune_s": {"edgeslim": t_es, "torch-pruning": t_tp}.get(k)}
            row["speedup_per_macs"] = row["speedup"] / row["macs_reduction"]
            out.append(row)
            _log(f"  {k:22s} MACs {row['macs'] / 1e9:6.2f}G ({row['macs_reduction']:.2f}x)  "
                 f"{row['latency_ms']:8.2f} ms ({row['speedup']:.2f}x)  parity {parity[k]:.1e}")
        _save_partial(state)
        for p in paths.values():
            p.unlink(missing_ok=True)
        del base, es, tpm, tnu, variants
    return out


def speed_table(rows: list[dict], ratio: float, round_to: int, runs: int, threads: int, rounds: int = 1) -> str:
    lines = [f"### Speed: channel ratio {ratio} (round_to {round_to}), 1x3x224x224, ONNX Runtime batch 1, "
             f"{threads} threads; {rounds} round(s) of fresh sessions timing a model's four files one session at a "
             f"time in shuffled order ({runs} runs each), median over rounds of the per-round medians", "",
             "| model | method | params | GMACs | MACs reduction | latency ms (p90) | speedup | speedup / MACs reduction | ONNX parity |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['method']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e9:.3f} | "
                     f"{r['macs_reduction']:.2f}x | {r['latency_ms']:.2f} ({r['p90_ms']:.2f}) | {r['speedup']:.2f}x | "
                     f"{r['speedup_per_macs']:.2f} | {r['onnx_max_abs_diff']:.1e} |")
    es = [r for r in rows if r["method"] == "edgeslim"]
    ok = [r["model"] for r in es if r["speedup_per_macs"] >= 0.7]
    lines += ["", f"edgeslim speedup / MACs reduction >= 0.7 (the target) on {len(ok)} of {len(es)} models"
              + (f": {', '.join(ok)}" if ok else "") + ". torch.nn.utils.prune only zeroes weights: same MACs, "
              "same dense ONNX file, no speedup."]
    return "\n".join(lines)


# -- accuracy -----------------------------------------------------------------------------------
def _fmnist(batch_size: int = 128):
    import edgeslim.data

    return edgeslim.data.load("fashion-mnist", batch_size=batch_size, seed=0)


def _test_acc(model, data, max_batches=None) -> float:
    from edgeslim.train import evaluate

    return evaluate(model, data.test, max_batches=max_batches)["top1"]


def _onnx_figures(base, small, shape, data, runs, threads, tag):
    paths = []
    accs = []
    for k, m in (("base", base), ("small", small)):
        p = WORK / f"{tag}-{k}.onnx"
        edgeslim.runtimes.export_onnx(m, p, input_shape=shape, verify=True)
        paths.append(p)
    from edgeslim.measure import onnx_accuracy

    lat = bench(paths, shape, threads=threads, warmup=5, runs=runs)
    for p in paths:
        accs.append(onnx_accuracy(p, data.test, threads=threads)["top1"])
    sizes = [p.stat().st_size for p in paths]
    return lat, accs, sizes


def accuracy(spec: str, ref_epochs: float, ft_epochs: float, runs: int, threads: int, state: dict,
             bn_batches: int = 50) -> dict:
    data = _fmnist()
    shape = (1, 1, 28, 28)
    res = state.setdefault("accuracy", {})
    # resnet20 at 2x and 3x fewer MACs
    ref, ck, meta = cached_trained(spec, ref_epochs)
    ref.eval()
    if (res.get("model"), res.get("ref_epochs"), res.get("bn_batches", 0)) != (spec, ref_epochs, bn_batches):
        for k in ("resnet20_base", "resnet20_2x", "resnet20_3x"):  # saved figures are of another setting
            res.pop(k, None)
    res["model"], res["ref_epochs"], res["bn_batches"] = spec, ref_epochs, bn_batches
    base_acc = res.get("resnet20_base") or _test_acc(ref, data)
    res["resnet20_base"] = base_acc
    _save_partial(state)
    for label, target in (("2x", 0.5), ("3x", 1 / 3)):
        key = f"resnet20_{label}"
        if key in res:
            continue
        _log(f"accuracy: {spec} {label} fewer MACs (target_macs {target:.3f}), {ft_epochs} fine-tune epochs")
        cfg = ChannelPrune(target_macs=target, allocation="sensitivity", importance="l1", finetune_epochs=ft_epochs,
                           bn_batches=bn_batches)
        t0 = time.perf_counter()
        small, det = run(ref, cfg, Context(data=data, progress=False))
        elapsed = time.perf_counter() - t0
        acc = _test_acc(small, data)
        lat, onnx_accs, sizes = _onnx_figures(ref, small, shape, data, runs, threads, f"{spec}-{label}")
        res[key] = {"target_macs": target, "macs_kept": det["macs_kept"], "acc": acc, "drop": base_acc - acc,
                    "onnx_acc_base": onnx_accs[0], "onnx_acc": onnx_accs[1],
                    "lat_base": lat[0]["median_ms"], "lat": lat[1]["median_ms"], "size_base": sizes[0],
                    "size": sizes[1], "params": count_params(small), "params_base": count_params(ref),
                    "ratios": {r["layer"]: r["ratio"] for r in det["layers"]}, "seconds": elapsed}
        _log(f"  acc {base_acc:.2f} -> {acc:.2f} (drop {base_acc - acc:.2f}), MACs kept {det['macs_kept']:.3f}")
        _save_partial(state)
    return res


def lenet300(args, state: dict) -> dict:
    """LeNet-300-100 at 90% fine-grained sparsity (magnitude, per-layer or global ranking)."""
    data = _fmnist()
    res = state.setdefault("accuracy", {})
    cfg = dict(schedule=args.l3_schedule, finetune_epochs=args.l3_ft_epochs, lr=args.l3_lr,
               global_ranking=args.l3_global, steps=args.l3_steps)
    old = res.get("lenet300")
    if old is None or old.get("config") != cfg:
        _log(f"accuracy: lenet300 90% fine-grained sparsity {cfg}")
        ref, _, _ = cached_trained("lenet300", 5)
        ref.eval()
        b = _test_acc(ref, data)
        t0 = time.perf_counter()
        small, det = run(ref, SparsePrune(granularity="fine", ratio=0.9, **cfg), Context(data=data, progress=False))
        a = _test_acc(small, data)
        res["lenet300"] = {"acc_base": b, "acc": a, "drop": b - a, "sparsity": det["sparsity"], "config": cfg,
                           "seconds": time.perf_counter() - t0,
                           "per_layer": {r["layer"]: r["sparsity"] for r in det["layers"]},
                           "sparse_bytes": det["sparse_size_bytes"], "dense_bytes": det["dense_size_bytes"]}
        _log(f"  acc {b:.2f} -> {a:.2f}, sparsity {det['sparsity']:.3f}")
        _save_partial(state)
    return res


def importance_table(spec: str, ref_epochs: float, ratio: float, ft_epochs: float, state: dict,
                     bn_batches: int = 50) -> dict:
    from edgeslim.pruning import IMPORTANCE_NAMES
    from edgeslim.train import fit, recalibrate_bn

    data = _fmnist()
    res = state.setdefault("importance", {})
    key = (spec, ref_epochs, ratio, ft_epochs, bn_batches)
    if (res.get("_model"), res.get("_ref_epochs"), res.get("_ratio"), res.get("_ft"), res.get("_bn")) != key:
        res.clear()  # saved rows are of another model or setting
    res.update({"_model": spec, "_ref_epochs": ref_epochs, "_ratio": ratio, "_ft": ft_epochs, "_bn": bn_batches})
    ref, _, _ = cached_trained(spec, ref_epochs)
    ref.eval()
    res.setdefault("_base", _test_acc(ref, data, IMP_EVAL_BATCHES))
    for name in IMPORTANCE_NAMES:
        if name in res:
            continue
        _log(f"importance: {name}")
        small, det = run(ref, ChannelPrune(ratio=ratio, importance=name, bn_batches=0),
                         Context(data=data, progress=False))
        a0 = _test_acc(small, data, IMP_EVAL_BATCHES)
        recalibrate_bn(small, data, bn_batches)  # what ChannelPrune(bn_batches=...) does after pruning
        a_bn = _test_acc(small, data, IMP_EVAL_BATCHES)
        fit(small, data, epochs=ft_epochs, progress=False)
        a1 = _test_acc(small, data, IMP_EVAL_BATCHES)
        res[name] = {"no_ft": a0, "bn": a_bn, "ft": a1, "macs_kept": det["macs_kept"]}
        _log(f"  {name}: {a0:.2f}, BN re-estimated {a_bn:.2f} -> {a1:.2f} after {ft_epochs} epochs")
        _save_partial(state)
    return res


def accuracy_markdown(acc: dict | None, imp: dict | None, ref_epochs, ft_epochs, imp_ratio, imp_ft) -> str:
    out = []
    if acc:
        base = acc.get("resnet20_base")
        spec = acc.get("model", "resnet20")
        out += ["### Accuracy on Fashion-MNIST (test set, 10,000 images)", "",
                f"{spec} reference trained {acc.get('ref_epochs', ref_epochs)} epochs (cached); pruned with sensitivity-guided per-layer "
                f"ratios (L1 importance) to a MACs target"
                + (f", BatchNorm statistics re-estimated on {acc['bn_batches']} training batches" if acc.get("bn_batches") else "")
                + f", then fine-tuned {ft_epochs} epochs. Note the pruned models "
                f"get {ft_epochs} more training epochs than the reference.", "",
                "| model | MACs kept | params | top-1 torch | top-1 ONNX | drop (points) | target drop | ORT latency ms (1x1x28x28) | met |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        if base is not None:
            r2 = acc.get("resnet20_2x") or acc.get("resnet20_3x")
            onnx_base = r2["onnx_acc_base"] if r2 else None
            out.append(f"| {spec} reference | 1.000 | {r2['params_base'] if r2 else '–'} | {base:.2f} | "
                       f"{onnx_base if onnx_base is None else round(onnx_base, 2)} | – | – | "
                       f"{round(r2['lat_base'], 3) if r2 else '–'} | |")
        for label, limit in (("2x", 0.5), ("3x", 1.5)):
            r = acc.get(f"resnet20_{label}")
            if r:
                out.append(f"| {spec} {label} fewer MACs | {r['macs_kept']:.3f} | {r['params']:,} | {r['acc']:.2f} | "
                           f"{r['onnx_acc']:.2f} | {r['drop']:.2f} | <= {limit} | {r['lat']:.3f} "
                           f"({r['lat_base'] / r['lat']:.2f}x) | {'yes' if r['drop'] <= limit else 'NO'} |")
            else:
                out.append(f"| {spec} {label} fewer MACs | not measured in this run | | | | | <= {limit} | | |")
        l3 = acc.get("lenet300")
        if l3 and "config" in l3:
            c = l3["config"]
            per = ", ".join(f"{k} {v * 100:.1f}%" for k, v in (l3.get("per_layer") or {}).items())
            out += ["", f"LeNet-300-100 (cached reference, 5 epochs) at {l3['sparsity'] * 100:.1f}% fine-grained "
                    f"sparsity ({'global' if c['global_ranking'] else 'per-layer'} magnitude ranking, {c['schedule']} "
                    f"schedule over {c['steps']} steps, {c['finetune_epochs']:g} fine-tune epochs in all, SGD lr "
                    f"{c['lr']}, masks re-applied after every step; {per}): top-1 {l3['acc_base']:.2f} -> "
                    f"{l3['acc']:.2f} (drop {l3['drop']:.2f}, target <= 0.5: "
                    f"{'met' if l3['drop'] <= 0.5 else 'NOT met'}). Size with a real sparse encoding (CSR/bitmap, "
                    f"fp32 values): {l3['sparse_bytes']:,} bytes vs {l3['dense_bytes']:,} dense "
                    f"({l3['dense_bytes'] / l3['sparse_bytes']:.1f}x); the ONNX file stays dense."]
    if imp:
        out += ["", f"### Importance criteria ({imp.get('_model', 'resnet20')}, channel ratio {imp_ratio} per layer)", "",
                f"Reference top-1 {imp['_base']:.2f}% on the first {IMP_EVAL_BATCHES * 128:,} test images (the same "
                f"images for every row). Accuracy right after pruning (BatchNorm statistics as they were), after "
                f"re-estimating them on {imp.get('_bn', 0)} training batches (no training), and after {imp_ft} "
                f"epoch(s) of fine-tuning.", "",
                "| importance | MACs kept | top-1 no fine-tune | top-1 BN re-estimated | top-1 after fine-tune |",
                "|---|---:|---:|---:|---:|"]
        for k, v in imp.items():
            if not k.startswith("_"):
                bn = "–" if v.get("bn") is None else f"{v['bn']:.2f}"
                out.append(f"| {k} | {v['macs_kept']:.3f} | {v['no_ft']:.2f} | {bn} | {v['ft']:.2f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="speed,accuracy,importance")
    ap.add_argument("--models", default=",".join(SPEED_MODELS))
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of fresh ONNX Runtime sessions (speed part)")
    ap.add_argument("--profile-models", default="densenet121,vgg16_bn", help="models for --part profile")
    ap.add_argument("--acc-model", default="resnet20", help="model for the 2x/3x-MACs and importance tables")
    ap.add_argument("--ref-epochs", type=float, default=4)
    ap.add_argument("--ft-epochs", type=float, default=2)
    ap.add_argument("--bn-batches", type=int, default=50,
                    help="BatchNorm re-estimation after channel pruning (resnet20 and importance parts)")
    ap.add_argument("--imp-ratio", type=float, default=0.3)
    ap.add_argument("--imp-ft-epochs", type=float, default=0.1)
    ap.add_argument("--l3-schedule", default="iterative", help="LeNet-300-100 schedule (oneshot|iterative|agp)")
    ap.add_argument("--l3-ft-epochs", type=float, default=6)
    ap.add_argument("--l3-steps", type=int, default=3)
    ap.add_argument("--l3-lr", type=float, default=0.05)
    ap.add_argument("--l3-global", action="store_true", help="rank LeNet-300-100 weights globally")
    ap.add_argument("--fresh", action="store_true", help="ignore measurements saved by an interrupted run")
    ap.add_argument("--redo", action="store_true", help="speed: measure --models again, keeping other saved rows")
    ap.add_argument("--note", action="append", default=[], help="a line to add under the tables (repeatable)")
    args = ap.parse_args()
    if float(args.ref_epochs).is_integer():  # cache keys spell whole epochs as "e4", not "e4.0"
        args.ref_epochs = int(args.ref_epochs)
    parts = set(args.part.split(","))
    state = {} if args.fresh else _load_partial()
    if "speed" in parts:
        speed(args.models.split(","), args.ratio, args.round_to, args.runs, args.threads, state, rounds=args.rounds,
              redo=args.redo)
    if "lenet300" in parts or "accuracy" in parts:
        lenet300(args, state)
    if "resnet20" in parts or "accuracy" in parts:
        accuracy(args.acc_model, args.ref_epochs, args.ft_epochs, args.runs, args.threads, state, args.bn_batches)
    if "importance" in parts:
        importance_table(args.acc_model, args.ref_epochs, args.imp_ratio, args.imp_ft_epochs, state, args.bn_batches)
    if "profile" in parts:
        profile(args.profile_models.split(","), args.ratio, args.round_to, args.runs, args.threads, state)
    md = []
    if state.get("speed"):
        md.append(speed_table(state["speed"], *state["speed_args"]))
    if state.get("profile"):
        md.append(profile_table(state["profile"], *state["profile_args"]))
    md.append(accuracy_markdown(state.get("accuracy"), state.get("importance"), args.ref_epochs, args.ft_epochs,
                                args.imp_ratio, args.imp_ft_epochs))
    if args.note:
        md.append("Notes:\n\n" + "\n".join(f"- {n}" for n in args.note))
    text = "## Pruning\n\n" + "\n\n".join(m for m in md if m)
    results_section("pruning", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
