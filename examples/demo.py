"""The end-to-end job `make demo` runs: train (or reuse) LeNet-5 on Fashion-MNIST, profile it, export it to
ONNX with verification, and print the report table.

    python examples/demo.py --out runs/demo
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgeslim import data as es_data
from edgeslim import models
from edgeslim.core.errors import EdgeslimError
from edgeslim.core.report import Report
from edgeslim.measure import profile
from edgeslim.train import evaluate, fit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--retrain", action="store_true", help="ignore a cached checkpoint")
    args = ap.parse_args()
    out = Path(args.out)
    data = es_data.load("fashion-mnist")
    ckpt = out / "checkpoint"
    if (ckpt / "edgeslim.json").exists() and not args.retrain:
        model, meta = models.load(ckpt)
        print(f"reusing {ckpt} (test top-1 {meta['metrics']['test_top1']:.2f}%)")
    else:
        model = models.create("lenet5", num_classes=data.meta.num_classes, in_channels=data.meta.input_shape[0])
        print(f"training LeNet-5 on Fashion-MNIST for {args.epochs:g} epochs ...", flush=True)
        fit(model, data, epochs=args.epochs, log=print)
        test = evaluate(model, data.test)["top1"]
        models.save(model, ckpt, spec="lenet5", input_shape=data.meta.input_shape, classes=data.meta.classes,
                    metrics={"test_top1": test, "epochs": args.epochs})
    shape = (1, *data.meta.input_shape)
    # profile exports to out/model.onnx, verifies it against PyTorch (random and real inputs), then times
    # and scores the exported file in ONNX Runtime
    fig = profile(model, shape, onnx_path=out / "model.onnx", loader=data.test, threads=2)
    exported, layers = fig.pop("export"), fig.pop("layers")
    fig.pop("memory_access")
    print(f"exported {exported['path']}: max abs diff vs PyTorch {exported['max_abs_diff']:.1e}, "
          f"top-1 agreement {exported['top1_agreement'] * 100:.1f}%")
    report = Report(command="demo", model="lenet5", data="fashion-mnist", result=fig,
                    details={"split": "test", "export": exported,
                             "layers": [{k: r[k] for k in ("name", "type", "params", "macs")} for r in layers]})
    report.write(out)
    print()
    print(report.table())
    print(f"\nreport: {out / 'report.md'}  model: {out / 'model.onnx'}  checkpoint: {ckpt}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except EdgeslimError as e:
        print(f"error: {e.message}" + (f"\n  hint: {e.hint}" if e.hint else ""), file=sys.stderr)
        sys.exit(e.exit_code)
