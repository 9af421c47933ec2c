"""Breadth (issue 21): every torchvision classifier and a broad set of timm families through channel
pruning at ratio 0.3, int8 PTQ and ONNX export with parity, timed in ONNX Runtime.

Per model, in its own process (a crash or hang is one failed row, never the sweep): build it with
random weights (nothing is downloaded) for 10 classes at the case's input size; prune 0.3 (L1,
per-layer) and record the MACs ratio and which groups stayed whole and why; export the fp32 original
and the pruned model to ONNX, each checked against PyTorch; quantize the pruned model (int8 PTQ, 4
calibration batches of random inputs) and export its QDQ file, checked against the simulation; time
the three files side by side (batch 1, shuffled rounds). Results are cached per model under
benchmarks/.cache/breadth/ (``--fresh`` re-measures); the RESULTS section is rendered from the cache.

    python benchmarks/breadth.py [--source torchvision|timm|all] [--models resnet18,timm:vit_tiny_patch16_224]
                                 [--threads 2] [--runs 20] [--rounds 3] [--timeout 900] [--fresh] [--report-only]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import CACHE, results_section

from edgeslim.testing.breadth import (INT8_PARITY, MIN_MACS_RATIO, PARITY_ATOL, check_model, passed, stage, timm_cases,
                                      torchvision_cases)

CACHE_DIR = CACHE / "breadth"


def measure(row: dict, spec: str, size: int, kw: dict, threads: int, runs: int, rounds: int) -> None:
    """Fill one model's ``row`` (raises on the first step that fails; ``row['stage']`` names it)."""
    import tempfile

    from edgeslim.measure import bench

    with tempfile.TemporaryDirectory() as d:
        files = check_model(row, spec, size, kw, d)
        stage(row, "latency")
        t = bench([str(files[k]) for k in ("fp32", "pruned", "int8")], (1, 3, size, size), threads=threads,
                  warmup=5, runs=runs, rounds=rounds)
        row["latency_ms"] = {k: t[i]["median_ms"] for i, k in enumerate(("fp32", "pruned", "int8"))}
    row["stage"] = "done"


def worker(argv: list[str]) -> None:
    spec, size, kw, threads, runs, rounds = argv[0], int(argv[1]), json.loads(argv[2]), *map(int, argv[3:6])
    t0 = time.time()
    row: dict = {"model": spec}
    try:
        measure(row, spec, size, kw, threads, runs, rounds)
        row["ok"] = True
    except Exception as e:  # noqa: BLE001 - the row says what failed
        import traceback

        row["ok"] = False
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        row["trace"] = traceback.format_exc()[-2000:]
    row["total_s"] = round(time.time() - t0, 1)
    stamps = row.pop("seconds", {})
    ends = sorted(stamps.values()) + [time.time()]
    row["stage_s"] = {k: round(ends[i + 1] - v, 1) for i, (k, v) in enumerate(sorted(stamps.items(), key=lambda kv: kv[1]))}
    print("ROW " + json.dumps(row), flush=True)


def _cache_file(spec: str) -> Path:
    return CACHE_DIR / (spec.replace(":", "__").replace("/", "_") + ".json")


def sweep(cases, args) -> None:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for i, (spec, size, kw, kind) in enumerate(cases):
        f = _cache_file(spec)
        if f.exists() and not args.fresh:
            continue
        cmd = [sys.executable, __file__, "--worker", spec, str(size), json.dumps(kw), str(args.threads),
               str(args.runs), str(args.rounds)]
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            line = next((ln for ln in p.stdout.splitlines() if ln.startswith("ROW ")), None)
            row = json.loads(line[4:]) if line else {
                "model": spec, "ok": False, "stage": "crash",
                "error": f"the worker exited {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1][:200]}"}
        except subprocess.TimeoutExpired:
            row = {"model": spec, "ok": False, "stage": "timeout", "error": f"over {args.timeout} s"}
        row.update(kind=kind, input=size, kwargs=kw, wall_s=round(time.time() - t0, 1))
        f.write_text(json.dumps(row, indent=1))
        status = "ok" if row["ok"] else f"FAILED at {row.get('stage')}: {row.get('error')}"
        print(f"[{i + 1}/{len(cases)}] {spec} {row['wall_s']} s {status}", flush=True)


def _kept_text(r: dict) -> str:
    if not r.get("kept"):
        return "nothing"
    return "; ".join(f"{n} x{k}" for n, k in r["kept"].items()).replace("|", "/")


def render(rows: list[dict], threads: int) -> str:
    head = ["| model | kind | input | MACs ratio | groups kept whole / all | fp32 pruned speed-up | int8 speed-up "
            "(vs pruned fp32) | fp32 -> pruned int8 | parity fp32 / pruned / int8 (rel.) | int8 top-1 agree | "
            "what is kept unpruned and why |", "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    fails = []
    for r in rows:
        if not r.get("ok"):
            fails.append(f"- `{r['model']}` ({r.get('kind')}, {r.get('input')}px): failed at {r.get('stage')}: "
                         f"{r.get('error', '').replace('|', '/')}")
            continue
        lat = r["latency_ms"]
        head.append(
            f"| `{r['model']}` | {r['kind']} | {r['input']} | {r['macs'] / r['macs_pruned']:.2f}x | "
            f"{r['groups_kept']} / {r['groups']} | {lat['fp32'] / lat['pruned']:.2f}x | {lat['pruned'] / lat['int8']:.2f}x | "
            f"{lat['fp32'] / lat['int8']:.2f}x | {r['parity_fp32']:.1e} / {r['parity_pruned']:.1e} / {r['parity_int8']:.1e} | "
            f"{r['parity_int8_top1']:.2f} | {_kept_text(r)} |")
        if r["macs"] / r["macs_pruned"] < MIN_MACS_RATIO:
            fails.append(f"- `{r['model']}`: MACs fell only {r['macs'] / r['macs_pruned']:.2f}x (< {MIN_MACS_RATIO}x)")
        if r["parity_int8"] > INT8_PARITY:
            fails.append(f"- `{r['model']}`: the int8 file differs from its simulation by {r['parity_int8']:.3f} of "
                         f"the output scale (> {INT8_PARITY})")
    summary = []
    for src in ("torchvision", "timm"):
        part = [r for r in rows if r["model"].startswith(src + ":")]
        if part:
            n = sum(passed(r) for r in part)
            summary.append(f"- {src}: **{n} of {len(part)}** ({100 * n / len(part):.0f}%) pass prune 0.3 (MACs >= 1.2x "
                           "fewer) + int8 PTQ + ONNX export with parity")
    return ("## Breadth: every torchvision classifier and the timm families through prune, int8 and export\n\n"
            "Random weights, 10 classes, batch 1. Channel pruning at ratio 0.3 (L1, per layer; a group whose removal "
            "breaks the model in a trial surgery stays whole, with the reason); the fp32 ONNX files checked against "
            f"PyTorch (max abs diff / output scale, limit {PARITY_ATOL:g}); int8 PTQ (per-channel, 32 random calibration "
            "images) of the pruned model as QDQ ONNX, checked against its simulation (max abs diff / output scale and "
            f"top-1 agreement on 4 random inputs; pass: within {INT8_PARITY:g}). Latency: ONNX Runtime, {threads} threads, the three files of a "
            "model timed side by side in shuffled rounds (median of rounds). Random inputs give random-weight models "
            "near-tied logits, so int8 top-1 agreement is a weak signal here; the relative diff is the check.\n\n"
            + "\n".join(summary) + "\n\n" + "\n".join(head)
            + ("\n\nFailures:\n\n" + "\n".join(fails) if fails else "\n\nNo failures."))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        return worker(sys.argv[2:])
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", choices=("torchvision", "timm", "all"), default="all")
    ap.add_argument("--models", default="", help="comma-separated specs (torchvision:NAME, timm:NAME) to run only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per model")
    ap.add_argument("--fresh", action="store_true", help="re-measure models already in the cache")
    ap.add_argument("--report-only", action="store_true", help="render RESULTS from the cache")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    cases = (torchvision_cases() if args.source in ("torchvision", "all") else []) + \
        (timm_cases() if args.source in ("timm", "all") else [])
    if args.models:
        want = set(args.models.split(","))
        cases = [c for c in cases if c[0] in want]
    if not args.report_only:
        sweep(cases, args)
    rows = [json.loads(_cache_file(c[0]).read_text()) for c in cases if _cache_file(c[0]).exists()]
    text = render(rows, args.threads)
    print(text)
    if not args.no_write and args.source == "all" and not args.models:
        results_section("breadth", text)


if __name__ == "__main__":
    main()
