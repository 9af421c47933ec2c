"""Architecture search (issue 20) on Fashion-MNIST, ONNX Runtime, batch 1, 1 thread, test split.

The reference is the zoo's mobilenetv2_tiny trained for as many epochs as NAS spends in all
(supernet + fine-tuning). One supernet of the mobilenet space is trained once (the first strategy's
run; the others start from its checkpoint and its latency table, copied into their work folders),
then every strategy searches it under "no slower than mobilenetv2_tiny" (``--max-latency 1x`` with the
reference given) for the same number of scored subnets, and its winner is fine-tuned and measured
side by side with the reference in one run (the nas report). Random search at the same budget is
the baseline every strategy is compared with.

    python benchmarks/nas.py [--supernet-epochs 4] [--finetune-epochs 2] [--evaluations 150]
        [--strategies evolution,random,rl,nsga2,darts] [--rule sandwich] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import CACHE, cached_trained, results_section  # noqa: E402

SHARED = ("supernet", "latency.json")  # what a later strategy's run takes from the first one's .work


def run_strategy(name: str, ref, data, args, first: Path | None) -> dict:
    from edgeslim.nas import nas

    out = CACHE / "nas" / f"{args.tag}-{name}"
    if args.fresh or first is None:
        shutil.rmtree(out, ignore_errors=True)
    if first is not None:
        work = out / ".work"
        work.mkdir(parents=True, exist_ok=True)
        for item in SHARED:
            src, dst = first / ".work" / item, work / item
            if src.is_dir() and not dst.exists():
                shutil.copytree(src, dst)
            elif src.is_file() and not dst.exists():
                shutil.copyfile(src, dst)
    res = nas(data, model=ref, space="mobilenet", strategy=name, max_latency="1x", threads=args.threads,
              supernet_epochs=args.supernet_epochs, supernet_rule=args.rule, finetune_epochs=args.finetune_epochs,
              evaluations=args.evaluations, budget=args.budget, seed=args.seed, out=out,
              log=lambda s: print(f"[{name}] {s}", flush=True))
    r = res.report
    d = r.details
    return {"strategy": name, "out": str(out), "feasible": res.feasible, "arch": res.arch,
            "scored": d["search"]["scored"], "val_search": d["winner_val_before_finetune"],
            "val_final": d["winner_val_after_finetune"], "test": r.result["accuracy"],
            "test_ref": r.baseline["accuracy"], "ms": r.result["latency_ms"], "ms_ref": r.baseline["latency_ms"],
            "kb": r.result["size_bytes"] / 1e3, "kb_ref": r.baseline["size_bytes"] / 1e3,
            "lut_error": d["latency_table"]["median_abs_error"], "time_s": d["time_s"]}


def table(rows: list[dict], args, ref_epochs: float) -> str:
    head = (f"Reference: mobilenetv2_tiny trained {ref_epochs:g} epochs (SGD), the same total as NAS "
            f"({args.supernet_epochs:g} supernet epochs, {args.rule}, + {args.finetune_epochs:g} fine-tuning epochs "
            f"with distillation from the largest subnet). Limit: latency no higher than the reference's file "
            f"(`--max-latency 1x`, {args.threads} thread). Every strategy scores {args.evaluations} subnets of the "
            "same supernet; each winner and the reference are timed side by side in one run (ratios are of that run).\n\n"
            "| strategy | subnets scored | val (supernet) | val (fine-tuned) | test top-1 | reference test top-1 | "
            "difference (points) | latency ms (ref) | speed-up | size kB (ref) | LUT median error | meets limit |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    body = ""
    for r in rows:
        body += (f"| {r['strategy']} | {r['scored']} | {r['val_search']:.2f} | {r['val_final']:.2f} | {r['test']:.2f} | "
                 f"{r['test_ref']:.2f} | {r['test'] - r['test_ref']:+.2f} | {r['ms']:.4f} ({r['ms_ref']:.4f}) | "
                 f"{r['ms_ref'] / r['ms']:.2f}x | {r['kb']:.1f} ({r['kb_ref']:.1f}) | {r['lut_error']:.1%} | "
                 f"{'yes' if r['feasible'] else 'no'} |\n")
    first = next((r for r in rows if r.get("trains_supernet")), rows[0])["time_s"]
    split = ", ".join(f"{k[:-2].replace('_', ' ')} {v / 60:.1f} min" for k, v in first.items() if k != "total")
    arches = "\n".join(f"- {r['strategy']}: `{json.dumps(r['arch'])}`" for r in rows)
    if not any(r["strategy"] == "random" for r in rows):
        body += "\nThe random-search baseline at the same budget is not measured yet: no row compares a strategy with it.\n"
    return (head + body + f"\nTime of the first run (it trains the supernet and builds the table): "
            f"{first['total'] / 60:.1f} min in all ({split}).\n\nWinners:\n{arches}\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet-epochs", type=float, default=4)
    ap.add_argument("--finetune-epochs", type=float, default=2)
    ap.add_argument("--evaluations", type=int, default=150)
    ap.add_argument("--strategies", default="evolution,random,rl,nsga2,darts")
    ap.add_argument("--rule", default="sandwich", choices=("sandwich", "spos"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", default="3h", help="wall-time cap of each run (the evaluations bind first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fresh", action="store_true", help="retrain the supernet (else a finished one is reused)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="re-render the rows measured so far")
    args = ap.parse_args()
    args.tag = f"mobilenet-{args.rule}-e{args.supernet_epochs:g}-f{args.finetune_epochs:g}-n{args.evaluations}"
    import edgeslim.data
    import torch

    torch.set_num_threads(2)
    ref_epochs = args.supernet_epochs + args.finetune_epochs
    saved = CACHE / "nas" / f"{args.tag}-rows.json"
    rows = json.loads(saved.read_text()) if saved.is_file() else {}
    if not args.report_only:
        from edgeslim.core.io import write_json

        ref, _, _ = cached_trained("mobilenetv2_tiny", ref_epochs)
        data = edgeslim.data.load("fashion-mnist", seed=args.seed)
        first = next((Path(r["out"]) for r in rows.values() if r.get("trains_supernet")), None)
        for name in args.strategies.split(","):
            row = run_strategy(name, ref, data, args, first)
            row["trains_supernet"] = first is None
            first = first or Path(row["out"])
            rows[name] = row  # each strategy's row is kept as soon as it is measured
            write_json(saved, rows)
            print(json.dumps({k: v for k, v in row.items() if k != "arch"}), flush=True)
    order = sorted(rows.values(), key=lambda r: (not r.get("trains_supernet"), r["strategy"] != "random"))
    md = table(order, args, ref_epochs)
    print(md)
    if not args.no_write and rows:
        results_section("nas", md)


if __name__ == "__main__":
    main()
