"""Deep Compression on Fashion-MNIST: LeNet-300-100 and LeNet-5, next to the paper's MNIST figures.

    .venv/bin/python benchmarks/deep_compression.py [--quick]

Trains the reference models once (cached under benchmarks/.cache/), runs the three stages
(pruning + retraining, weight sharing + centroid fine-tuning, Huffman coding into .esz),
decodes each .esz from disk and re-measures its accuracy, and writes its section of
benchmarks/RESULTS.md. Out DIRs (model.esz, report.json, ...) land in
benchmarks/.cache/deep_compression/<model>-out/.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
CACHE = ROOT / ".cache" / "deep_compression"  # out DIRs; reference models live in _common's cache
SECTION = "deep_compression"

# reference training (cached): SGD lr 0.05, cosine schedule, seed 0
TRAIN_EPOCHS = {"lenet300": 5, "lenet5": 3}

# Per-layer rates in the spirit of the paper's tables 2 and 3 (LeNet-300-100 keeps 8% / 9% / 26%,
# LeNet-5 keeps 66% / 12% / 8% / 19%), bits as the paper (conv 8, fc 5-6), 5-bit relative indices.
CONFIGS = {
    "lenet300": dict(prune={"1": 0.93, "3": 0.91, "5": 0.74}, bits={"fc": 5}, index_bits=5,
                     prune_steps=3, prune_epochs=6, lr=0.05, finetune_epochs=1),
    "lenet5": dict(prune={"conv1": 0.34, "conv2": 0.85, "fc1": 0.94, "fc2": 0.81}, bits={"conv": 8, "fc": 5},
                   index_bits=5, prune_steps=2, prune_epochs=4, lr=0.05, finetune_epochs=0.5),
}
PAPER = {  # Han et al. 2016, table 1 (MNIST)
    "lenet300": {"name": "LeNet-300-100", "ratio": 40, "baseline_err": 1.64, "compressed_err": 1.58, "kb": 27},
    "lenet5": {"name": "LeNet-5", "ratio": 39, "baseline_err": 0.80, "compressed_err": 0.74, "kb": 44},
}


def trained(spec: str, data=None) -> tuple[torch.nn.Module, Path]:
    """The reference model: SGD (lr 0.05, cosine), seed 0, trained once and cached by benchmarks/_common."""
    from benchmarks._common import cached_trained

    model, ckpt, _ = cached_trained(spec, TRAIN_EPOCHS[spec])
    return model.eval(), Path(ckpt)


def run_one(spec: str, data, quick: bool) -> dict:
    from edgeslim.codec import DeepCompress, decode_file, deep_compress
    from edgeslim.train import evaluate

    model, ckpt = trained(spec, data)
    kw = dict(CONFIGS[spec])
    if quick:
        kw["max_batches"] = 40
    cfg = DeepCompress(**kw)
    out = CACHE / f"{spec}-out"
    t = time.time()
    small, report = deep_compress(model, cfg, data=data, spec=spec, out=out, progress=False,
                                  model_name=str(ckpt), data_name="fashion-mnist")
    seconds = time.time() - t
    decoded, _ = decode_file(out / "model.esz")
    decoded_acc = evaluate(decoded, data.test)["top1"]
    exact = all(torch.equal(decoded.state_dict()[k], v) for k, v in small.state_dict().items())
    d = report.to_dict()
    print(f"  [{spec}] {d['ratios']['size']:.1f}x, top-1 {d['baseline']['accuracy']:.2f} -> "
          f"{d['result']['accuracy']:.2f} (decoded {decoded_acc:.2f}) in {seconds:.0f}s", flush=True)
    return {"spec": spec, "report": d, "decoded_acc": decoded_acc, "exact": exact, "seconds": seconds,
            "config": cfg.to_dict(), "out": out}


def markdown(results: list[dict], seconds: float) -> str:
    from edgeslim.core.report import machine_info

    m = machine_info(torch.get_num_threads())
    lines = [
        "## Deep Compression (pruning + trained weight sharing + Huffman) — `edgeslim deepcompress`",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; machine: {m['cpu']}, "
        f"{m['cores']} cores (shared with other jobs), {torch.get_num_threads()} torch thread(s), torch {m['torch']}, "
        f"{m['runtime']}",
        f"- run time: {seconds / 60:.1f} min (reference models come from the benchmarks/.cache training cache)",
        "- data: Fashion-MNIST (test split, 10,000 images); the paper's figures are on MNIST",
        "- size: the whole `model.esz` file (codebooks, Huffman tables and streams, float biases, architecture "
        "sidecar, header, CRC) against the fp32 weights (4 bytes per parameter)",
        "",
        "| model | fp32 weights | pruning | + quantization | + Huffman | whole .esz | ratio (target ≥ 40x) "
        "| top-1 before | top-1 after | drop (target ≤ 0.5) | decoded .esz top-1 | paper (MNIST) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        d = r["report"]
        st = {s["stage"]: s for s in d["details"]["stages"]}
        p = PAPER[r["spec"]]
        ok_ratio = "✓" if d["ratios"]["size"] >= 40 else "✗"
        ok_drop = "✓" if d["accuracy_drop"] <= 0.5 else "✗"
        same = "= reported" if r["decoded_acc"] == d["result"]["accuracy"] and r["exact"] else "**differs**"
        lines.append(
            f"| {p['name']} | {st['fp32']['size_bytes']:,} B | {st['pruning']['ratio']:.1f}x "
            f"| {st['quantization']['ratio']:.1f}x | {st['huffman']['ratio']:.1f}x | {st['esz file']['size_bytes']:,} B "
            f"| **{d['ratios']['size']:.1f}x** {ok_ratio} | {d['baseline']['accuracy']:.2f}% | {d['result']['accuracy']:.2f}% "
            f"| {d['accuracy_drop']:.2f} {ok_drop} | {r['decoded_acc']:.2f}% ({same}) "
            f"| {p['ratio']}x, top-1 error {p['baseline_err']}% → {p['compressed_err']}% |")
    lines += ["", "Stage ratios are cumulative sizes against fp32 (pruning: fp32 values + relative indices; "
              "quantization: fixed-width codebook indices + relative indices + codebooks; Huffman: the coded "
              "streams + tables + codebooks), counting the float biases in every stage.", ""]
    for r in results:
        d = r["report"]
        st = {s["stage"]: s for s in d["details"]["stages"]}
        p = PAPER[r["spec"]]
        lines += [f"### {p['name']}: per layer (as the paper's tables 2 and 3)", "",
                  f"config: `{_cfg(r['config'])}`; pipeline time {r['seconds']:.0f} s; "
                  f"top-1 after each stage: pruned {st['pruning']['accuracy']:.2f}%, quantized "
                  f"{st['quantization']['accuracy_before_finetune']:.2f}% → fine-tuned {st['quantization']['accuracy']:.2f}%, "
                  f"Huffman (decoded) {st['huffman']['accuracy']:.2f}%", "",
                  "| layer | weights | kept | weight bits (P+Q) | weight bits (P+Q+H) | index bits (P+Q) "
                  "| index bits (P+Q+H, per weight) | fillers | fp32 | after pruning | after quantization | after Huffman | ratio |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in d["details"]["layers"]:
            lines.append(
                f"| {row['layer']} | {row['weights']:,} | {row['kept_pct']:.1f}% | {row['bits']} | {row['huffman_weight_bits']} "
                f"| {_ibits(row)} | {row['huffman_index_bits'] or '–'} | {row['fillers']} "
                f"| {row['fp32_bytes']:,} | {row['pruned_bytes']:,} | {row['quantized_bytes']:,} | {row['huffman_bytes']:,} "
                f"| {row['ratio']:.1f}x |")
        lines.append(f"| total (weights kept {100 * d['details']['weights_kept'] / d['details']['weights_total']:.1f}%) "
                     f"| {d['details']['weights_total']:,} | | | | | | | {st['fp32']['size_bytes']:,} "
                     f"| {st['pruning']['size_bytes']:,} | {st['quantization']['size_bytes']:,} "
                     f"| {st['huffman']['size_bytes']:,} | {st['huffman']['ratio']:.1f}x |")
        lines.append("")
    return "\n".join(lines)


def _ibits(row: dict) -> str:
    if not row["index_bits"]:
        return "–"
    return f"{row['index_bits']} ({row['index_bits_per_weight']}/weight with fillers)"


def _cfg(c: dict) -> str:
    keep = ("prune", "bits", "index_bits", "prune_epochs", "prune_steps", "finetune_epochs", "max_batches")
    return ", ".join(f"{k}={c[k]}" for k in keep if c.get(k) is not None)


def write_section(text: str) -> None:
    from benchmarks._common import results_section

    results_section(SECTION, text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lenet300,lenet5")
    ap.add_argument("--train-only", action="store_true", help="only train (and cache) the reference models")
    ap.add_argument("--quick", action="store_true", help="cap retraining at 40 batches per epoch")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()
    from edgeslim import data as D

    # one intra-op thread: on a shared 2-core machine two threads per process mostly wait on each other
    torch.set_num_threads(args.threads)
    t0 = time.time()
    fm = D.load("fashion-mnist", batch_size=128)
    specs = [s for s in args.models.split(",") if s]
    if args.train_only:
        for spec in specs:
            trained(spec, fm)
        return
    results = [run_one(spec, fm, args.quick) for spec in specs]
    text = markdown(results, time.time() - t0)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
