"""`edgeslim quantize MODEL --data D --bits 8 --calibration entropy --out DIR [--json]`.

Writes DIR/model.onnx (the deployable file), DIR/baseline.onnx (the fp32 export of the same
model), DIR/report.json + report.md (baseline = fp32 ONNX, result = quantized ONNX, latencies
measured side by side in this run) and, where the weights changed, DIR/checkpoint/.
"""
from __future__ import annotations

from pathlib import Path

from ..cli_common import (metric_of, score_change, add_data_args, add_runtime_arg, add_measure_args, add_model_args, add_output_args, emit, input_paths,
                          input_shape, load_data, load_model, nonneg_float, out_dir, output_options, positive_float,
                          positive_int, text_file)

METHODS = ("ptq", "qat", "dynamic", "fp16", "bf16", "kmeans", "pow2", "ternary", "binary")


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize (PTQ, QAT, dynamic, fp16, low-bit) and export ONNX",
                       description="Quantize a model and write the deployable ONNX file with a report.")
    add_model_args(p)
    add_data_args(p)
    add_output_args(p)
    add_measure_args(p)
    add_runtime_arg(p)
    p.add_argument("--method", choices=METHODS, default="ptq", help="default ptq")
    p.add_argument("--bits", type=int, default=None, help="weights and activations (default 8; low-bit formats "
                                                          "have their own defaults)")
    p.add_argument("--weight-bits", type=int, help="weight bits (default --bits)")
    p.add_argument("--act-bits", type=int, help="activation bits (default --bits)")
    p.add_argument("--calibration", default="minmax", help="minmax | ema | percentile | entropy | mse")
    p.add_argument("--weight-observer", default="minmax", help="minmax | mse (weights, per channel)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor instead of per channel")
    p.add_argument("--calib-batches", type=positive_int, default=8, help="calibration batches (default 8)")
    p.add_argument("--adaround", action="store_true", help="learn weight rounding (for 4-bit weights)")
    p.add_argument("--adaround-iters", type=positive_int, default=1000, help="AdaRound optimisation steps per layer")
    p.add_argument("--data-free", action="store_true", help="weights only, no data: equalization + bias correction")
    p.add_argument("--mixed-precision", type=text_file, metavar="FILE", help='JSON/YAML {"layer regex": bits or null}')
    p.add_argument("--epochs", type=nonneg_float, default=1.0, help="QAT / low-bit fine-tuning epochs")
    p.add_argument("--lr", type=positive_float, help="QAT / fine-tuning learning rate")
    p.add_argument("--train-batches", type=positive_int, help="cap training batches per epoch")
    p.add_argument("--frozen-ranges", action="store_true", help="QAT: keep calibrated ranges (no LSQ)")
    p.add_argument("--sensitivity", action="store_true", help="also rank layers by the accuracy lost when only "
                                                              "that layer is quantized")
    p.set_defaults(func=run)


def _bitmap(path: str | None):
    if not path:
        return ()
    import yaml

    from ..core.errors import UsageError

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"mixed-precision file {path!r} not found")
    try:
        m = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"cannot parse {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(m, dict):
        raise UsageError(f"{path} must hold a mapping {{\"layer regex\": bits or null}}")
    return tuple(m.items())


def build_config(args):
    from .dynamic import Dynamic, Half
    from .nonuniform import LowBit
    from .ptq import PTQ
    from .qat import QAT

    bits = args.bits if args.bits is not None else 8
    common = dict(weight_bits=args.weight_bits, act_bits=args.act_bits, per_channel=not args.per_tensor,
                  mixed_precision=_bitmap(args.mixed_precision))
    if args.method == "ptq":
        return PTQ(bits=bits, calibration=args.calibration, weight_observer=args.weight_observer,
                   calib_batches=args.calib_batches, adaround=args.adaround, adaround_iters=args.adaround_iters,
                   data_free=args.data_free, **common)
    if args.method == "qat":
        return QAT(bits=bits, calibration=args.calibration, calib_batches=args.calib_batches, epochs=args.epochs,
                   lr=args.lr, max_batches=args.train_batches, learn_ranges=not args.frozen_ranges, **common)
    if args.method == "dynamic":
        return Dynamic(bits=bits, per_channel=not args.per_tensor)
    if args.method in ("fp16", "bf16"):
        return Half(dtype=args.method)
    return LowBit(format=args.method, bits=args.bits, epochs=args.epochs if args.data else 0.0, lr=args.lr,
                  max_batches=args.train_batches)


def run(args) -> int:
    import torch

    from ..core.errors import DataError
    from ..output import single_step, staged, write_result
    from ..core.registry import Context, run as run_config

    cfg = build_config(args)  # options and the layer map are checked before anything is loaded
    from ..runtimes import check_exportable

    check_exportable(cfg, args.runtime)  # the runtime has a path for this format, before any work
    if not args.data and args.method in ("ptq", "qat") and not args.data_free:
        raise DataError(f"--method {args.method} needs calibration data", hint="pass --data, or use --data-free")
    data = load_data(args)
    model, info = load_model(args, data)
    shape = input_shape(args, info, model)
    torch.set_num_threads(args.threads)
    q, details = run_config(model, cfg, Context(data=data, progress=not args.json))
    # quantize keeps its own per-layer table (bits per layer) where the method makes one
    opts = output_options(args, info, layer_table=False)
    with staged(out_dir(args), input_paths(args)) as (out, stage):
        _export_and_check(args, model, q, data, cfg, details, shape, stage / opts.artifact)
        saver = None  # the writer's rule: a quantized result has no float checkpoint
        if args.method in _FLOAT_CHECKPOINT and info.get("spec"):
            saver = lambda ckpt: _save_checkpoint(q, ckpt, info, details)  # noqa: E731
        report = write_result(stage, model, single_step(q, cfg, float_model=model, quantized=True), opts, data=data,
                              input_shape=shape, extra_details=details, artifact=stage / opts.artifact,
                              checkpoint=saver)
    emit(args, report.to_dict(), _text(report.to_dict(), out))
    return 0


# methods whose result has float weights that reproduce it (QAT's latent weights, low-bit values dequantized)
_FLOAT_CHECKPOINT = ("qat", "kmeans", "pow2", "ternary", "binary", "fp16", "bf16")


def _export_and_check(args, model, q, data, cfg, details, shape, path) -> None:
    """Export the quantized model as ``path`` (the runtime's deployable file, int8 where the method
    is) and check its parity with the simulation (what the runtime compiled it to, integer or float,
    the writer reports); rank layers by sensitivity when asked."""
    import torch

    from .. import runtimes
    from .onnx_qdq import parity
    from .ptq import calibration_batches

    test = (data.test or data.val) if data is not None else None
    example = calibration_batches(data, 1)[0][:2] if data is not None else torch.randn(2, *shape[1:])
    rt = runtimes.get(args.runtime)
    rt.export(q, path, example, loader=test)
    checks = [example] + ([x for x, _ in [next(iter(test))]] if test is not None else [])
    details["export_parity"] = parity(q, rt.load(path, threads=args.threads), checks)
    for f in details.get("float_layers", []):
        details.setdefault("notes", []).append(f"{f['layer']} ({f['type']}) stays float: {f['why']}")
    labelled = bool(data is not None and data.meta.labelled and test is not None)
    if args.sensitivity and labelled and args.method == "ptq":
        from .sensitivity import sensitivity

        details["sensitivity"] = sensitivity(model, cfg, data, loader=test, max_batches=args.max_batches or 10)


def _save_checkpoint(q, ckpt, info, details) -> list[str]:
    """Float weights that reproduce the result (QAT: the trained latent weights; low-bit: dequantized);
    the notes of why not."""
    from .. import models
    from ..core.errors import EdgeslimError
    from ..reparameterization.fold_bn import fold_bn
    from .deploy import float_model, quant_record

    try:
        ref = models.create(info["spec"], **(info.get("build") or {}))
        ref = fold_bn(ref.eval(), inplace=True)
        f = float_model(q)
        sd = {k: v for k, v in f.state_dict().items() if k in ref.state_dict()}
        missing = [k for k in ref.state_dict() if k not in sd]
        if missing:
            return [f"checkpoint not written: structure differs ({missing[0]}...)"]
        ref.load_state_dict(sd)
        models.save(ref, ckpt, spec=info["spec"], input_shape=info["input_shape"], build=info.get("build"),
                    classes=info.get("classes"), extra={"quantization": quant_record(q)})
        details["checkpoint"] = ckpt.name
        return []
    except EdgeslimError as e:
        return [f"checkpoint not written: {e.message}"]


def _text(d: dict, out) -> str:
    b, r, rt = d["baseline"], d["result"], d["ratios"]
    det = d["details"]
    if "weight_bits" in det:
        what = f"W{det['weight_bits']}A{det['act_bits'] or 'fp32'}"
    else:
        what = det.get("format") or det.get("dtype") or "dynamic int8"
    lines = [f"quantized {d['model']} ({what})"]
    if out is not None:
        lines.append(f"wrote {out}/{r['artifact']}, {out}/report.json")
    lines.append(f"size {b['size_bytes']:,} -> {r['size_bytes']:,} bytes ({rt['size']:.2f}x smaller)")
    lines.append(f"latency {b['latency_ms']:.3f} -> {r['latency_ms']:.3f} ms ({rt['latency']:.2f}x faster, "
                 f"{r['threads']} threads, batch {r['batch']})")
    if b.get("accuracy") is not None:
        sim = det.get("simulated_accuracy")
        lines.append(score_change(d, b["accuracy"], r["accuracy"], tail=" deployed" + (
            f" (simulated {sim:.2f}{'%' if metric_of(d) in ('top1', 'top5') else ''})" if sim is not None else "")))
    if det.get("estimated_size_bytes"):
        lines.append(f"size at the format's real bit cost (estimate): {det['estimated_size_bytes']:,} bytes "
                     f"({b['size_bytes'] / det['estimated_size_bytes']:.1f}x smaller than the fp32 file)")
    kernels = det.get("kernels") or {}
    if kernels.get("integer"):
        lines.append(f"integer kernels in {kernels['runtime']}: "
                     + ", ".join(f"{k} x{v}" for k, v in kernels["integer"].items()))
    for n in det.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
