"""`edgeslim export MODEL --out m.onnx`: export, check and verify in ONNX Runtime."""
from __future__ import annotations

from ..cli_common import (add_data_args, add_model_args, emit, input_shape, load_data, load_model, opset, parse_shape,
                          positive_float)


def register(sub) -> None:
    p = sub.add_parser("export", help="export to ONNX and verify it in ONNX Runtime")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--out", required=True, metavar="FILE.onnx")
    p.add_argument("--input-shape", type=parse_shape, metavar="N,C,H,W")
    p.add_argument("--opset", type=opset, help="ai.onnx opset to target (default 17; the range this install "
                                                "exports and ONNX Runtime runs is checked)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension")
    p.add_argument("--atol", type=positive_float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..core.errors import UsageError
    from .onnx_export import onnx_export as export_onnx

    if not args.out.endswith(".onnx"):
        raise UsageError(f"--out must name an .onnx file, got {args.out!r}")
    data = load_data(args)
    model, info = load_model(args, data)
    shape = input_shape(args, info, model)
    res = export_onnx(model, args.out, input_shape=shape, dynamic_batch=not args.static_batch, opset=args.opset,
                      loader=data.test if data is not None else None, atol=args.atol)
    agree = res["top1_agreement"]
    emit(args, res, f"wrote {res['path']} ({res['size_bytes']:,} bytes, opset {res['opset']})\n"
                    f"verified in ONNX Runtime: max abs diff {res['max_abs_diff']:.2e}"
                    + (f", top-1 agreement {agree * 100:.1f}%" if agree is not None else ""))
    return 0
