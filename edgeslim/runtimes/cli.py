"""`edgeslim export MODEL --out m.onnx [--runtime NAME]`: the deployable artifact of a runtime, verified in it."""
from __future__ import annotations

from ..cli_common import (add_data_args, add_model_args, emit, input_shape, load_data, load_model, opset, parse_shape,
                          positive_float)


def register(sub) -> None:
    from . import names

    p = sub.add_parser("export", help="export to a runtime's artifact (ONNX by default) and verify it there")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="FILE", help="FILE.onnx (onnxruntime), .xml (openvino), "
                                                                  ".tflite (litert), .pte (executorch)")
    p.add_argument("--runtime", choices=[n for n in names() if n != "torch"], default="onnxruntime",
                   help="the runtime that deploys it (default onnxruntime)")
    p.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W")
    p.add_argument("--opset", type=opset, help="ai.onnx opset to target (default 17; the range this install "
                                                "exports and ONNX Runtime runs is checked)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension")
    p.add_argument("--atol", type=positive_float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import UsageError
    from . import _SUFFIXES
    from .onnx_export import onnx_export as export_onnx

    suffix = _SUFFIXES[args.runtime]
    if not args.out.endswith(suffix):
        raise UsageError(f"--out must name a {suffix} file for --runtime {args.runtime}, got {args.out!r}")
    if args.runtime != "onnxruntime" and (args.opset or args.static_batch):
        raise UsageError("--opset and --static-batch are options of the ONNX export (--runtime onnxruntime)")
    data = load_data(args)
    model, info = load_model(args, data)
    shape = input_shape(args, info, model)
    if args.runtime != "onnxruntime":
        return _other_runtime(args, model, shape, data)
    res = export_onnx(model, args.out, input_shape=shape, dynamic_batch=not args.static_batch, opset=args.opset,
                      loader=data.test if data is not None else None, atol=args.atol)
    agree = res["top1_agreement"]
    emit(args, res, f"wrote {res['path']} ({res['size_bytes']:,} bytes, opset {res['opset']})\n"
                    f"verified in ONNX Runtime: max abs diff {res['max_abs_diff']:.2e}"
                    + (f", top-1 agreement {agree * 100:.1f}%" if agree is not None else ""))
    return 0


def _other_runtime(args, model, shape, data) -> int:
    from . import export

    res = export(model, args.out, runtime=args.runtime, input_shape=shape,
                 loader=data.test if data is not None else None)
    diff = res.get("max_abs_diff")
    emit(args, res, f"wrote {res['path']} ({res['size_bytes']:,} bytes)\nverified in {args.runtime}"
                    + (f": max abs diff {diff:.2e}" if diff is not None else ""))
    return 0

