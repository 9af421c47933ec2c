"""Detection and segmentation under an SLA in their own metric (issue 19), and a user metric steering a search.

    python benchmarks/tasks.py --part detection       # tinydet on fashion-mnist-detect, --metric map --max-drop 1.0
    python benchmarks/tasks.py --part segmentation    # tinyseg on fashion-mnist-seg, --metric miou --max-drop 1.0
    python benchmarks/tasks.py --part user            # tinydet, a recall-at-threshold function of the user's as metric
    python benchmarks/tasks.py --part detection --report-only

For a task part: the zoo model trained on the embedded data (benchmarks/_common.cached_trained), then in
one run: the fp32 ONNX file, int8 PTQ alone, channel pruning alone (+ fine-tuning, the largest ratio of
--prune-ratios whose validation figure meets the SLA) and `edgeslim.auto(metric=..., max_drop=...)`. Every
file is scored by running it in ONNX Runtime on the test split and timed side by side (batch 1, 1 thread,
median over rounds of fresh sessions in shuffled order).

The user part: `edgeslim.auto(metric=recall_at_score)` with a plain Python function (the recall of the
test boxes by detections of the same class at score >= 0.3 and IoU >= 0.5); the SLA is in its points.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

TASKS = {"detection": ("tinydet", "fashion-mnist-detect", "map"),
         "segmentation": ("tinyseg", "fashion-mnist-seg", "miou"),
         "user": ("tinydet", "fashion-mnist-detect", None)}


def recall_at_score(predict, loader, score: float = 0.3, iou: float = 0.5) -> float:
    """% of ground-truth boxes found by a detection of their class with score >= ``score`` and IoU >=
    ``iou`` (the runner gives every output: boxes, scores, labels of one image)."""
    import numpy as np
    import torch
    from torchvision.ops import box_iou

    found = total = 0
    for x, targets in loader:
        for i, t in enumerate(targets):
            boxes, scores, labels = (np.asarray(o) for o in predict(x[i:i + 1].numpy())[:3])
            keep = scores >= score
            total += len(t["labels"])
            if not keep.any() or not len(t["labels"]):
                continue
            m = box_iou(t["boxes"].float(), torch.as_tensor(boxes[keep], dtype=torch.float32)) >= iou
            m &= t["labels"][:, None] == torch.as_tensor(labels[keep])[None, :]
            found += int(m.any(1).sum())
    return 100.0 * found / max(total, 1)


def metric_of(args):
    from edgeslim import metrics

    if args.part == "user":
        return metrics.from_callable(recall_at_score, name="recall@0.3", outputs="all")
    return metrics.get(TASKS[args.part][2])


def _onnx(model, path: Path, shape, loader=None) -> Path:
    """The model's ONNX file (its int8 QDQ file when it is a quantization simulation), built once."""
    import torch

    from edgeslim import runtimes

    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        runtimes.get("onnxruntime").export(model, path, torch.zeros(shape), loader=loader)
    return path


def pruned(model, data, args, metric, sla, work: Path, shape, log):
    """Channel pruning alone + fine-tuning (full epochs, the search's optimizer and rate): the largest
    ratio whose validation figure meets the SLA."""
    from edgeslim.measure.profile import artifact_score
    from edgeslim.search.recipe import load_recipe, run_steps

    kept = last = None
    for ratio in args.prune_ratios:
        path = work / f"prune-{ratio}.onnx"
        if not path.is_file():  # the search's fine-tuning (optimizer, rate), for the whole training split
            steps, _ = load_recipe({"steps": [{"type": "channel_prune", "ratio": ratio, "round_to": 8},
                                              {"type": "finetune", "epochs": args.single_epochs,
                                               "lr": args.finetune_lr, "optimizer": args.finetune_optimizer}]})
            _onnx(run_steps(model, steps, data=data, input_shape=shape[1:]).model, path, shape)
        val = artifact_score(path, data.val, metric=metric, threads=2).value
        log(f"pruning alone, ratio {ratio}: val {val:.2f} (SLA {sla:.2f})")
        last = (ratio, path)
        if val < sla:
            break
        kept = (ratio, path)
    return kept, last


def search(model, data, meta, metric, args, work: Path, log) -> tuple[dict, bool]:
    """``edgeslim.auto`` into work/auto (its report's details, whether a policy was feasible); with
    --reuse-search a finished search there is read back instead of run again."""
    import edgeslim

    report = work / "auto" / "report.json"
    if args.reuse_search and report.is_file():
        d = json.loads(report.read_text())["details"]
        log(f"reusing the finished search in {report.parent}")
        return d, d.get("best_trial") is not None
    shutil.rmtree(work / "auto", ignore_errors=True)
    space = {"finetune_optimizer": args.finetune_optimizer, "finetune_lr": args.finetune_lr}
    res = edgeslim.auto(model, data, metric=metric, max_drop=args.max_drop, budget=args.budget, threads=args.threads,
                        out=work / "auto", spec=meta["spec"], build=meta.get("build"), model_name=spec_of(args), log=log,
                        space=space)
    return res.report.details, res.feasible


def spec_of(args) -> str:
    return TASKS[args.part][0]


def run_part(args, log) -> dict:
    import edgeslim
    from _common import CACHE, cached_trained
    from edgeslim import data as es_data
    from edgeslim.quantization import PTQ

    spec, data_name, _ = TASKS[args.part]
    data_name = args.data or data_name
    metric = metric_of(args)
    model, _, meta = cached_trained(spec, args.epochs, data=data_name, optimizer=args.optimizer, lr=args.lr)
    data = es_data.load(data_name)
    shape = (1, *data.meta.input_shape)
    work = CACHE / "tasks" / f"{args.part}-{data_name.replace(':', '_')}"
    work.mkdir(parents=True, exist_ok=True)
    log(f"== {spec} on {data_name}: reference {meta['metrics']}")
    d, feasible = search(model, data, meta, metric, args, work, log)
    sla = d["sla"]["min_val_accuracy"]
    arts = {"fp32 baseline": _onnx(model, work / "fp32.onnx", shape), "auto": work / "auto" / "model.onnx"}
    if args.part != "user":
        arts["int8 PTQ alone"] = _onnx(edgeslim.quantize(model, PTQ(), data=data), work / "int8.onnx", shape,
                                       data.val)
        kept, last = pruned(model, data, args, metric, sla, work, shape, log)
        name, path = (f"pruning {kept[0]} + fine-tuning", kept[1]) if kept else (
            f"pruning {last[0]} + fine-tuning (misses the SLA)", last[1])
        arts[name] = path
    return {"part": args.part, "spec": spec, "data": data_name, "metric": metric.name, "ref": meta["metrics"],
            "epochs": args.epochs, "sla": sla, "t_auto": d["search_seconds"], "budget": args.budget,
            "max_drop": args.max_drop, "policy": d.get("policy_text") or "the baseline (no feasible policy)",
            "feasible": feasible,
            "trials": len(d.get("trials", [])), "rows": measure(arts, data, metric, args),
            "finetune": f"{args.finetune_optimizer} lr {args.finetune_lr:g}", "single_epochs": args.single_epochs,
            "artifacts": {k: str(v) for k, v in arts.items()}}


def measure(arts: dict, data, metric, args) -> list[dict]:
    from edgeslim.measure import artifact_size, bench
    from edgeslim.measure.profile import artifact_score

    names, paths = list(arts), list(arts.values())
    lat = bench(paths, (1, *data.meta.input_shape), threads=args.threads, rounds=args.rounds, runs=args.runs,
                warmup=10)
    rows = []
    for name, path, t in zip(names, paths, lat):
        s = artifact_score(path, data.test, metric=metric, threads=2)
        rows.append({"method": name, "size_bytes": artifact_size(path), "median_ms": t["median_ms"],
                     "per_round_ms": t.get("per_round_ms"), "test": s.value, "extra": dict(s.extra)})
    return rows


def markdown(saved: dict) -> str:
    rows, base = saved["rows"], saved["rows"][0]
    m = saved["metric"]
    extra_keys = sorted({k for r in rows for k in r["extra"]})
    ref = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in saved["ref"].items() if v is not None)
    singles = (f"; pruning alone trains {saved.get('single_epochs', 2):g} full epochs" if saved["part"] != "user" else "")
    out = [f"{saved['spec']} trained {saved['epochs']:g} epochs (Adam) on `{saved['data']}` (reference: {ref}). "
           f"`edgeslim.auto(metric={m!r}, max_drop={saved['max_drop']}, threads=1, budget={saved['budget']!r})`: SLA "
           f"validation {m} >= {saved['sla']:.2f}; {saved['trials']} trials in {saved['t_auto'] / 60:.1f} min; winner: "
           f"{saved['policy']}. Fine-tuning: {saved.get('finetune', 'sgd lr 0.05')} (the search picks its epochs{singles}). "
           "Every row is the ONNX file run in ONNX Runtime on the test split; latency batch 1, 1 "
           "thread, one session at a time, median over rounds of fresh sessions in shuffled order.", "",
           "| " + " | ".join(["method", "size bytes", "x smaller", "median ms", "x faster", f"test {m}", "drop",
                              *extra_keys]) + " |",
           "|---|" + "---:|" * (6 + len(extra_keys))]
    for r in rows:
        cells = [r["method"], f"{r['size_bytes']:,}", f"{base['size_bytes'] / r['size_bytes']:.2f}x",
                 f"{r['median_ms']:.3f}", f"{base['median_ms'] / r['median_ms']:.2f}x", f"{r['test']:.2f}",
                 f"{base['test'] - r['test']:+.2f}", *(f"{r['extra'].get(k, float('nan')):.2f}" for k in extra_keys)]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", verdicts(saved)]
    return "\n".join(out)


def verdicts(saved: dict) -> str:
    rows = {r["method"]: r for r in saved["rows"]}
    base, auto = rows["fp32 baseline"], rows["auto"]
    drop = base["test"] - auto["test"]
    said = [f"auto {base['size_bytes'] / auto['size_bytes']:.2f}x smaller (target 4x), "
            f"{base['median_ms'] / auto['median_ms']:.2f}x faster (target 2x), test drop {drop:.2f} "
            f"(SLA {saved['max_drop']})"]
    if saved["part"] == "user":
        return (f"A function of the user's (`recall_at_score` in benchmarks/tasks.py) steered the search: the SLA, "
                f"every trial's score and the final test figure are its value; the winner is "
                f"{base['size_bytes'] / auto['size_bytes']:.2f}x smaller and {base['median_ms'] / auto['median_ms']:.2f}x "
                f"faster, test drop {drop:.2f} (SLA {saved['max_drop']}).")
    ok = [base["size_bytes"] / auto["size_bytes"] >= 4, base["median_ms"] / auto["median_ms"] >= 2,
          drop <= saved["max_drop"]]
    singles = [r for n, r in rows.items() if n not in ("fp32 baseline", "auto")]
    ok.append(all(auto["size_bytes"] < r["size_bytes"] for r in singles))
    said.append("smaller than " + " and ".join(r["method"] for r in singles) + (": met" if ok[-1] else ": NOT met"))
    int8 = rows.get("int8 PTQ alone")
    if int8:
        d8 = base["test"] - int8["test"]
        ok.append(d8 <= 0.5)
        said.append(f"int8 PTQ test drop {d8:.2f} (target <= 0.5)")
    return f"Targets: {'; '.join(said)} -> " + ("**all met**" if all(ok) else "**not all met**") + "."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=sorted(TASKS), default="detection")
    ap.add_argument("--epochs", type=float, default=10, help="reference training epochs (cached)")
    ap.add_argument("--optimizer", default="adam", help="reference training optimizer")
    ap.add_argument("--lr", type=float, default=0.002, help="reference training learning rate")
    ap.add_argument("--data", help="another form of the part's data (e.g. fashion-mnist-detect:64:600:200 for a quick run)")
    ap.add_argument("--budget", default="20m", help="search wall time")
    ap.add_argument("--max-drop", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--finetune-optimizer", default="adam", help="the search space's fine-tuning optimizer")
    ap.add_argument("--finetune-lr", type=float, default=0.001, help="the search space's fine-tuning rate")
    ap.add_argument("--prune-ratios", default="0.3,0.5,0.7")
    ap.add_argument("--single-epochs", type=float, default=2, help="fine-tuning epochs of pruning alone")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--reuse-search", action="store_true", help="read back a finished search instead of running it")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.prune_ratios = [float(r) for r in args.prune_ratios.split(",")]
    from _common import CACHE, results_section, this_command, utc_stamp
    from edgeslim.core.io import atomic_write_text

    saved_path = CACHE / "tasks" / f"{args.part}-{(args.data or TASKS[args.part][1]).replace(':', '_')}.json"
    if not args.report_only:
        saved = {**run_part(args, lambda s: print(s, file=sys.stderr, flush=True)), "command": this_command(),
                 "stamp": utc_stamp()}
        atomic_write_text(saved_path, json.dumps(saved, indent=1, default=str))
    saved = json.loads(saved_path.read_text())
    text = markdown(saved)
    print(text)
    if not args.no_write:
        results_section(f"tasks-{saved['part']}", text, command=saved["command"], stamp=saved["stamp"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
