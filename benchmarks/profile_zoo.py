"""Foundation benchmark: latency of reference models in torch eager and in ONNX Runtime.

For each model: params, MACs, and the median / p90 latency in both runtimes measured in
one process (2 threads, batch 1), with the ratio ONNX Runtime / torch.

    python benchmarks/profile_zoo.py [--runs 50] [--threads 2]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import results_section

from edgeslim import models
from edgeslim.runtimes import export_onnx
from edgeslim.measure import bench, count_macs, count_params

MODELS = [("lenet300", (1, 1, 28, 28)), ("lenet5", (1, 1, 28, 28)), ("resnet20", (1, 1, 28, 28)),
          ("torchvision:resnet18", (1, 3, 224, 224)), ("torchvision:mobilenet_v2", (1, 3, 224, 224)),
          ("torchvision:resnet50", (1, 3, 224, 224))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    rows = ["| model | input | params | MACs | torch median ms (p90) | ONNX Runtime median ms (p90) | ORT / torch |",
            "|---|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for spec, shape in MODELS:
            m = models.create(spec, in_channels=shape[1]).eval()
            path = Path(tmp) / "m.onnx"
            export_onnx(m, path, input_shape=shape)
            t, o = bench([m, path], shape, threads=args.threads, warmup=args.warmup, runs=args.runs)
            line = (f"| {spec} | {'x'.join(map(str, shape))} | {count_params(m):,} | {count_macs(m, shape)[0]:,} | "
                    f"{t['median_ms']:.3f} ({t['p90_ms']:.3f}) | {o['median_ms']:.3f} ({o['p90_ms']:.3f}) | "
                    f"{o['median_ms'] / t['median_ms']:.2f} |")
            print(line, flush=True)
            rows.append(line)
    text = ("## Profile: torch eager vs ONNX Runtime\n\n"
            f"Batch 1, {args.threads} threads, {args.runs} timed runs after {args.warmup} warm-up, the two runtimes "
            "in one process, one at a time. Randomly initialised weights (latency does not depend on them).\n\n"
            + "\n".join(rows))
    results_section("profile_zoo", text)


if __name__ == "__main__":
    main()
