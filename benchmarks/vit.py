"""Vision-transformer compression (issue 21) on Fashion-MNIST: vit_tiny trained here, then in one run
heads + MLP pruning to 2x fewer MACs (fine-tuned), token merging to 1.5x fewer MACs (no training) and
int8 PTQ, every result exported to ONNX, scored by running the file on the test split, and timed side
by side with the fp32 file in ONNX Runtime (batch 1, shuffled rounds of fresh sessions).

    python benchmarks/vit.py [--epochs 10] [--threads 1] [--rounds 5] [--finetune-epochs 3]
    python benchmarks/vit.py --part torchvision      # vit_b_16 / swin_t at 224: edgeslim vs Torch-Pruning
    python benchmarks/vit.py --part deit [--seeds 3 --deit-epochs 3]   # DeiT token from resnet20 vs alone

The reference is cached (benchmarks/.cache); its training is AdamW (lr 1e-3, cosine, warm-up).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cached_trained, results_section, torch_seed  # noqa: E402

SHAPE = (1, 1, 28, 28)


def _score(path, bundle) -> float:
    from edgeslim.measure.latency import onnx_accuracy

    return onnx_accuracy(path, bundle.test, threads=2)["top1"]


def _head_mlp_to(model, target: float, example):
    """(pruned copy, config): heads 1/3 and the smallest MLP ratio (tenths) keeping <= target of the MACs."""
    import edgeslim
    from edgeslim.pruning import HeadPrune
    from edgeslim.pruning.structured import macs_of

    base = macs_of(model, example)
    for mlp in (0.5, 0.6, 0.7, 0.75, 0.8, 0.9):
        cfg = HeadPrune(heads=0.34, mlp=mlp, importance="l1")
        small = edgeslim.prune(model, cfg, input_shape=SHAPE[1:], progress=False)
        if macs_of(small, example) <= target * base:
            return small, cfg
    raise SystemExit(f"heads 1/3 + MLP 0.9 does not reach {target} of the MACs")


def variants(base, bundle, args) -> list[tuple[str, object, str]]:
    """(name, model or quantized model, how) for every compressed variant."""
    import torch

    import edgeslim
    from edgeslim.pruning import TokenMerge
    from edgeslim.quantization import PTQ
    from edgeslim.train import fit
    from edgeslim.train.kd import kd_loss_fn

    example = torch.zeros(SHAPE)
    out = []
    small, cfg = _head_mlp_to(base, 0.5, example)
    torch_seed(0)
    fit(small, bundle, epochs=args.finetune_epochs, optimizer="adam", lr=args.finetune_lr, progress=False,
        loss_fn=kd_loss_fn(base, alpha=0.5, student=small))
    out.append((f"heads {cfg.heads:g} + MLP {cfg.mlp:g}, {args.finetune_epochs:g} epochs KD", small, "prune"))
    merged = edgeslim.prune(base, TokenMerge(target_macs=1 / 1.5), input_shape=SHAPE[1:], progress=False)
    out.append((f"token merging ({sum(b.merge for b in merged.blocks)} tokens), no training", merged, "tome"))
    q = edgeslim.quantize(base, PTQ(bits=8), data=bundle, progress=False)
    out.append(("int8 PTQ (minmax, per-channel)", q, "int8"))
    return out


def part_main(args) -> None:
    import edgeslim
    import edgeslim.data
    from edgeslim.measure import bench, count_macs
    from edgeslim.quantization import is_quantized

    base, ckpt, meta = cached_trained("vit_tiny", args.epochs, optimizer="adam", lr=1e-3)
    bundle = edgeslim.data.load("fashion-mnist", seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        files = [Path(d) / "fp32.onnx"]
        edgeslim.export(base, files[0], input_shape=SHAPE)
        found = variants(base, bundle, args)
        for i, (name, m, _) in enumerate(found):
            files.append(Path(d) / f"v{i}.onnx")
            edgeslim.export(m, files[-1], input_shape=SHAPE)
        t = bench([str(f) for f in files], SHAPE, threads=args.threads, runs=args.runs, rounds=args.rounds)
        base_acc, base_macs = _score(files[0], bundle), count_macs(base, SHAPE[1:])[0]
        rows.append(f"| vit_tiny fp32 ({args.epochs} epochs) | {base_macs / 1e6:.2f} | 1.00x | {base_acc:.2f} | - | "
                    f"{t[0]['median_ms']:.3f} | 1.00x | {files[0].stat().st_size / 1e6:.2f} |")
        for i, (name, m, kind) in enumerate(found):
            macs = count_macs(m if not is_quantized(m) else base, SHAPE[1:])[0]
            acc = _score(files[i + 1], bundle)
            rows.append(f"| {name} | {macs / 1e6:.2f} | {base_macs / macs:.2f}x | {acc:.2f} | {base_acc - acc:+.2f} | "
                        f"{t[i + 1]['median_ms']:.3f} | {t[0]['median_ms'] / t[i + 1]['median_ms']:.2f}x | "
                        f"{files[i + 1].stat().st_size / 1e6:.2f} |")
            print(rows[-1], flush=True)
    text = ("## Vision transformer: vit_tiny on Fashion-MNIST\n\n"
            f"vit_tiny (patch 4, width 96, 6 blocks of 3 heads, {sum(p.numel() for p in base.parameters()):,} "
            f"params) trained {args.epochs} epochs (AdamW lr 1e-3, cosine). Every row is its exported ONNX file "
            "scored on the 10,000 test images in ONNX Runtime and timed side by side with the fp32 file "
            f"(batch 1, {args.threads} thread(s), median of {args.rounds} rounds of fresh sessions in shuffled "
            "order). MACs of the int8 row are the fp32 model's (the same operations, on int8 operands).\n\n"
            "| model | MMACs | MACs ratio | test top-1 | drop | latency ms | speed-up | file MB |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    print(text)
    if not args.no_write:
        results_section("vit-tiny", text)


def part_deit(args) -> None:
    """DeiT's distillation token taught by a CNN (resnet20) against the same deit_tiny trained alone
    (both heads on the labels), same epochs, optimizer and seed; mean over seeds."""
    import edgeslim
    import edgeslim.data
    from edgeslim import models
    from edgeslim.train import fit
    from edgeslim.train.kd import kd_loss_fn

    teacher, _, tmeta = cached_trained("resnet20", 4)
    bundle = edgeslim.data.load("fashion-mnist", seed=0)
    rows, gains = [], []
    with tempfile.TemporaryDirectory() as d:
        for seed in range(args.seeds):
            alone, _, _ = cached_trained("deit_tiny", args.deit_epochs, optimizer="adam", lr=1e-3, seed=seed)
            torch_seed(seed)
            student = models.create("deit_tiny")
            fit(student, bundle, epochs=args.deit_epochs, optimizer="adam", lr=1e-3, seed=seed, progress=False,
                loss_fn=kd_loss_fn(teacher, alpha=0.5, student=student))
            accs = []
            for name, m in (("alone", alone), ("distilled", student)):
                f = Path(d) / f"{name}{seed}.onnx"
                edgeslim.export(m, f, input_shape=SHAPE)
                accs.append(_score(f, bundle))
            gains.append(accs[1] - accs[0])
            rows.append(f"| {seed} | {accs[0]:.2f} | {accs[1]:.2f} | {accs[1] - accs[0]:+.2f} |")
            print(rows[-1], flush=True)
    mean = sum(gains) / len(gains)
    text = ("## DeiT distillation token taught by a CNN\n\n"
            f"deit_tiny trained {args.deit_epochs} epochs (AdamW lr 1e-3) alone (both heads on the labels) and with "
            "DeiT's hard distillation from resnet20 (the distillation head learns the teacher's decisions, alpha 0.5; "
            f"teacher test top-1 {tmeta.get('metrics', {}).get('test_top1', float('nan')):.2f}), same seed each; the "
            "exported ONNX files scored on the test split.\n\n"
            "| seed | alone top-1 | distilled top-1 | gain |\n|---:|---:|---:|---:|\n" + "\n".join(rows)
            + f"\n\nMean gain over {len(gains)} seeds: **{mean:+.2f}** points.")
    print(text)
    if not args.no_write:
        results_section("vit-deit", text)


def _tp_prune(model, example, target: float):
    """Torch-Pruning's own transformer pruning (MetaPruner, L1, head dims of every attention, the
    classifier ignored) at the uniform ratio whose result keeps <= ``target`` of the MACs."""
    import copy

    import torch
    import torch_pruning as tp

    from edgeslim.pruning.structured import bisect_kept, macs_of

    base = macs_of(model, example)

    def pruned(r: float):
        m = copy.deepcopy(model)
        heads = {x: x.num_heads for x in m.modules() if isinstance(x, torch.nn.MultiheadAttention)}
        heads.update({x.qkv: x.num_heads for x in m.modules() if isinstance(getattr(x, "qkv", None), torch.nn.Linear)
                      and isinstance(getattr(x, "num_heads", None), int)})
        head = [x for x in m.modules() if isinstance(x, torch.nn.Linear)][-1]
        tp.pruner.MetaPruner(m, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=r,
                             ignored_layers=[head], num_heads=heads, prune_head_dims=True).step()
        return m

    r = bisect_kept(lambda r: macs_of(pruned(r), example) / base, target, 0.0, 0.9, 7)
    return pruned(r), r


def part_torchvision(args) -> None:
    """vit_b_16 and swin_t (random weights, 224): edgeslim's channel pruning (head dims, MLP, embedding)
    at 2x fewer MACs against Torch-Pruning's MetaPruner at the same MACs, timed side by side."""
    import torch

    import edgeslim
    from edgeslim import models
    from edgeslim.measure import bench
    from edgeslim.pruning import ChannelPrune
    from edgeslim.pruning.structured import macs_of

    shape, rows = (1, 3, 224, 224), []
    for name in args.models.split(","):
        model = models.create(f"torchvision:{name}").eval()
        example = torch.randn(shape)
        base = macs_of(model, example)
        ours = edgeslim.prune(model, ChannelPrune(target_macs=0.5), input_shape=shape[1:], progress=False)
        cells = {"edgeslim": ours}
        try:
            cells["Torch-Pruning"], tp_ratio = _tp_prune(model, example, 0.5)
            cells["Torch-Pruning"](example)
        except Exception as e:  # noqa: BLE001 - the peer's failure is a result
            cells.pop("Torch-Pruning", None)
            rows.append(f"| {name} | Torch-Pruning | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} | | | |")
        with tempfile.TemporaryDirectory() as d:
            files = [Path(d) / "fp32.onnx"] + [Path(d) / f"{i}.onnx" for i in range(len(cells))]
            for f, m in zip(files, [model, *cells.values()]):
                edgeslim.runtimes.export_onnx(m, f, example, atol=1e-2)
            t = bench([str(f) for f in files], shape, threads=2, runs=args.runs, rounds=args.rounds)
        rows.append(f"| {name} | fp32 | {base / 1e9:.2f} | 1.00x | {t[0]['median_ms']:.1f} | 1.00x |")
        for i, (who, m) in enumerate(cells.items()):
            macs = macs_of(m, example)
            rows.append(f"| {name} | {who} | {macs / 1e9:.2f} | {base / macs:.2f}x | {t[i + 1]['median_ms']:.1f} | "
                        f"{t[0]['median_ms'] / t[i + 1]['median_ms']:.2f}x |")
            print(rows[-1], flush=True)
    text = ("## Vision transformers at 224: edgeslim's pruning vs Torch-Pruning at 2x fewer MACs\n\n"
            "Random weights (latency does not depend on them), batch 1, 2 threads, ONNX Runtime, the files of a "
            f"model timed side by side ({args.rounds} rounds of fresh sessions). edgeslim: `ChannelPrune(target_macs=0.5)` "
            "(head dims, MLP and embedding width; groups a trial surgery shows to break the model stay whole); "
            "Torch-Pruning: MetaPruner, L1, head dims of every attention, uniform ratio bisected to the same MACs.\n\n"
            "| model | pruned by | GMACs | MACs ratio | latency ms | speed-up |\n|---|---|---:|---:|---:|---:|\n"
            + "\n".join(rows))
    print(text)
    if not args.no_write:
        results_section("vit-torchvision", text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("main", "torchvision", "deit"), default="main")
    ap.add_argument("--seeds", type=int, default=3, help="deit part: seeds")
    ap.add_argument("--deit-epochs", type=int, default=3, help="deit part: training epochs of both students")
    ap.add_argument("--models", default="vit_b_16,swin_t", help="torchvision part: which models")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=float, default=3)
    ap.add_argument("--finetune-lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    {"main": part_main, "torchvision": part_torchvision, "deit": part_deit}[args.part](args)


if __name__ == "__main__":
    main()
