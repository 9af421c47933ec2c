"""Distillation, low-rank decomposition and re-parameterization: the numbers of issue 5.

    python benchmarks/distill_lowrank_reparam.py [--parts repvgg,tv,distill,fm] [--quick]

Parts (each caches its result in benchmarks/.cache/dlr/<part>.json; the RESULTS.md section is
rebuilt from every cached part, so parts can run separately):

- repvgg:  repvgg_a0 multi-branch vs folded: max abs difference and ONNX Runtime latency of both.
- tv:      torchvision resnet18 and vgg16, Tucker-2 at 2x fewer MACs: ORT latency of original and
           factorized, measured in one run, one session at a time (random weights: latency does not depend on them).
- distill: Fashion-MNIST resnet8 student distilled from a trained resnet20 teacher vs the same
           student trained alone with the same epochs and seed, 3 seeds (mean); full epochs.
- fm:      the trained resnet20 with Tucker-2 at 2x fewer MACs (energy rank allocation, BatchNorm
           re-estimated), then 2 full fine-tune epochs with KD from the unfactorized model.

The teacher of `distill` and the model of `fm` is the shared cached reference
`cached_trained("resnet20", 4)` (benchmarks/_common.py: 4 epochs, SGD, seed 0), trained once.
Top-1 is on the full 10,000-image Fashion-MNIST test set unless --eval-batches caps it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from _common import CACHE, results_section  # noqa: E402

NAME = "distill_lowrank_reparam"
OUT = CACHE / "dlr"


def _save(part: str, obj: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{part}.json").write_text(json.dumps(obj, indent=2))


def _load(part: str) -> dict | None:
    p = OUT / f"{part}.json"
    return json.loads(p.read_text()) if p.exists() else None


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------- repvgg
def part_repvgg(args) -> dict:
    import edgeslim.models as M
    from edgeslim.runtimes import export_onnx
    from edgeslim.measure import bench, count_params
    from edgeslim.reparameterization import reparam

    torch.manual_seed(0)
    model = M.create("repvgg_a0").eval()
    # non-trivial BN statistics, as after training (fresh BN is the identity map)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    folded = reparam(model)
    x = torch.randn(16, 1, 28, 28, generator=g)
    with torch.no_grad():
        diff = float((folded(x) - model(x)).abs().max())
        scale = float(model(x).abs().max())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for tag, m in (("multi-branch", model), ("folded", folded)):
            p = Path(tmp) / f"{tag}.onnx"
            export_onnx(m, p, input_shape=(1, 28, 28))
            paths.append(p)
        for batch in (1, 32):
            # median over rounds of fresh sessions: one session's speed drifts more than its runs do
            per = [bench(paths, (batch, 1, 28, 28), threads=args.threads, warmup=5, runs=args.runs)
                   for _ in range(args.rounds)]
            rows.append({"batch": batch, "multi_ms": statistics.median(r[0]["median_ms"] for r in per),
                         "folded_ms": statistics.median(r[1]["median_ms"] for r in per),
                         "per_round": [[r[0]["median_ms"], r[1]["median_ms"]] for r in per]})
        torch_lat = bench([model, folded], (1, 1, 28, 28), threads=args.threads, warmup=3, runs=args.runs)
    return {"max_abs_diff": diff, "output_scale": scale, "params_multi": count_params(model),
            "params_folded": count_params(folded), "latency": rows,
            "torch_eager_b1": {"multi_ms": torch_lat[0]["median_ms"], "folded_ms": torch_lat[1]["median_ms"]},
            "runs": args.runs, "threads": args.threads, "rounds": args.rounds}


# ---------------------------------------------------------------------------- torchvision tucker
def part_tv(args) -> dict:
    from edgeslim import models
    from edgeslim.runtimes import export_onnx
    from edgeslim.core.registry import Context, run
    from edgeslim.lowrank import Tucker
    from edgeslim.measure import bench, count_macs

    out = {}
    for name in ("resnet18", "vgg16"):
        log(f"tv: {name}")
        torch.manual_seed(0)
        model = models.create(f"torchvision:{name}").eval()
        t0 = time.time()
        cfg = Tucker(target_macs=0.5, check_latency=False)
        fact, det = run(model, cfg, Context(input_shape=(3, 224, 224), progress=False))
        t_dec = time.time() - t0
        shape = (1, 3, 224, 224)
        macs0, macs1 = count_macs(model, shape)[0], count_macs(fact, shape)[0]
        with tempfile.TemporaryDirectory() as tmp:
            p0, p1 = Path(tmp) / "orig.onnx", Path(tmp) / "tucker.onnx"
            export_onnx(model, p0, input_shape=shape[1:], verify=False)
            res = export_onnx(fact, p1, input_shape=shape[1:], atol=1e-3)
            log(f"tv: {name} timing")
            lat = bench([p0, p1], shape, threads=args.threads, warmup=10, runs=args.tv_runs, rounds=3)
        n_fact = sum(r["kept"] == "factorized" for r in det["layers"])
        out[name] = {"macs": macs0, "macs_tucker": macs1, "layers_factorized": n_fact,
                     "orig_ms": lat[0]["median_ms"], "tucker_ms": lat[1]["median_ms"],
                     "orig_p90_ms": lat[0]["p90_ms"], "tucker_p90_ms": lat[1]["p90_ms"],
                     "speedup": lat[0]["median_ms"] / lat[1]["median_ms"], "decompose_s": t_dec,
                     "onnx_max_abs_diff": res["max_abs_diff"], "runs": args.tv_runs,
                     "hooi_iters": cfg.n_iter_max, "allocation": cfg.allocation}
        log(f"tv: {name} {out[name]}")
    out["threads"] = args.threads
    return out


# ---------------------------------------------------------------------------- distillation
def _teacher(args, data):
    """The shared cached resnet20 reference (trained once by benchmarks/_common.py)."""
    from _common import cached_trained

    ckpt = CACHE / f"resnet20-fashion-mnist-e{args.teacher_epochs:g}-s0-sgd-lrNone" / "checkpoint"
    deadline = time.time() + args.wait_teacher
    while not (ckpt / "edgeslim.json").exists() and time.time() < deadline:
        time.sleep(10)  # another process is training the shared reference: do not train it twice
    model, ckpt, meta = cached_trained("resnet20", args.teacher_epochs)
    return model.eval(), {"epochs": args.teacher_epochs, "checkpoint": str(ckpt.relative_to(CACHE.parent)),
                          "metrics": meta.get("metrics")}


def _students(args, data, teacher, temperature: float, alpha: float, *, alone: bool) -> list[dict]:
    """Per seed: resnet8 trained alone (if ``alone``) and distilled, from the same initial weights.
    ``teacher`` is a callable returning the teacher, called after the students trained alone."""
    from edgeslim import models
    from edgeslim.distillation import KD, distill
    from edgeslim.train import evaluate, fit, seed_everything

    rows = [{"seed": seed} for seed in range(args.seeds)]
    for row in rows if alone else []:
        seed_everything(row["seed"])
        student = models.create("resnet8", num_classes=10, in_channels=1)
        t0 = time.time()
        fit(student, data, epochs=args.student_epochs, max_batches=args.student_batches, lr=args.student_lr,
            seed=row["seed"], progress=False)
        row.update(alone=evaluate(student, data.test, max_batches=args.eval_batches)["top1"], alone_s=time.time() - t0)
        log(f"distill: alone {row}")
    t = teacher()
    for row in rows:
        seed_everything(row["seed"])
        init = models.create("resnet8", num_classes=10, in_channels=1)  # same initial weights as alone
        t0 = time.time()
        kd = distill(init, t, data, KD(temperature=temperature, alpha=alpha, epochs=args.student_epochs,
                                         lr=args.student_lr, max_batches=args.student_batches),
                     seed=row["seed"], progress=False)
        row.update(kd=evaluate(kd, data.test, max_batches=args.eval_batches)["top1"], kd_s=time.time() - t0)
        log(f"distill (T={temperature}, alpha={alpha}): {row}")
    return rows


def _eval_samples(args, data) -> int:
    n = len(data.test.dataset)
    return n if args.eval_batches is None else min(n, args.eval_batches * data.test.batch_size)


def part_distill(args) -> dict:
    import edgeslim.data

    torch.set_num_threads(args.train_threads)
    from edgeslim.train import evaluate

    data = edgeslim.data.load("fashion-mnist", seed=0)
    got: dict = {}

    def teacher():
        got["model"], got["extra"] = _teacher(args, data)
        got["top1"] = evaluate(got["model"], data.test, max_batches=args.eval_batches)["top1"]
        log(f"distill: teacher top-1 {got['top1']:.2f}")
        return got["model"]

    rows = _students(args, data, teacher, args.kd_temperature, args.kd_alpha, alone=True)
    t_acc, t_extra = got["top1"], got["extra"]
    return {"teacher_top1": t_acc, "teacher": t_extra, "rows": rows,
            "alone_mean": statistics.mean(r["alone"] for r in rows), "kd_mean": statistics.mean(r["kd"] for r in rows),
            "student_epochs": args.student_epochs, "student_batches": args.student_batches,
            "batches_per_epoch": len(data.train), "student_lr": args.student_lr,
            "eval_batches": args.eval_batches, "temperature": args.kd_temperature, "alpha": args.kd_alpha,
            "eval_samples": _eval_samples(args, data)}


def part_distill_t2(args) -> dict:
    """A second KD setting on the same seeds, initial weights and epochs (--alt-temperature/--alt-alpha)."""
    import edgeslim.data

    torch.set_num_threads(args.train_threads)

    data = edgeslim.data.load("fashion-mnist", seed=0)
    rows = _students(args, data, lambda: _teacher(args, data)[0], args.alt_temperature, args.alt_alpha, alone=False)
    return {"rows": rows, "kd_mean": statistics.mean(r["kd"] for r in rows), "temperature": args.alt_temperature,
            "alpha": args.alt_alpha, "student_batches": args.student_batches, "student_epochs": args.student_epochs}


# ---------------------------------------------------------------------------- fashion-mnist resnet20 tucker
def part_fm(args) -> dict:
    import edgeslim.data
    from edgeslim.runtimes import export_onnx
    from edgeslim.core.registry import Context, run
    from edgeslim.lowrank import Tucker
    from edgeslim.measure import bench, count_macs
    from edgeslim.train import evaluate

    torch.set_num_threads(args.train_threads)
    data = edgeslim.data.load("fashion-mnist", seed=0)
    teacher, t_extra = _teacher(args, data)

    def top1(m):
        return evaluate(m, data.test, max_batches=args.eval_batches)["top1"]

    base = top1(teacher)
    shape = (1, 1, 28, 28)
    # before fine-tuning: weights only, then with BatchNorm re-estimated, for both rank allocations
    zero_shot = {}
    for alloc, bn in (("energy", 0), ("energy", args.bn_batches), ("uniform", args.bn_batches)):
        if True:
            m, _ = run(teacher, Tucker(target_macs=0.5, check_latency=False, allocation=alloc, bn_batches=bn),
                       Context(data=data if bn else None, input_shape=shape[1:], progress=False))
            zero_shot[f"{alloc}-bn{bn}"] = {"top1": top1(m), "macs": count_macs(m, shape)[0]}
            log(f"fm: zero-shot {alloc}, bn_batches={bn}: {zero_shot[f'{alloc}-bn{bn}']}")
    cfg = Tucker(target_macs=0.5, check_latency=False, bn_batches=args.bn_batches, finetune_epochs=args.finetune_epochs,
                 finetune_distill=True, lr=args.finetune_lr)
    t0 = time.time()
    fact, det = run(teacher, cfg, Context(data=data, input_shape=shape[1:], progress=False))
    ft_s = time.time() - t0
    ft = top1(fact)
    log(f"fm: base {base:.2f}, after {args.finetune_epochs} epoch(s) of fine-tuning {ft:.2f} ({ft_s:.0f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        p0, p1 = Path(tmp) / "o.onnx", Path(tmp) / "t.onnx"
        export_onnx(teacher, p0, input_shape=shape[1:])
        export_onnx(fact, p1, input_shape=shape[1:])
        lat = bench([p0, p1], shape, threads=args.threads, warmup=5, runs=args.runs)
    # the same factorization with the per-layer ONNX Runtime check: which layers would stay?
    _, det_chk = run(teacher, Tucker(target_macs=0.5), Context(input_shape=shape[1:], progress=False))
    kept = sum(r["kept"] == "factorized" for r in det_chk["layers"])
    return {"base_top1": base, "zero_shot": zero_shot, "finetuned_top1": ft, "drop": base - ft,
            "macs": count_macs(teacher, shape)[0], "macs_tucker": count_macs(fact, shape)[0],
            "ranks": {r["layer"]: r["ranks"] for r in det["layers"] if r["kept"] == "factorized"},
            "config": cfg.to_dict(), "notes": det["notes"], "finetune_s": ft_s,
            "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr, "bn_batches": args.bn_batches,
            "batches_per_epoch": len(data.train), "eval_batches": args.eval_batches,
            "eval_samples": _eval_samples(args, data),
            "orig_ms": lat[0]["median_ms"], "tucker_ms": lat[1]["median_ms"],
            "latency_checked_layers_kept": kept, "latency_checked_notes": det_chk["notes"],
            "teacher": t_extra}


# ---------------------------------------------------------------------------- report
def _cfg_call(cfg: dict) -> str:
    keep = ("target_macs", "check_latency", "bn_batches", "finetune_epochs", "finetune_distill", "lr")
    return "Tucker(" + ", ".join(f"{k}={cfg[k]!r}" for k in keep if k in cfg) + ")"


def section() -> str:
    lines = ["## Distillation, low-rank decomposition, re-parameterization (issue 5)", ""]
    d = _load("distill")
    d2 = _load("distill_t2")
    lines += ["### Fashion-MNIST distillation: resnet8 student, resnet20 teacher", ""]
    if d and d2 and (d2["student_epochs"], d2["student_batches"]) != (d["student_epochs"], d["student_batches"]):
        d2 = None  # a second KD setting from another budget is not comparable
    if d and "batches_per_epoch" in d:
        t = d["teacher"]
        per_epoch = (f"{d['student_batches']} batches of 128" if d["student_batches"]
                     else f"full epoch(s) ({d['batches_per_epoch']} batches of 128)")
        lab1 = f"T={d['temperature']:g}, alpha={d['alpha']:g}"
        lab2 = f"T={d2['temperature']:g}, alpha={d2['alpha']:g}" if d2 else ""
        lines += [f"Teacher: resnet20, the shared cached reference ({t['epochs']} epochs, SGD, seed 0; "
                  f"`{t['checkpoint']}`), test top-1 **{d['teacher_top1']:.2f}%**. Students: resnet8, "
                  f"{d['student_epochs']:g} {per_epoch}, SGD lr {d['student_lr']:g} cosine; for each seed the "
                  f"student trained alone and the distilled one start from the same weights and see the same "
                  f"batches. Top-1 on {d['eval_samples']:,} test images.", "",
                  f"| seed | resnet8 alone | distilled ({lab1}) | difference |"
                  + (f" distilled ({lab2}) | difference |" if d2 else ""),
                  "|---:|---:|---:|---:|" + ("---:|---:|" if d2 else "")]
        for i, r in enumerate(d["rows"]):
            extra = ""
            if d2 and i < len(d2["rows"]):
                k2 = d2["rows"][i]["kd"]
                extra = f" {k2:.2f} | {k2 - r['alone']:+.2f} |"
            lines.append(f"| {r['seed']} | {r['alone']:.2f} | {r['kd']:.2f} | {r['kd'] - r['alone']:+.2f} |" + extra)
        extra = (f" **{d2['kd_mean']:.2f}** | **{d2['kd_mean'] - d['alone_mean']:+.2f}** |" if d2 else "")
        lines.append(f"| **mean** | **{d['alone_mean']:.2f}** | **{d['kd_mean']:.2f}** | "
                     f"**{d['kd_mean'] - d['alone_mean']:+.2f}** |" + extra)
        for label, dd in ((lab1, d), (lab2, d2)):
            if dd:
                verdict = "beats" if dd["kd_mean"] > d["alone_mean"] else "does NOT beat"
                lines.append(f"\nDistilled with {label}: {verdict} the student trained alone "
                             f"(mean over {len(dd['rows'])} seeds, {dd['kd_mean'] - d['alone_mean']:+.2f} points).")
        lines.append("")
    else:
        lines += ["_not run yet_", ""]
    tv = _load("tv")
    lines += ["### Tucker-2 at 2x fewer MACs: torchvision models, ONNX Runtime latency", ""]
    if tv:
        lines += [f"Batch 1, 3x224x224, {tv['threads']} threads, {tv['resnet18']['runs']} runs of the original and the "
                  "factorized ONNX file in one process, one session at a time, median over 3 rounds in shuffled "
                  "order (random weights; per-layer latency "
                  "check off so that the MACs target is met).", "",
                  "| model | MACs | MACs (Tucker) | layers factorized | original ms | Tucker ms | speed-up | decomposition s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name in ("resnet18", "vgg16"):
            r = tv.get(name)
            if r is None:
                lines.append(f"| {name} | not measured | | | | | | |")
                continue
            lines.append(f"| {name} | {r['macs'] / 1e9:.2f} G | {r['macs_tucker'] / 1e9:.2f} G | {r['layers_factorized']} "
                         f"| {r['orig_ms']:.1f} | {r['tucker_ms']:.1f} | {r['speedup']:.2f}x | {r['decompose_s']:.1f} |")
        lines.append("")
        r = tv.get("resnet18", {})
        if "hooi_iters" in r:
            lines += [f"Decomposition (rank allocation, HOSVD start with TensorLy's `partial_tucker` on the PyTorch "
                      f"backend, {r['hooi_iters']} HOOI sweeps, every factor from a Gram-matrix eigendecomposition, "
                      f"one thread) is timed from the call to `factorize` to its return; ranks by "
                      f"{r['allocation']} allocation.", ""]
    else:
        lines += ["_not run yet_", ""]
    fm = _load("fm")
    lines += ["### Fashion-MNIST resnet20, Tucker-2 at 2x fewer MACs, 2 fine-tune epochs", ""]
    if fm and "zero_shot" in fm:
        z = fm["zero_shot"]
        zk = [k for k in z if k.startswith("energy-bn") and k != "energy-bn0"]
        lines += [f"The teacher above (resnet20, {fm['teacher']['epochs']} epochs), factorized to "
                  f"{fm['macs_tucker'] / fm['macs']:.3f}x of its MACs: Tucker-2 on every 3x3 conv but the stem, "
                  f"ranks by one kept-energy fraction for all layers, BatchNorm statistics re-estimated on "
                  f"{fm['bn_batches']} training batches, then {fm['finetune_epochs']:g} full fine-tune epochs "
                  f"({fm['batches_per_epoch']} batches of 128, SGD lr {fm['finetune_lr']:g} cosine, KD from the "
                  f"unfactorized model: T=4, alpha=0.9), all inside `edgeslim.factorize` "
                  f"(`{_cfg_call(fm['config'])}`). Top-1 on {fm['eval_samples']:,} test images.", "",
                  "| model | MACs | top-1 | ORT ms (batch 1) |", "|---|---:|---:|---:|",
                  f"| resnet20 | {fm['macs']:,} | {fm['base_top1']:.2f} | {fm['orig_ms']:.3f} |",
                  f"| Tucker-2, no fine-tune, original BN statistics | {z['energy-bn0']['macs']:,} | "
                  f"{z['energy-bn0']['top1']:.2f} | |"]
        for k in zk:
            lines.append(f"| Tucker-2, no fine-tune, BN re-estimated | {z[k]['macs']:,} | {z[k]['top1']:.2f} | |")
        for k in z:
            if k.startswith("uniform"):
                lines.append(f"| Tucker-2 with uniform allocation (same cost fraction per layer), no fine-tune, "
                             f"BN re-estimated | {z[k]['macs']:,} | {z[k]['top1']:.2f} | |")
        lines += [f"| **Tucker-2 + {fm['finetune_epochs']:g} epochs** | {fm['macs_tucker']:,} | "
                  f"**{fm['finetuned_top1']:.2f}** | {fm['tucker_ms']:.3f} |",
                  "", f"Drop after fine-tuning: **{fm['drop']:.2f} points** "
                  f"({'within' if fm['drop'] <= 1.0 else 'NOT within'} 1 point). Ranks (r_out x r_in): "
                  + ", ".join(f"{k} {v}" for k, v in fm["ranks"].items()) + ".", "",
                  f"With the per-layer ONNX Runtime check on (the default), {fm['latency_checked_layers_kept']} of "
                  "resnet20's 3x3 convs stay factorized: at 28x28 and 16-64 channels the three small convs of a "
                  "Tucker layer are not faster than one, so the table above (check off) shows the accuracy side of "
                  "the MACs target only.", ""]
    else:
        lines += ["_not run yet_", ""]
    rv = _load("repvgg")
    lines += ["### RepVGG-A0 (width 1.0, 28x28): multi-branch vs folded", ""]
    if rv:
        lines += [f"Max abs difference of the outputs: **{rv['max_abs_diff']:.2e}** (output scale {rv['output_scale']:.2f}); "
                  f"params {rv['params_multi']:,} -> {rv['params_folded']:,}.", "",
                  "| runtime | batch | multi-branch ms | folded ms | speed-up |", "|---|---:|---:|---:|---:|"]
        for r in rv["latency"]:
            lines.append(f"| ONNX Runtime | {r['batch']} | {r['multi_ms']:.3f} | {r['folded_ms']:.3f} | "
                         f"{r['multi_ms'] / r['folded_ms']:.2f}x |")
        te = rv["torch_eager_b1"]
        lines.append(f"| torch eager | 1 | {te['multi_ms']:.3f} | {te['folded_ms']:.3f} | {te['multi_ms'] / te['folded_ms']:.2f}x |")
        lines += ["", f"Medians of {rv['runs']} runs per file, one session at a time, {rv['threads']} threads"
                  + (f"; ONNX Runtime rows: median over {rv['rounds']} rounds of fresh sessions (speed-up per round: "
                     + "; ".join(f"batch {r['batch']}: " + ", ".join(f"{a / b:.2f}x" for a, b in r["per_round"])
                                 for r in rv["latency"] if r.get("per_round")) + ")" if rv.get("rounds") else "")
                  + ".", ""]
    else:
        lines += ["_not run yet_", ""]
    when = []
    for part in ("distill", "distill_t2", "tv", "fm", "repvgg"):
        f = OUT / f"{part}.json"
        if f.exists():
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(f.stat().st_mtime))
            cmd = _load(part).get("command")
            when.append(f"{part} {stamp}" + (f" (`{cmd}`)" if cmd else ""))
    lines += ["Each part runs on its own (`--parts NAME`) and caches its result; this section is rebuilt from "
              "the cached parts, finished: " + "; ".join(when) + ".", ""]
    lines += ["Machine: 2 CPU cores shared with other jobs during the run, so absolute times are noisy; "
              "compare only figures within one table (measured in one process, one session at a time)."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="repvgg,tv,distill,fm")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime / latency threads")
    ap.add_argument("--train-threads", type=int, default=1,
                    help="torch threads for training and evaluation (on shared cores, more threads were slower)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of fresh ONNX Runtime sessions (repvgg part)")
    ap.add_argument("--tv-runs", type=int, default=10)
    ap.add_argument("--teacher-epochs", type=float, default=4, help="epochs of the cached resnet20 reference")
    ap.add_argument("--student-epochs", type=float, default=1)
    ap.add_argument("--student-batches", type=int, default=None, help="cap batches per student epoch")
    ap.add_argument("--student-lr", type=float, default=0.05)
    ap.add_argument("--kd-temperature", type=float, default=4.0)
    ap.add_argument("--kd-alpha", type=float, default=0.5)
    ap.add_argument("--alt-temperature", type=float, default=4.0, help="KD setting of part distill_t2")
    ap.add_argument("--alt-alpha", type=float, default=0.9)
    ap.add_argument("--finetune-epochs", type=float, default=2)
    ap.add_argument("--finetune-lr", type=float, default=0.01)
    ap.add_argument("--bn-batches", type=int, default=50)
    ap.add_argument("--eval-batches", type=int, default=None, help="cap test batches (default: the full test set)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--wait-teacher", type=float, default=0, metavar="SECONDS",
                    help="wait this long for another process to finish training the cached resnet20 reference")
    ap.add_argument("--report-only", action="store_true", help="rebuild the RESULTS.md section from cached parts")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = {"repvgg": part_repvgg, "tv": part_tv, "distill": part_distill, "distill_t2": part_distill_t2,
             "fm": part_fm}
    if not args.report_only:
        for p in args.parts.split(","):
            if p not in parts:
                ap.error(f"unknown part {p!r}; choose from {', '.join(parts)}")
            log(f"part {p}")
            t0 = time.time()
            res = parts[p](args)
            res["wall_s"] = time.time() - t0
            res["command"] = "python benchmarks/distill_lowrank_reparam.py " + " ".join(sys.argv[1:])
            _save(p, res)
            results_section(NAME, section())
            log(f"part {p} done in {res['wall_s']:.0f} s")
    results_section(NAME, section())
    print(section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
