"""Post-training quantization: fold BatchNorm, place quantizers, calibrate on a few batches.

    q = edgeslim.quantize(model, PTQ(bits=8, calibration="entropy"), data=data)
    edgeslim.quantization.export_qdq(q, "model.onnx", example)   # int8 QDQ that ONNX Runtime fuses

Weights are signed symmetric per output channel (int8, zero point 0); activations unsigned
affine per tensor (uint8), ONNX Runtime's U8S8 format. Bit widths below 8 are simulated on
narrower grids and stored in 8-bit containers (clipped so the file rounds as the simulation).

Data-free mode quantizes weights only, after cross-layer equalization and bias correction
(Nagel et al., 2019); AdaRound (Nagel et al., 2020) learns the rounding of low-bit weights.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable

import torch
from torch import nn

from ..core.config import Config
from ..core.errors import DataError, ModelError, UsageError
from ..core.registry import Context, register, register_export
from .deploy import record_config
from ..core.select import resolve_layer_map, select_layers
from . import graph as qgraph
from .observers import OBSERVERS, canonical
from .primitives import check_bits, sqnr_db
from .qmodules import activation_quantizer, weight_quantizer

_QUANTIZABLE = (nn.Conv2d, nn.Linear)
_NOT_INT8 = (nn.Conv1d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear)


def _bitmap(v) -> tuple:
    """{pattern: bits} / [[pattern, bits], ...] -> ((pattern, bits), ...)."""
    if v is None:
        return ()
    items = v.items() if isinstance(v, dict) else v
    out = []
    for item in items:
        try:
            p, b = item
        except (TypeError, ValueError):
            raise UsageError(f"bad mixed-precision entry {item!r}", hint='use {"layer regex": bits or null}') from None
        if b is not None:
            check_bits(b, f"bits for {p!r}")
        out.append((str(p), b))
    return tuple(out)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PTQ(Config):
    """Post-training quantization (static: weights and activations)."""

    kind = "ptq"
    final = True  # the deployable format: a recipe's last step
    bits: int = 8
    weight_bits: int | None = None  # default: bits
    act_bits: int | None = None  # default: bits
    calibration: str = "minmax"  # activations: minmax | ema | percentile | entropy | mse
    percentile: float = 99.99
    weight_observer: str = "minmax"  # minmax | mse
    per_channel: bool = True
    calib_batches: int = 8
    data_free: bool = False
    equalize: bool = True  # data-free: cross-layer equalization
    bias_correction: bool = True  # data-free: analytic bias correction from BN statistics
    adaround: bool = False
    adaround_iters: int = 1000  # per layer (AIMET uses 10,000; 500-1000 is enough on CPU here)
    layers: tuple[str, ...] = ()  # include patterns (default: every Conv2d / Linear)
    exclude: tuple[str, ...] = ()
    mixed_precision: tuple = ()  # ((pattern, bits or None), ...); None keeps a layer float
    first_last_bits: int | None = None  # e.g. 8: first and last layers (weights, inputs) stay at 8 bits
    fold_bn: bool = True

    def __post_init__(self):
        object.__setattr__(self, "mixed_precision", _bitmap(self.mixed_precision))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        super().__post_init__()

    def validate(self) -> None:
        check_bits(self.bits)
        if self.weight_bits is not None:
            check_bits(self.weight_bits, "weight_bits")
        if self.act_bits is not None:
            check_bits(self.act_bits, "act_bits")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "first_last_bits")
        if min(self.w_bits, self.a_bits) < 2:
            raise UsageError("uniform quantization needs at least 2 bits",
                             hint="for 1-bit weights use --method binary")
        if self.calibration not in OBSERVERS and canonical(self.calibration) not in OBSERVERS:
            raise UsageError(f"unknown calibration {self.calibration!r}", hint=f"one of: {', '.join(OBSERVERS)}")
        canonical(self.weight_observer)
        if not isinstance(self.calib_batches, int) or self.calib_batches < 1:
            raise UsageError(f"calib_batches must be a positive integer, got {self.calib_batches!r}")
        if self.adaround_iters < 0:
            raise UsageError("adaround_iters must be >= 0")

    def untrained(self) -> "PTQ":
        return self.replace(adaround=False, calib_batches=1)  # the same graph, without AdaRound's training

    @property
    def w_bits(self) -> int:
        return self.weight_bits if self.weight_bits is not None else self.bits

    @property
    def a_bits(self) -> int:
        return self.act_bits if self.act_bits is not None else self.bits


# -- data helpers ------------------------------------------------------------------------------------

def calibration_batches(data: Any, n: int) -> list[torch.Tensor]:
    """Up to ``n`` input batches from a DataBundle (train split), a DataLoader, a tensor or a list."""
    if data is None:
        raise DataError("post-training quantization needs calibration data",
                        hint="pass data=... (a few hundred images is enough) or use data_free=True")
    if isinstance(data, torch.Tensor):
        source: Iterable = [data]
    elif hasattr(data, "train") and hasattr(data, "meta"):
        source = data.train if data.train is not None else (data.val or data.test)
    else:
        source = data
    out = []
    for i, batch in enumerate(source):
        if i >= n:
            break
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not isinstance(x, torch.Tensor):
            raise DataError(f"calibration batches must be tensors, got {type(x).__name__}")
        if x.numel() == 0:
            continue
        if not torch.isfinite(x).all():
            raise DataError("calibration data contains NaN or inf", hint="clean the data set (or its normalisation)")
        out.append(x.float())
    if not out:
        raise DataError("the calibration data is empty", hint="give at least one non-empty batch")
    return out


# -- the layers a config touches ---------------------------------------------------------------------

def plan_layers(model: nn.Module, cfg: PTQ) -> tuple[dict[str, int], dict[str, int], list[dict]]:
    """(weight bits per layer, activation bits per layer, float layers with the reason)."""
    floats: list[dict] = []
    for n, m in model.named_modules():
        if n and isinstance(m, _NOT_INT8):
            floats.append({"layer": n, "type": type(m).__name__,
                           "why": "ONNX Runtime has no int8 QDQ kernel for this layer type; it stays float"})
    chosen = select_layers(model, types=_QUANTIZABLE, include=cfg.layers or None, exclude=cfg.exclude or None)
    chosen = [(n, m) for n, m in chosen if type(m) in _QUANTIZABLE]
    names = [n for n, _ in chosen]
    for n, m in model.named_modules():
        if n and type(m) in _QUANTIZABLE and n not in names:
            floats.append({"layer": n, "type": type(m).__name__, "why": "excluded by the layer selection"})
    overrides = resolve_layer_map(model, dict(cfg.mixed_precision)) if cfg.mixed_precision else {}
    wbits: dict[str, int] = {}
    abits: dict[str, int] = {}
    for n in names:
        b = overrides.get(n, "default")
        if b is None:
            floats.append({"layer": n, "type": type(model.get_submodule(n)).__name__,
                           "why": "kept float by the mixed-precision map"})
            continue
        wbits[n] = cfg.w_bits if b == "default" else b
        abits[n] = cfg.a_bits  # the map sets weight bits; activations keep act_bits
        if cfg.first_last_bits and b == "default" and n in (names[0], names[-1]):
            # the usual low-bit convention: the first layer sees the raw input, the last one the logits
            wbits[n] = max(wbits[n], cfg.first_last_bits)
            abits[n] = max(abits[n], cfg.first_last_bits)
    if not wbits:
        raise ModelError("the model has no quantizable layer (Conv2d or Linear) left to quantize",
                         hint="check --mixed-precision / layer patterns; other layer types stay float")
    return wbits, abits, floats


# -- PTQ ---------------------------------------------------------------------------------------------

def prepare(model: nn.Module, cfg: PTQ, example: torch.Tensor | None, details: dict) -> nn.Module:
    """Fold BN, swap layers, insert activation quantizers (modifies ``model``; returns the new root)."""
    model.eval()
    stats = None
    if cfg.data_free:
        from .equalize import bn_stats

        stats = bn_stats(model)
    if cfg.fold_bn:
        from ..reparameterization.fold_bn import fold_bn

        record: list = []
        model = fold_bn(model, inplace=True, record=record)
        details["folded_bn"] = sum(1 for r in record if r.get("applied"))
    wbits, abits, floats = plan_layers(model, cfg)
    details["float_layers"] = floats

    def make_w(name, bits):
        return weight_quantizer(bits, per_channel=cfg.per_channel, observer=cfg.weight_observer)

    def make_a(name, bits):
        kw = {"percentile": cfg.percentile} if canonical(cfg.calibration) == "percentile" else None
        return activation_quantizer(bits, observer=cfg.calibration, observer_kw=kw)

    if cfg.data_free:
        from .equalize import bias_correction, equalize, layer_pairs

        details["equalized_pairs"] = equalize(model, list(wbits), stats) if cfg.equalize else 0
        pairs = layer_pairs(model, list(wbits))
        q = model
        qgraph.swap_layers(q, wbits, make_w)
        details["bias_corrected"] = bias_correction(q, stats, pairs) if cfg.bias_correction else 0
        details["activations"] = "float (data-free: weights only)"
        return q
    gm = qgraph.trace(model, example) if example is not None else None
    if gm is not None:
        qgraph.swap_layers(gm, wbits, make_w)
        # ReLU layers may be shared (torchvision resnet); fx already sees each call separately
        plan = qgraph.insert_activation_quantizers(gm, make_a, abits)
        details["activation_quantizers"] = len({p["quantizer"] for p in plan})
        details["traced"] = True
        kept = qgraph.float_ops(gm)
        if kept:
            details["float_ops"] = kept
            details.setdefault("notes", []).append(
                f"{', '.join(kept)} run{'s' if len(kept) == 1 else ''} in float: the runtimes have no integer kernel "
                "for them; every Linear / Conv and every activation matmul (attention) reads int8 operands")
        regions = qgraph.float_regions(model)
        if regions:
            details["float_regions"] = regions
            details.setdefault("notes", []).append(
                f"{', '.join(regions)} stay{'s' if len(regions) == 1 else ''} float (box decoding, top-k selection): "
                "what the quantized layers feed them is float")
        return gm
    qgraph.swap_layers(model, wbits, make_w)
    plan = qgraph.insert_input_quantizers_fallback(model, list(wbits), make_a, abits)
    details["activation_quantizers"] = len(plan)
    details["traced"] = False
    details.setdefault("notes", []).append(
        "torch.fx could not trace the model: only the inputs of Conv/Linear layers are quantized, so ONNX Runtime "
        "may run some layers with float kernels")
    return model


def _rebatch(batches: list[torch.Tensor], size: int) -> list[torch.Tensor]:
    """The same images in batches of about ``size`` (fewer observer calls per image; same statistics)."""
    out, cur, n = [], [], 0
    for x in batches:
        if x.shape[0] >= size or (cur and cur[0].shape[1:] != x.shape[1:]):
            if cur:
                out.append(torch.cat(cur))
                cur, n = [], 0
            if x.shape[0] >= size:
                out.append(x)
                continue
        cur.append(x)
        n += x.shape[0]
        if n >= size:
            out.append(torch.cat(cur))
            cur, n = [], 0
    if cur:
        out.append(torch.cat(cur))
    return out


CALIB_BATCH = 64


@torch.no_grad()
def calibrate(model: nn.Module, batches: list[torch.Tensor], batch_size: int = CALIB_BATCH) -> float:
    """Observe activations on ``batches`` (float model), then freeze every activation grid. Seconds.

    Small batches are joined into batches of about ``batch_size`` images: observers are updated
    once per batch, and min / max and histograms do not depend on the grouping (up to histogram
    re-binning). The moving-average observer, which does, sees the batches as given."""
    t0 = time.perf_counter()
    acts = qgraph.activation_quants(model)
    for _, fq in acts:
        fq.reset()
    model.eval()
    if any(fq.observer_name == "ema" for _, fq in acts):
        batch_size = 0
    for x in (_rebatch(batches, batch_size) if batch_size else batches):
        model(x)
    for name, fq in acts:
        if fq.observer.min is None:  # never reached (dead branch): keep it off
            fq.mode = "off"
            continue
        fq.freeze()
    return time.perf_counter() - t0


def _layer_bits(m: nn.Module) -> int:
    """Real bit cost of a quantized layer: packed weight codes, a float32 scale per channel (or per
    tensor), an int32 bias."""
    fq = m.weight_fq
    if fq.mode != "quant":
        return 32 * sum(p.numel() for p in m.parameters(recurse=False))
    n_scales = fq.scale.numel() if fq.scale.dim() else 1
    bias = 0 if m.bias is None else 32 * m.bias.numel()
    return m.weight.numel() * fq.bits + 32 * n_scales + bias


def layer_table(model: nn.Module) -> list[dict]:
    rows = []
    for name, m in qgraph.quant_layers(model):
        fq = m.weight_fq
        with torch.no_grad():
            w = m.weight.detach()
            sq = sqnr_db(w, fq(w)) if fq.mode == "quant" else None
        a = m.input_fq
        rows.append({"layer": name, "type": "Conv2d" if isinstance(m, nn.Conv2d) else "Linear",
                     "weight_bits": fq.bits if fq.mode == "quant" else None,
                     "act_bits": a.bits if a is not None and a.mode == "quant" else None,
                     "per_channel": "yes" if fq.axis is not None else "no", "weight_sqnr_db": None if sq is None else round(sq, 2),
                     "bytes_at_bit_cost": (_layer_bits(m) + 7) // 8})
    return rows


def bit_cost(model: nn.Module, details: dict) -> None:
    """Where weights or activations are narrower than 8 bits: the size at their real bit cost, and
    a note on how the ONNX file stores them."""
    layers = qgraph.quant_layers(model)
    low_w = [n for n, m in layers if m.weight_fq.mode == "quant" and m.weight_fq.bits < 8]
    low_a = sorted({fq.bits for _, fq in qgraph.activation_quants(model) if fq.mode == "quant" and fq.bits < 8})
    if not low_w and not low_a:
        return
    inside = {id(p) for _, m in layers for p in m.parameters(recurse=False)}
    other = sum(p.numel() for p in model.parameters() if id(p) not in inside)
    n_act = len({id(fq) for _, fq in qgraph.activation_quants(model) if fq.mode == "quant"})
    total = sum(_layer_bits(m) for _, m in layers) + 32 * other + 40 * n_act  # + scale / zero point per tensor
    details["estimated_size_bytes"] = (total + 7) // 8
    notes = details.setdefault("notes", [])
    if low_w:
        bits = sorted({m.weight_fq.bits for n, m in layers if n in low_w})
        packed = [b for b in bits if b <= 4]
        wide = [b for b in bits if b > 4]
        text = (f"{len(low_w)} of {len(layers)} layers have {'/'.join(map(str, bits))}-bit weights, simulated exactly "
                "on their narrower grid. ")
        if packed:
            text += (f"model.onnx stores the {'/'.join(map(str, packed))}-bit ones packed as INT4 (two codes a byte, "
                     "opset 21), cast to int8 when ONNX Runtime loads the file, so they run on its int8 kernels. ")
        if wide:
            text += (f"The {'/'.join(map(str, wide))}-bit ones sit in int8 containers (ONNX has no narrower "
                     "type that ONNX Runtime reads). ")
        notes.append(text + "estimated_size_bytes counts every layer at its real bit cost (packed codes + a float32 "
                     "scale per channel + int32 biases, other parameters at 32 bits)")
    if low_a:
        notes.append(f"{'/'.join(map(str, low_a))}-bit activations are clipped to their grid inside uint8 tensors "
                     "in model.onnx (a Clip before each QuantizeLinear); ONNX Runtime computes them in 8 bits")


def ptq(model: nn.Module, cfg: PTQ, *, data: Any = None, example: torch.Tensor | None = None,
        details: dict | None = None) -> nn.Module:
    """Quantize ``model`` in place (callers copy); returns the quantized root module."""
    details = details if details is not None else {}
    batches = None
    if not cfg.data_free:
        batches = calibration_batches(data, cfg.calib_batches)
        example = batches[0][:2] if example is None else example
    elif data is not None and example is None:
        example = calibration_batches(data, 1)[0][:2]
    q = prepare(model, cfg, example, details)
    details["calibration"] = None if cfg.data_free else canonical(cfg.calibration)
    if batches is not None:
        details["calib_images"] = sum(int(x.shape[0]) for x in batches)
        details["calib_seconds"] = round(calibrate(q, batches), 3)
    if cfg.adaround:
        from .adaround import adaround

        if batches is None:
            raise UsageError("AdaRound needs calibration data", hint="drop --data-free or --adaround")
        details["adaround"] = adaround(q, batches, iters=cfg.adaround_iters)
    details["layers"] = layer_table(q)
    bit_cost(q, details)
    details["weight_bits"], details["act_bits"] = cfg.w_bits, None if cfg.data_free else cfg.a_bits
    details["per_channel"] = cfg.per_channel
    from .deploy import record_config

    return record_config(q, cfg)  # its deployable export is PTQ's (runtimes choose it by this config)


@register(PTQ)
def _apply(model: nn.Module, config: PTQ, ctx: Context) -> nn.Module:
    q = ptq(model, config, data=ctx.data, details=ctx.details)
    return record_config(q, config)  # its config chooses the exporter (deploy.export)


@register_export(PTQ)
def export_int8(model: nn.Module, path, example: torch.Tensor, config: PTQ | None = None, *, loader=None) -> dict:
    """int8 QDQ ONNX, run with ONNX Runtime's integer kernels (PTQ and QAT)."""
    from .onnx_qdq import export_qdq

    return export_qdq(model, path, example)
