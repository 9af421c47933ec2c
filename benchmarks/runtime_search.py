"""The same SLA search run for two runtimes, then each winner timed on both (issue 18).

    python benchmarks/runtime_search.py                       # resnet20, onnxruntime vs openvino
    python benchmarks/runtime_search.py --budget 12m --no-write
    python benchmarks/runtime_search.py --report-only          # re-render the saved measurements

For each runtime R: `edgeslim.auto(..., runtime=R, max_drop, max_latency, threads)` times and scores
every candidate in R. Then every winner is exported to every runtime and timed there beside that
runtime's fp32 baseline (one bench call per runtime: one session at a time, the median over rounds
of fresh sessions in shuffled order), and scored on the full test split by running the artifact.
The table shows whether each runtime's winner meets the limit on its own runtime, how it fares on
the other, and how the two policies differ. The reference model is benchmarks/_common.cached_trained.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def search(rt: str, model, meta, data, args, work: Path, log) -> dict:
    """One search on runtime ``rt``; its winner model and the facts the table needs."""
    import edgeslim

    out = work / rt
    shutil.rmtree(out, ignore_errors=True)
    t = time.time()
    res = edgeslim.auto(model, data, max_drop=args.max_drop, max_latency=_limit(args), objective=args.objective,
                        threads=args.threads,
                        budget=args.budget, runtime=rt, out=out, spec=meta["spec"], build=meta.get("build"),
                        model_name=args.model, log=log)
    d = res.report.details
    return {"model": res.model, "runtime": rt, "feasible": res.feasible, "best_trial": res.best_trial,
            "policy": d.get("policy_text") or "the baseline (no feasible policy)", "seconds": time.time() - t,
            "trials": len(d.get("trials", [])), "own_report": {k: res.report.to_dict()[k] for k in ("baseline", "result")},
            "sla": d.get("sla", {}).get("min_val_accuracy")}


def _limit(args):
    return None if str(args.max_latency).lower() == "none" else args.max_latency


def cross(winners: list[dict], model, data, args) -> list[dict]:
    """Every winner on every runtime beside that runtime's fp32 baseline: speed-up, size, test top-1."""
    from edgeslim import metrics, runtimes
    from edgeslim.measure import artifact_size, bench

    example = next(iter(data.test))[0][:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rt_name in args.runtimes:
            rt = runtimes.get(rt_name)
            paths = [Path(tmp) / f"fp32-{rt_name}{rt.suffix}"]
            rt.export(model, paths[0], example)
            for w in winners:
                paths.append(Path(tmp) / f"winner-{w['runtime']}-on-{rt_name}{rt.suffix}")
                rt.export(w["model"], paths[-1], example, loader=data.val)
            lat = bench(paths, example.shape, threads=args.threads, rounds=args.rounds, runs=args.runs, warmup=10)
            scores = [metrics.get("top1").evaluate(rt.load(p, threads=2), data.test).value for p in paths]
            for i, w in enumerate([None, *winners]):
                rows.append({"on": rt_name, "what": "fp32" if w is None else f"winner of {w['runtime']}",
                             "median_ms": lat[i]["median_ms"], "per_round_ms": lat[i].get("per_round_ms"),
                             "speedup": lat[0]["median_ms"] / lat[i]["median_ms"], "size_bytes": artifact_size(paths[i]),
                             "size_x": artifact_size(paths[0]) / artifact_size(paths[i]), "test_top1": scores[i],
                             "drop": scores[0] - scores[i], "runtime": lat[i]["runtime"]})
    return rows


def markdown(saved: dict, args) -> str:
    lim = float(str(args.max_latency).rstrip("x")) if str(args.max_latency).endswith("x") else None
    out = [f"Fashion-MNIST {args.model} (reference: {saved['epochs']} epochs, test top-1 {saved['ref_top1']:.2f}%), "
           f"`edgeslim auto --max-drop {args.max_drop}"
           + (f" --max-latency {args.max_latency}" if _limit(args) else "") + f" --objective {getattr(args, 'objective', 'size')}"
           f" --threads {args.threads} "
           f"--budget {args.budget} --runtime R` for each R. Then each winner exported to each runtime and timed "
           f"there beside that runtime's fp32 file in one bench call (batch 1, {args.threads} thread, median over "
           f"{args.rounds} rounds of fresh sessions in shuffled order, {args.runs} runs each), and scored on the "
           "10,000 test images by running the artifact.", "",
           "| search on | feasible | policy | trials | search s |", "|---|---|---|---:|---:|"]
    for w in saved["winners"]:
        out.append(f"| {w['runtime']} | {'yes' if w['feasible'] else 'no'} | {w['policy']} | {w['trials']} | "
                   f"{w['seconds']:.0f} |")
    out += ["", "| timed on | model | median ms | speed-up vs fp32 | per-round ms | size bytes | x smaller | test top-1 "
                "| drop | meets the limit |", "|---|---|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in saved["rows"]:
        meets = "–" if r["what"] == "fp32" or lim is None else (
            "yes" if r["speedup"] >= lim and r["drop"] <= args.max_drop else
            f"no ({r['speedup']:.2f}x, drop {r['drop']:.2f})")
        rounds = ", ".join(f"{v:.3f}" for v in r["per_round_ms"] or [])
        out.append(f"| {r['on']} | {r['what']} | {r['median_ms']:.3f} | {r['speedup']:.2f}x | {rounds} | "
                   f"{r['size_bytes']:,} | {r['size_x']:.2f}x | {r['test_top1']:.2f} | {r['drop']:.2f} | {meets} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=int, default=4, help="reference training epochs (cached)")
    ap.add_argument("--runtimes", default="onnxruntime,openvino")
    ap.add_argument("--budget", default="15m", help="search wall time per runtime")
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--max-latency", default="3x", help="ms, Nx, or none (no latency limit)")
    ap.add_argument("--objective", default="size", choices=("size", "latency"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    args.runtimes = args.runtimes.split(",")
    from _common import CACHE, cached_trained, results_section, this_command, utc_stamp

    tag = "" if args.max_latency == "3x" else f"-lat{args.max_latency}"  # the limit keeps the plain name
    tag += "" if args.objective == "size" else f"-{args.objective}"
    work = CACHE / "runtime_search" / f"{args.model}-t{args.threads}{tag}"
    saved_path = work / "saved.json"
    if not args.report_only:
        from edgeslim import data as es_data
        from edgeslim.core.io import atomic_write_text

        log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
        data = es_data.load("fashion-mnist")
        model, _, meta = cached_trained(args.model, args.epochs)
        work.mkdir(parents=True, exist_ok=True)
        winners = [search(rt, model, meta, data, args, work, log) for rt in args.runtimes]
        rows = cross(winners, model, data, args)
        saved = {"winners": [{k: v for k, v in w.items() if k != "model"} for w in winners], "rows": rows,
                 "epochs": args.epochs, "ref_top1": meta["metrics"].get("test_top1"), "command": this_command(),
                 "stamp": utc_stamp(), "args": {k: v for k, v in vars(args).items()}}
        atomic_write_text(saved_path, json.dumps(saved, indent=1, default=str))
    saved = json.loads(saved_path.read_text())
    text = markdown(saved, argparse.Namespace(**{**saved["args"], "runtimes": saved["args"]["runtimes"]}))
    print(text)
    if not args.no_write:
        results_section(f"runtime-search-{saved['args']['model']}{tag}", text, command=saved["command"],
                        stamp=saved["stamp"])
    return 0


if __name__ == "__main__":
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        print("note: the machine is busy; latency ratios are measured side by side, but noisier", file=sys.stderr)
    sys.exit(main())
