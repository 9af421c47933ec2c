"""`edgeslim deepcompress` and `edgeslim decode`."""
from __future__ import annotations

import argparse

from ..cli_common import (add_data_args, add_measure_args, add_model_args, add_output_args, emit, input_paths,
                          input_shape, load_data, load_model, nonneg_float, out_dir, output_options, positive_float,
                          positive_int, text_file)
from ..core.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "deepcompress", help="Deep Compression: prune + weight sharing + Huffman coding into DIR/model.esz",
        description="Magnitude pruning with retraining, k-means weight sharing with centroid fine-tuning, and "
                    "Huffman coding (Han, Mao, Dally 2016). Writes DIR/model.esz, DIR/report.json|md, "
                    "DIR/checkpoint and DIR/model.onnx (dense, dequantized).")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--prune", type=_map(float), default=0.9, metavar="RATE|K=RATE,...",
                   help="fraction of weights removed per layer, e.g. 0.92 or 'conv1=0.3,conv=0.6,fc=0.92' "
                        "(keys: conv, fc, or a layer-name regex; first match wins; default 0.9)")
    p.add_argument("--bits", type=_map(int), default={"conv": 8, "fc": 5}, metavar="B|K=B,...",
                   help="codebook bits per layer (1..8), e.g. conv=8,fc=5 (default) or 6 for every layer; "
                        "a layer no key matches stays in float")
    p.add_argument("--index-bits", type=_map(int), default=5, metavar="B|K=B,...",
                   help="relative sparse-index bits (1..8) before Huffman coding (default 5)")
    p.add_argument("--prune-epochs", type=nonneg_float, default=1.0, help="retraining epochs after pruning (default 1)")
    p.add_argument("--prune-steps", type=positive_int, default=1, help="iterative pruning rounds (default 1)")
    p.add_argument("--finetune-epochs", type=nonneg_float, default=1.0, help="centroid fine-tuning epochs (default 1)")
    p.add_argument("--init", choices=["linear", "density", "random"], default="linear",
                   help="k-means centroid initialisation (default linear, as the paper)")
    p.add_argument("--lr", type=positive_float, help="retraining learning rate (SGD, cosine; default 0.05)")
    p.add_argument("--finetune-lr", type=positive_float, help="centroid fine-tuning learning rate (Adam, default 1e-4)")
    p.add_argument("--train-batches", type=positive_int, help="cap training batches per epoch (quick runs)")
    p.add_argument("--include", action="append", default=[], metavar="REGEX", help="only these layers")
    p.add_argument("--exclude", action="append", default=[], metavar="REGEX", help="skip these layers")
    p.add_argument("--config", type=text_file, metavar="YAML", help="a deep_compress config as YAML (replaces the options above)")
    add_output_args(p, out_required=True)
    add_measure_args(p)
    p.set_defaults(func=run, runs=20, warmup=5)

    d = sub.add_parser("decode", help="decode an .esz file into a normal edgeslim checkpoint",
                       description="Decode DIR/model.esz (bit-exact) and write DIR2/checkpoint "
                                   "(safetensors + sidecar) and DIR2/report.json|md.")
    d.add_argument("esz", metavar="FILE.esz", help="an .esz file, or an out DIR holding model.esz")
    d.add_argument("--spec", help="the architecture, when the .esz names a package.module:factory (a file's "
                                  "spec is never imported on its own say)")
    d.add_argument("--force", action="store_true", help="replace a DIR that already holds a model")
    add_output_args(d, out_required=True)
    d.set_defaults(func=run_decode)


def _map(cast):
    """'0.9' -> 0.9; 'conv=8,fc=5' -> {'conv': 8, 'fc': 5}; a bare value among pairs is the default."""

    def parse(text: str):
        text = text.strip()
        if "=" not in text:
            try:
                return cast(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad value {text!r}") from None
        out: dict = {}
        default = None
        for part in filter(None, (s.strip() for s in text.split(","))):
            key, eq, val = part.partition("=")
            try:
                if eq:
                    out[key.strip()] = cast(val.strip())
                else:
                    default = cast(key)
            except ValueError:
                raise argparse.ArgumentTypeError(f"bad value in {part!r}: expected KEY={cast.__name__}") from None
        if default is not None:
            out[".*"] = default
        return out

    parse.__name__ = cast.__name__
    return parse


def _config(args):
    from .pipeline import DeepCompress

    if args.config:
        from pathlib import Path

        try:
            text = Path(args.config).read_text()
        except OSError as e:
            raise UsageError(f"cannot read --config {args.config}: {e}") from None
        cfg = DeepCompress.from_yaml(text)
        if not isinstance(cfg, DeepCompress):
            raise UsageError(f"--config holds a {cfg.kind} config, not deep_compress")
        return cfg
    return DeepCompress(prune=args.prune, bits=args.bits, index_bits=args.index_bits, prune_epochs=args.prune_epochs,
                        prune_steps=args.prune_steps, finetune_epochs=args.finetune_epochs, init=args.init,
                        lr=args.lr, finetune_lr=args.finetune_lr, max_batches=args.train_batches,
                        include=tuple(args.include), exclude=tuple(args.exclude))


def run(args) -> int:
    from ..core.shapes import unbatched
    from ..output import staged
    from .pipeline import DeepCompressRun, deep_compress, write_esz

    config = _config(args)  # validate before loading anything
    data = load_data(args)
    model, info = load_model(args, data)
    shape = input_shape(args, info, model)  # a shape the model cannot take fails here, before any training
    if data is not None and not data.meta.labelled:
        note = f"{args.data} has no labels: retraining distils from the uncompressed model; accuracy is not measured"
    else:
        note = None
    classes = info.get("classes") or (list(data.meta.classes) if data is not None and data.meta.labelled else None)
    run_opts = DeepCompressRun(spec=info.get("spec"), build=info.get("build"),
                               input_shape=tuple(info.get("input_shape") or unbatched(shape)), classes=classes,
                               seed=args.seed, progress=not args.json, max_eval_batches=args.max_batches,
                               model_name=args.model, data_name=args.data)
    result, report = deep_compress(model, config, data=data, options=run_opts)
    if note:
        report.details.setdefault("notes", []).insert(0, note)
    if not info.get("spec"):
        report.details.setdefault("notes", []).append("the model has no spec: the .esz cannot rebuild it by itself")
    with staged(out_dir(args), input_paths(args)) as (out, stage):  # esz, onnx, checkpoint and report: together
        report = write_esz(stage, model, result, report, data=data, input_shape=shape,
                           options=output_options(args, info, command="deepcompress"))
    d = report.to_dict()
    lines = [f"{s['stage']:>13}: {s['size_bytes']:>10,} bytes  {s['ratio']:6.1f}x  top-1 "
             + ("–" if s["accuracy"] is None else f"{s['accuracy']:.2f}%") for s in report.details["stages"]]
    emit(args, d, "\n".join(lines) + f"\n.esz: {out / 'model.esz'} ({report.result['size_bytes']:,} bytes, "
         f"{d['ratios']['size']:.1f}x smaller than the fp32 weights)\nreport: {out / 'report.md'}")
    return 0


def run_decode(args) -> int:
    from pathlib import Path

    from ..core.report import Report, figures
    from ..measure import count_params
    from ..models import save
    from ..output import staged
    from . import container
    from .esz import decode_file

    src = Path(args.esz)
    if src.is_dir():
        src = src / "model.esz"
    model, side = decode_file(src, spec=args.spec)
    shared = container.read(src).shared
    with staged(out_dir(args), input_paths(args), force=args.force, refuse_model=True) as (out, stage):
        # checkpoint and report replace DIR's together
        ckpt = save(model, stage / "checkpoint", spec=args.spec or side["spec"], build=side.get("build"),
                    input_shape=side.get("input_shape"), classes=side.get("classes"), metrics=side.get("metrics"),
                    extra={**(side.get("extra") or {}), "decoded_from": str(src)})
        shape = side.get("input_shape")
        report = Report(command="decode", model=str(src), data=None,
                        baseline=figures(size_bytes=src.stat().st_size, artifact=src.name),
                        result=figures(params=count_params(model), size_bytes=(ckpt / "model.safetensors").stat().st_size,
                                       artifact="checkpoint/model.safetensors",
                                       input_shape=[1, *shape] if shape else None),
                        details={"shared_layers": sorted(k[: -len(".weight")] for k in shared),
                                 "notes": ["weights decoded bit-exact from the .esz (CRC-32 checked)"]})
        report.write(stage)
    ckpt = out / "checkpoint"
    emit(args, {"checkpoint": str(ckpt), "spec": side.get("spec"), "esz_bytes": src.stat().st_size,
                "shared_layers": report.details["shared_layers"]},
         f"decoded {src} -> {ckpt} ({len(shared)} weight-shared layers)")
    return 0
