"""Distillation, low-rank decomposition and re-parameterization: the numbers of issue 5.

    python benchmarks/distill_lowrank_reparam.py [--parts repvgg,tv,distill,fm] [--quick]

Parts (each caches its result in benchmarks/.cache/dlr/<part>.json; the RESULTS.md section is
rebuilt from every cached part, so parts can run separately):

- repvgg:  repvgg_a0 multi-branch vs folded: max abs difference and ONNX Runtime latency of both.
- tv:      torchvision resnet18 and vgg16, Tucker-2 at 2x fewer MACs: ORT latency of original and
           factorized, measured interleaved in one run (random weights: latency does not depend on them).
- distill: Fashion-MNIST resnet8 student distilled from a trained resnet20 teacher vs the same
           student trained alone with the same batches, 3 seeds; the teacher is cached.
- fm:      the trained resnet20 with Tucker-2 at 2x fewer MACs, then 2 fine-tune epochs.

Training budgets are small (batches per epoch are capped, see the flags) because this runs on 2
shared CPU cores; the section records exactly what was run.
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
    from edgeslim.export import onnx as export_onnx
    from edgeslim.measure import bench, count_params
    from edgeslim.reparam import reparam

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
            lat = bench(paths, (batch, 1, 28, 28), threads=args.threads, warmup=5, runs=args.runs)
            rows.append({"batch": batch, "multi_ms": lat[0]["median_ms"], "folded_ms": lat[1]["median_ms"]})
        torch_lat = bench([model, folded], (1, 1, 28, 28), threads=args.threads, warmup=3, runs=args.runs)
    return {"max_abs_diff": diff, "output_scale": scale, "params_multi": count_params(model),
            "params_folded": count_params(folded), "latency": rows,
            "torch_eager_b1": {"multi_ms": torch_lat[0]["median_ms"], "folded_ms": torch_lat[1]["median_ms"]},
            "runs": args.runs, "threads": args.threads}


# ---------------------------------------------------------------------------- torchvision tucker
def part_tv(args) -> dict:
    from edgeslim import models
    from edgeslim.export import onnx as export_onnx
    from edgeslim.lowrank import Tucker, factorize_with_details
    from edgeslim.measure import bench, count_macs

    out = {}
    for name in ("resnet18", "vgg16"):
        log(f"tv: {name}")
        torch.manual_seed(0)
        model = models.create(f"torchvision:{name}").eval()
        t0 = time.time()
        fact, det = factorize_with_details(model, Tucker(target_macs=0.5, check_latency=False),
                                           input_shape=(3, 224, 224), progress=False)
        t_dec = time.time() - t0
        shape = (1, 3, 224, 224)
        macs0, macs1 = count_macs(model, shape)[0], count_macs(fact, shape)[0]
        with tempfile.TemporaryDirectory() as tmp:
            p0, p1 = Path(tmp) / "orig.onnx", Path(tmp) / "tucker.onnx"
            export_onnx(model, p0, input_shape=shape[1:], verify=False)
            res = export_onnx(fact, p1, input_shape=shape[1:], atol=1e-3)
            log(f"tv: {name} timing")
            lat = bench([p0, p1], shape, threads=args.threads, warmup=3, runs=args.tv_runs)
        n_fact = sum(r["kept"] == "factorized" for r in det["layers"])
        out[name] = {"macs": macs0, "macs_tucker": macs1, "layers_factorized": n_fact,
                     "orig_ms": lat[0]["median_ms"], "tucker_ms": lat[1]["median_ms"],
                     "orig_p90_ms": lat[0]["p90_ms"], "tucker_p90_ms": lat[1]["p90_ms"],
                     "speedup": lat[0]["median_ms"] / lat[1]["median_ms"], "decompose_s": t_dec,
                     "onnx_max_abs_diff": res["max_abs_diff"], "runs": args.tv_runs}
        log(f"tv: {name} {out[name]}")
    out["threads"] = args.threads
    return out


# ---------------------------------------------------------------------------- distillation
def _teacher(args, data):
    from edgeslim import models
    from edgeslim.train import fit, seed_everything

    ckpt = CACHE / f"dlr-resnet20-teacher-b{args.teacher_batches}-e{args.teacher_epochs}" / "checkpoint"
    if (ckpt / "edgeslim.json").exists():
        model, meta = models.load(ckpt)
        return model, meta["extra"]
    seed_everything(0)
    model = models.create("resnet20", num_classes=10, in_channels=1)
    log(f"distill: training resnet20 teacher ({args.teacher_epochs} epoch(s) x {args.teacher_batches} batches)")
    t0 = time.time()
    fit(model, data, epochs=args.teacher_epochs, max_batches=args.teacher_batches, lr=0.05, seed=0, progress=False)
    extra = {"train_s": time.time() - t0, "epochs": args.teacher_epochs, "batches_per_epoch": args.teacher_batches}
    models.save(model, ckpt, spec="resnet20", build={"num_classes": 10, "in_channels": 1}, input_shape=(1, 28, 28),
                classes=data.meta.classes, extra=extra)
    return model.eval(), extra


def part_distill(args) -> dict:
    import edgeslim.data
    from edgeslim import models
    from edgeslim.distill import KD, distill
    from edgeslim.train import evaluate, fit, seed_everything

    data = edgeslim.data.load("fashion-mnist", seed=0)
    teacher, t_extra = _teacher(args, data)
    t_acc = evaluate(teacher, data.test, max_batches=args.eval_batches)["top1"]
    log(f"distill: teacher top-1 {t_acc:.2f}")
    rows = []
    for seed in range(args.seeds):
        seed_everything(seed)
        alone = models.create("resnet8", num_classes=10, in_channels=1)
        seed_everything(seed)
        init = models.create("resnet8", num_classes=10, in_channels=1)
        t0 = time.time()
        fit(alone, data, epochs=args.student_epochs, max_batches=args.student_batches, lr=0.05, seed=seed,
            progress=False)
        t_alone = time.time() - t0
        t0 = time.time()
        kd = distill(init, teacher, data, KD(temperature=4.0, alpha=0.9, epochs=args.student_epochs, lr=0.05,
                                               max_batches=args.student_batches), seed=seed, progress=False)
        t_kd = time.time() - t0
        a = evaluate(alone, data.test, max_batches=args.eval_batches)["top1"]
        k = evaluate(kd, data.test, max_batches=args.eval_batches)["top1"]
        rows.append({"seed": seed, "alone": a, "kd": k, "alone_s": t_alone, "kd_s": t_kd})
        log(f"distill: seed {seed}: alone {a:.2f}, KD {k:.2f}")
    return {"teacher_top1": t_acc, "teacher": t_extra, "rows": rows,
            "alone_mean": statistics.mean(r["alone"] for r in rows), "kd_mean": statistics.mean(r["kd"] for r in rows),
            "student_epochs": args.student_epochs, "student_batches": args.student_batches,
            "eval_batches": args.eval_batches, "temperature": 4.0, "alpha": 0.9,
            "eval_samples": min(len(data.test.dataset), args.eval_batches * data.test.batch_size)}


def part_distill_t2(args) -> dict:
    """A second KD setting on the same seeds and batches: T=2, alpha=0.5 (more weight on the labels)."""
    import edgeslim.data
    from edgeslim import models
    from edgeslim.distill import KD, distill
    from edgeslim.train import evaluate, seed_everything

    data = edgeslim.data.load("fashion-mnist", seed=0)
    teacher, _ = _teacher(args, data)
    rows = []
    for seed in range(args.seeds):
        seed_everything(seed)
        init = models.create("resnet8", num_classes=10, in_channels=1)
        kd = distill(init, teacher, data, KD(temperature=2.0, alpha=0.5, epochs=args.student_epochs, lr=0.05,
                                               max_batches=args.student_batches), seed=seed, progress=False)
        rows.append({"seed": seed, "kd": evaluate(kd, data.test, max_batches=args.eval_batches)["top1"]})
        log(f"distill_t2: seed {seed}: KD(T=2, alpha=0.5) {rows[-1]['kd']:.2f}")
    return {"rows": rows, "kd_mean": statistics.mean(r["kd"] for r in rows), "temperature": 2.0, "alpha": 0.5,
            "student_batches": args.student_batches, "student_epochs": args.student_epochs}


# ---------------------------------------------------------------------------- fashion-mnist resnet20 tucker
def part_fm(args) -> dict:
    import edgeslim.data
    from edgeslim.lowrank import Tucker, factorize_with_details
    from edgeslim.measure import bench, count_macs
    from edgeslim.export import onnx as export_onnx
    from edgeslim.train import evaluate, fit

    data = edgeslim.data.load("fashion-mnist", seed=0)
    teacher, t_extra = _teacher(args, data)
    base = evaluate(teacher, data.test, max_batches=args.eval_batches)["top1"]
    fact, det = factorize_with_details(teacher, Tucker(target_macs=0.5, check_latency=False), input_shape=(1, 28, 28),
                                       progress=False)
    no_ft = evaluate(fact, data.test, max_batches=args.eval_batches)["top1"]
    log(f"fm: base {base:.2f}, factorized before fine-tune {no_ft:.2f}")
    fit(fact, data, epochs=2, max_batches=args.finetune_batches, lr=0.01, seed=0, progress=False)
    ft = evaluate(fact, data.test, max_batches=args.eval_batches)["top1"]
    log(f"fm: after fine-tune {ft:.2f}")
    shape = (1, 1, 28, 28)
    with tempfile.TemporaryDirectory() as tmp:
        p0, p1 = Path(tmp) / "o.onnx", Path(tmp) / "t.onnx"
        export_onnx(teacher, p0, input_shape=shape[1:])
        export_onnx(fact, p1, input_shape=shape[1:])
        lat = bench([p0, p1], shape, threads=args.threads, warmup=5, runs=args.runs)
    # the same factorization with the per-layer ONNX Runtime check: which layers would stay?
    _, det_chk = factorize_with_details(teacher, Tucker(target_macs=0.5), input_shape=(1, 28, 28), progress=False)
    kept = sum(r["kept"] == "factorized" for r in det_chk["layers"])
    return {"base_top1": base, "factorized_top1": no_ft, "finetuned_top1": ft, "drop": base - ft,
            "macs": count_macs(teacher, shape)[0], "macs_tucker": count_macs(fact, shape)[0],
            "finetune_epochs": 2, "finetune_batches": args.finetune_batches, "eval_batches": args.eval_batches,
            "orig_ms": lat[0]["median_ms"], "tucker_ms": lat[1]["median_ms"],
            "latency_checked_layers_kept": kept, "latency_checked_notes": det_chk["notes"],
            "teacher": t_extra}


# ---------------------------------------------------------------------------- report
def section() -> str:
    lines = ["## Distillation, low-rank decomposition, re-parameterization (issue 5)", ""]
    d = _load("distill")
    d2 = _load("distill_t2")
    lines += ["### Fashion-MNIST distillation: resnet8 student, resnet20 teacher", ""]
    if d:
        t = d["teacher"]
        lines += [f"Teacher resnet20: {t['epochs']} epoch(s) x {t['batches_per_epoch']} batches of 128 "
                  f"(trained once, cached), test top-1 **{d['teacher_top1']:.2f}%**. Students: "
                  f"{d['student_epochs']} epoch(s) x {d['student_batches']} batches of 128, SGD lr 0.05 cosine, "
                  f"same seed per pair; KD: T={d['temperature']}, alpha={d['alpha']}. "
                  f"Top-1 on the first {d['eval_samples']} test images.", "",
                  "| seed | resnet8 alone | distilled (T=4, alpha=0.9) | difference |"
                  + (" distilled (T=2, alpha=0.5) | difference |" if d2 else ""),
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
        if d["kd_mean"] <= d["alone_mean"]:
            lines.append(f"\nBoth students saw only {d['student_batches']} batches: in so short a schedule the soft "
                         "targets (alpha=0.9 leaves 0.1 of the loss to the labels) likely slow the student's early "
                         "progress; the target 'distilled beats alone' is not reached at this budget. Rerun with "
                         "more --student-batches where the machine allows.")
        for label, dd in (("T=4, alpha=0.9", d), ("T=2, alpha=0.5", d2)):
            if dd:
                verdict = "beats" if dd["kd_mean"] > d["alone_mean"] else "does NOT beat"
                lines.append(f"\nDistilled with {label}: {verdict} the student trained alone "
                             f"(mean over {len(dd['rows'])} seeds).")
        lines.append("")
    else:
        lines += ["_not run yet_", ""]
    tv = _load("tv")
    lines += ["### Tucker-2 at 2x fewer MACs: torchvision models, ONNX Runtime latency", ""]
    if tv:
        lines += [f"Batch 1, 3x224x224, {tv['threads']} threads, median of {tv['resnet18']['runs']} interleaved runs "
                  "(random weights; per-layer latency check off so that the MACs target is met).", "",
                  "| model | MACs | MACs (Tucker) | layers factorized | original ms | Tucker ms | speed-up |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name in ("resnet18", "vgg16"):
            r = tv.get(name)
            if r is None:
                lines.append(f"| {name} | not measured | | | | | |")
                continue
            lines.append(f"| {name} | {r['macs'] / 1e9:.2f} G | {r['macs_tucker'] / 1e9:.2f} G | {r['layers_factorized']} "
                         f"| {r['orig_ms']:.1f} | {r['tucker_ms']:.1f} | {r['speedup']:.2f}x |")
        lines.append("")
        if tv.get("note"):
            lines += [f"Note: {tv['note']}.", ""]
        dec = [f"{n} {tv[n]['decompose_s']:.0f} s" for n in ("resnet18", "vgg16") if n in tv]
        lines += [f"Tucker decomposition time on this machine (TensorLy partial_tucker, HOOI 2 iterations, "
                  f"contended cores): {', '.join(dec)}.", ""]
    else:
        lines += ["_not run yet_", ""]
    fm = _load("fm")
    lines += ["### Fashion-MNIST resnet20, Tucker-2 at 2x fewer MACs, 2 fine-tune epochs", ""]
    if fm:
        lines += [f"The distillation teacher above, factorized to {fm['macs_tucker'] / fm['macs']:.2f}x of its MACs, "
                  f"then 2 fine-tune epochs of {fm['finetune_batches']} batches (SGD lr 0.01). Top-1 on the first "
                  f"{fm['eval_batches'] * 128} test images.", "",
                  "| model | MACs | top-1 | ORT ms (batch 1) |", "|---|---:|---:|---:|",
                  f"| resnet20 | {fm['macs']:,} | {fm['base_top1']:.2f} | {fm['orig_ms']:.3f} |",
                  f"| Tucker-2, no fine-tune | {fm['macs_tucker']:,} | {fm['factorized_top1']:.2f} | |",
                  f"| Tucker-2 + 2 epochs | {fm['macs_tucker']:,} | {fm['finetuned_top1']:.2f} | {fm['tucker_ms']:.3f} |",
                  "", f"Drop after fine-tuning: **{fm['drop']:.2f} points** "
                  f"({'within' if fm['drop'] <= 1.0 else 'NOT within'} 1 point). With the per-layer ONNX Runtime "
                  f"check on, {fm['latency_checked_layers_kept']} of resnet20's 3x3 convs stay factorized: at "
                  "28x28 the three small convs of a Tucker layer are not faster than one.", ""]
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
        lines += ["", f"Medians of {rv['runs']} interleaved runs, {rv['threads']} threads.", ""]
    else:
        lines += ["_not run yet_", ""]
    lines += ["Machine: 2 CPU cores shared with other jobs during the run, so absolute times are noisy; "
              "compare only figures within one table (measured interleaved in one process)."]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="repvgg,tv,distill,fm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--tv-runs", type=int, default=10)
    ap.add_argument("--teacher-epochs", type=float, default=1)
    ap.add_argument("--teacher-batches", type=int, default=150)
    ap.add_argument("--student-epochs", type=float, default=1)
    ap.add_argument("--student-batches", type=int, default=40)
    ap.add_argument("--finetune-batches", type=int, default=30)
    ap.add_argument("--eval-batches", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=3)
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
            _save(p, res)
            results_section(NAME, section())
            log(f"part {p} done in {res['wall_s']:.0f} s")
    results_section(NAME, section())
    print(section())
    return 0


if __name__ == "__main__":
    sys.exit(main())
