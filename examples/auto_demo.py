"""edgeslim's main job, end to end: the smallest ResNet-20 for Fashion-MNIST within 0.5 points.

    python examples/auto_demo.py --out runs/auto_demo [--budget 12m] [--epochs 1]

1. train a reference ResNet-20 on Fashion-MNIST, or reuse the one cached in benchmarks/.cache/;
2. run the SLA search: `edgeslim auto` with --max-drop 0.5 --objective size and a wall-time budget;
3. print the baseline-versus-result table (test split, measured side by side in ONNX Runtime) and
   where the report, the model and the winner's recipe are.

The same as the command line:

    edgeslim auto benchmarks/.cache/resnet20-fashion-mnist-e1-s0-sgd-lrNone/checkpoint \
        --data fashion-mnist --max-drop 0.5 --objective size --budget 12m --out runs/auto_demo
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/auto_demo")
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--epochs", type=float, default=1, help="reference training epochs (cached)")
    ap.add_argument("--budget", default="12m", help="search wall time (default 12m)")
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--objective", choices=["size", "latency"], default="size")
    ap.add_argument("--val-batches", type=int, default=10, help="validation batches per trial (default 10 = 1280 images)")
    ap.add_argument("--finetune-batches", type=int, default=30, help="fine-tuning batches per epoch in a trial")
    ap.add_argument("--resume", action="store_true", help="continue the search in --out")
    args = ap.parse_args()

    import torch

    import edgeslim
    from _common import cached_trained
    from edgeslim import data as es_data

    # On a machine shared with other jobs, one intra-op thread per process trains much faster than
    # two threads that spin-wait on each other; ONNX Runtime latency is still measured with 2 threads.
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        torch.set_num_threads(1)
        print(f"machine busy (load {os.getloadavg()[0]:.1f}): training with 1 torch thread")
    t0 = time.time()
    epochs = int(args.epochs) if float(args.epochs).is_integer() else args.epochs  # cache key e1, not e1.0
    model, ckpt, meta = cached_trained(args.model, epochs)
    m = meta.get("metrics", {})
    print(f"reference {args.model} ({ckpt}): test top-1 {m.get('test_top1', float('nan')):.2f}%, "
          f"val top-1 {m.get('val_top1') or float('nan'):.2f}%  [{time.time() - t0:.0f}s]")
    data = es_data.load("fashion-mnist")
    out = Path(args.out)
    if out.exists() and not args.resume:
        shutil.rmtree(out)  # a fresh study each run; --resume continues the last one
    space = {"finetune_batches": args.finetune_batches, "finetune_epochs": [0, 1, 2]}
    res = edgeslim.auto(model, data, max_drop=args.max_drop, objective=args.objective, budget=args.budget,
                        out=out, space=space, resume=args.resume, spec=meta["spec"], build=meta.get("build"),
                        model_name=f"{args.model} (Fashion-MNIST, {args.epochs:g} epochs)",
                        val_batches=args.val_batches)
    print()
    if not res.feasible:
        print("no policy met the SLA within the budget: the baseline is kept")
    print(res.report.table())
    r = res.report.ratios
    print(f"\n{r['size'] or 0:.1f}x smaller, {r['latency'] or 0:.1f}x faster in ONNX Runtime; "
          f"test accuracy drop {res.report.accuracy_drop or 0:.2f} points (SLA: {args.max_drop} on validation, as a "
          f"lower bound at confidence {res.report.details['sla']['confidence']:g})")
    print(f"report: {out / 'report.html'} (and report.md)  model: {out / 'model.onnx'}"
          + (f"  recipe: {out / 'winner.yaml'}" if res.feasible else ""))
    print(f"total {time.time() - t0:.0f}s")
    return 0 if res.feasible else 1


if __name__ == "__main__":
    from edgeslim.core.errors import EdgeslimError

    try:
        sys.exit(main())
    except EdgeslimError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        sys.exit(e.exit_code)
