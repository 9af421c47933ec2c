"""Non-uniform and extreme weight formats, simulated in PyTorch and counted at their real bit cost.

    q = edgeslim.quantize(model, LowBit(format="ternary"), data=data)

- kmeans: weight sharing, a codebook of 2**bits float centroids per layer (Deep Compression;
  reuses edgeslim.quantization.sharing, centroids fine-tunable).
- pow2: sign x per-channel scale x 2**-k (logarithmic grid; ``bits`` includes the sign and a
  zero code).
- ternary: TTQ-style: threshold t x max|w|, then a learned positive and negative scale per layer.
- binary: sign(w) x per-channel scale (mean |w|, as XNOR-Net).

Formats other than k-means keep a float shadow weight trained through a straight-through
estimator. ONNX Runtime has no kernels for these formats: the exported file holds the
dequantized float weights, so it runs at float speed; the report's ``estimated_size_bytes``
counts the real bits (codes + codebooks / scales).
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.config import Config
from ..core.errors import ModelError, UsageError
from ..core.registry import Context, register, register_export
from .deploy import record_config
from ..core.select import select_layers
from .primitives import check_bits

FORMATS = ("kmeans", "pow2", "ternary", "binary")
_DEFAULT_BITS = {"kmeans": 4, "pow2": 4, "ternary": 2, "binary": 1}


def _ste(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return q.detach() + (w - w.detach())  # exactly q forward, identity gradient to w


def pow2_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel power-of-two grid {0, +-s, +-s/2, ... +-s/2**(2**(bits-1)-2)}."""
    dims = tuple(range(1, w.dim()))
    s = w.detach().abs().amax(dim=dims, keepdim=True) if dims else w.detach().abs().max()
    s = torch.where(s > 0, s, torch.ones_like(s))
    n_exp = (1 << (bits - 1)) - 1  # codes per sign besides zero
    emin = -(n_exp - 1)
    r = w.abs() / s
    e = torch.clamp(torch.round(torch.log2(r.clamp(min=1e-30))), emin, 0)
    mag = torch.where(r < 2.0 ** (emin - 1), torch.zeros_like(r), 2.0 ** e)
    return torch.sign(w) * mag * s


def binary_quant(w: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, w.dim()))
    alpha = w.detach().abs().mean(dim=dims, keepdim=True) if dims else w.detach().abs().mean()
    return torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w)) * alpha


class Pow2(nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, w):
        return _ste(w, pow2_quant(w, self.bits))


class Binary(nn.Module):
    def forward(self, w):
        return _ste(w, binary_quant(w))


class Ternary(nn.Module):
    """TTQ: codes from a threshold on the latent weight, learned scales Wp / Wn."""

    def __init__(self, w: torch.Tensor, t: float):
        super().__init__()
        self.t = t
        d = t * w.detach().abs().max()
        pos, neg = w.detach()[w.detach() > d], w.detach()[w.detach() < -d]
        self.wp = nn.Parameter(pos.mean().reshape(()) if pos.numel() else torch.tensor(0.0))
        self.wn = nn.Parameter(neg.abs().mean().reshape(()) if neg.numel() else torch.tensor(0.0))

    def forward(self, w):
        d = self.t * w.detach().abs().max()
        p = (w > d).to(w.dtype)
        n = (w < -d).to(w.dtype)
        return self.wp * p - self.wn * n + (w - w.detach())


@dataclasses.dataclass(frozen=True, kw_only=True)
class LowBit(Config):
    kind = "lowbit"
    final = True  # the deployable format: a recipe's last step
    format: str = "kmeans"
    bits: int | None = None  # default: kmeans 4, pow2 4, ternary 2, binary 1
    threshold: float = 0.05  # ternary: fraction of max |w|
    epochs: float = 0.0  # fine-tuning epochs (centroids / shadow weights / TTQ scales)
    lr: float | None = None
    max_batches: int | None = None
    layers: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"unknown low-bit format {self.format!r}", hint=f"one of: {', '.join(FORMATS)}")
        b = self.n_bits
        check_bits(b)
        if self.format == "pow2" and b < 2:
            raise UsageError("power-of-two weights need at least 2 bits (sign + exponent)")
        if self.format == "ternary" and b != 2:
            raise UsageError("ternary weights use 2 bits")
        if self.format == "binary" and b != 1:
            raise UsageError("binary weights use 1 bit")
        if not 0 < self.threshold < 1:
            raise UsageError(f"threshold must be in (0, 1), got {self.threshold}")

    def untrained(self) -> "LowBit":
        return self.replace(epochs=0.0)

    @property
    def n_bits(self) -> int:
        return self.bits if self.bits is not None else _DEFAULT_BITS.get(self.format, 4)


def _layer_cost_bits(fmt: str, bits: int, w: torch.Tensor) -> int:
    n, c = w.numel(), w.shape[0]
    if fmt == "kmeans":
        return n * bits + (1 << bits) * 32
    if fmt == "ternary":
        return n * 2 + 2 * 32
    return n * bits + c * 32  # pow2 / binary: codes + a float scale per channel


@register(LowBit)
def _apply(model: nn.Module, config: LowBit, ctx: Context) -> nn.Module:
    model.eval()
    from ..reparameterization.fold_bn import fold_bn

    model = fold_bn(model, inplace=True)
    chosen = select_layers(model, types=(nn.Conv2d, nn.Linear), include=config.layers or None,
                           exclude=config.exclude or None)
    if not chosen:
        raise ModelError("the model has no Conv2d or Linear layer to quantize")
    fmt, bits = config.format, config.n_bits
    rows = []
    quant_bits = 0
    quant_params = 0
    for name, m in chosen:
        w = m.weight.detach()
        if fmt == "kmeans":
            from .sharing import share

            k = 1 << bits
            if w.numel() < k:
                rows.append({"layer": name, "format": "float", "why": f"{w.numel()} weights < {k} centroids"})
                continue
            share(m, bits, name=name)
        elif fmt == "pow2":
            parametrize.register_parametrization(m, "weight", Pow2(bits))
        elif fmt == "binary":
            parametrize.register_parametrization(m, "weight", Binary())
        else:
            parametrize.register_parametrization(m, "weight", Ternary(w, config.threshold))
        cost = _layer_cost_bits(fmt, bits, w)
        quant_bits += cost
        quant_params += w.numel()
        with torch.no_grad():
            err = (m.weight - w).pow(2).sum() / w.pow(2).sum().clamp(min=1e-30)
        rows.append({"layer": name, "format": fmt, "bits": bits, "weights": w.numel(),
                     "bytes_at_bit_cost": (cost + 7) // 8, "rel_error": float(err)})
    labelled = getattr(getattr(ctx.data, "meta", None), "labelled", True)
    if config.epochs > 0 and ctx.data is not None and not labelled:
        ctx.details.setdefault("notes", []).append("fine-tuning skipped: the data has no labels")
    elif config.epochs > 0 and ctx.data is not None:
        from ..train.finetune import FinetuneOptions, finetune

        finetune(model, ctx, FinetuneOptions(epochs=config.epochs, lr=config.lr or 1e-4, optimizer="adam",
                                             weight_decay=0.0, max_batches=config.max_batches))
    total = sum(p.numel() for p in model.parameters())  # includes codebooks / TTQ scales
    # everything but the quantized weights (and their codebooks / scales, counted in quant_bits)
    other = sum(p.numel() for n, p in model.named_parameters() if ".parametrizations.weight." not in n)
    ctx.details.update({
        "format": fmt, "bits": bits, "layers": rows,
        "estimated_size_bytes": (quant_bits + 32 * other) // 8,
        "quantized_weights": quant_params, "params_total": total,
        "fine_tune_epochs": config.epochs if ctx.data is not None and labelled else 0,
    })
    ctx.details.setdefault("notes", []).append(
        f"{fmt} weights are simulated exactly in PyTorch; ONNX Runtime has no {fmt} kernels, so model.onnx holds the "
        "dequantized float weights and runs at float speed. estimated_size_bytes counts the real bits "
        "(codes + codebooks / scales, other parameters at 32 bits)")
    return record_config(model, config)  # its config chooses the exporter (deploy.export)


@register_export(LowBit)
def _export_lowbit(model: nn.Module, path, example: torch.Tensor, config: LowBit, *, loader=None) -> dict:
    """The float graph with the dequantized weights (ONNX Runtime has no low-bit kernels)."""
    from ..runtimes import export_onnx
    from .deploy import float_model

    res = export_onnx(float_model(model), path, example[:1], loader=loader)
    return {"path": res["path"], "size_bytes": res["size_bytes"]}
