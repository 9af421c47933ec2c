"""What each format of the search's policy space turns into on each runtime (issue 18).

    python benchmarks/runtime_formats.py                 # resnet20 and mobilenetv2_tiny, every runtime
    python benchmarks/runtime_formats.py --models resnet20 --runtimes onnxruntime,openvino --no-write

For each model and runtime: fp32, W8A8 and W4A8 (edgeslim PTQ, per-channel weights) exported as that
runtime's file, sized on disk, timed side by side in one bench call (batch 1, one session at a time,
median over rounds of fresh sessions in shuffled order), and described by the runtime itself (its
integer and float compute operators, ``Runtime.kernels``). A runtime whose int8 path takes only 8-bit
weights (``Runtime.weight_bits``) says so in the table; the search leaves that choice out there (a W4A8 the
runtime cannot deploy at all is listed under the table with its reason).
Weights are the cached 1-epoch references (benchmarks/_common.cached_trained): size and speed do not
depend on how well a model is trained.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

FORMATS = {"fp32": None, "W8A8": {"bits": 8}, "W4A8": {"bits": 8, "weight_bits": 4}}


def _kernel_text(k: dict) -> str:
    parts = []
    for side in ("integer", "float"):
        if k.get(side):
            parts.append(f"{side}: " + ", ".join(f"{op} {n}" for op, n in sorted(k[side].items())))
    if k.get("delegated"):
        d = k["delegated"]
        parts.append("delegated: " + (", ".join(f"{n} x{c}" for n, c in d.items()) if isinstance(d, dict) else f"{d} node(s)"))
    return "; ".join(parts) or "–"


def measure(spec: str, rt_name: str, data, args, skipped: list[str]) -> list[dict]:
    import edgeslim
    from edgeslim import runtimes
    from edgeslim.measure import artifact_size, bench
    from edgeslim.core.errors import EdgeslimError
    from edgeslim.quantization import PTQ
    from _common import cached_trained

    model, _, _ = cached_trained(spec, 1)
    rt = runtimes.get(rt_name)
    example = next(iter(data.test))[0][:1]
    names, paths = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, q in FORMATS.items():
            m = model if q is None else edgeslim.quantize(model, PTQ(calib_batches=8, **q), data=data, progress=False)
            try:
                rt.export(m, Path(tmp) / f"{name}{rt.suffix}", example, loader=data.val)
            except EdgeslimError as e:  # the runtime has no path for this format: said, not measured
                skipped.append(f"{spec} {name} on {rt_name}: {e.message}")
                continue
            paths.append(Path(tmp) / f"{name}{rt.suffix}")
            names.append(name)
        lat = bench(paths, example.shape, threads=args.threads, rounds=args.rounds, runs=args.runs, warmup=10)
        rows = []
        for name, p, t in zip(names, paths, lat):
            bits = (FORMATS[name] or {}).get("weight_bits", 8)
            rows.append({"model": spec, "runtime": t["runtime"], "format": name, "size_bytes": artifact_size(p),
                         "median_ms": t["median_ms"], "kernels": _kernel_text(rt.kernels(p, threads=args.threads)),
                         "offered": FORMATS[name] is None or bits in rt.weight_bits})
    for r in rows:
        r["size_x"] = rows[0]["size_bytes"] / r["size_bytes"]
        r["speedup"] = rows[0]["median_ms"] / r["median_ms"]
    return rows


def markdown(rows: list[dict], skipped: list[str], args) -> str:
    out = [f"Each format of the search's space on each runtime (batch 1, {args.threads} thread(s), one session at a "
           f"time, median over {args.rounds} rounds of fresh sessions in shuffled order, {args.runs} runs each; sizes "
           "are the artifact's bytes, IR = .xml + .bin). `kernels` is what the runtime reports it compiled.", "",
           "| model | runtime | format | size bytes | x smaller | median ms | x faster | in auto's space | kernels |",
           "|---|---|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['runtime']} | {r['format']} | {r['size_bytes']:,} | {r['size_x']:.2f}x | "
                   f"{r['median_ms']:.3f} | {r['speedup']:.2f}x | {'yes' if r['offered'] else 'no'} | {r['kernels']} |")
    out += [""] + [f"- not deployable: {s}" for s in skipped]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,mobilenetv2_tiny")
    ap.add_argument("--runtimes", default="onnxruntime,openvino,litert,executorch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from edgeslim import data as es_data
    from _common import results_section

    data = es_data.load("fashion-mnist")
    skipped: list[str] = []
    rows = [r for spec in args.models.split(",") for rt in args.runtimes.split(",")
            for r in measure(spec, rt, data, args, skipped)]
    text = markdown(rows, skipped, args)
    print(text)
    if not args.no_write:
        results_section("runtime-formats", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
