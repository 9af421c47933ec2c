"""Calibration observers: they watch tensors and choose the range [min, max] to quantize.

    obs = make_observer("entropy")
    for x in batches: obs.update(x)
    lo, hi = obs.range(bits=8, signed=False)

- minmax: the extremes seen (per tensor, or per channel along ``axis``).
- ema (moving-average minmax): per-batch extremes averaged with momentum, so a rare outlier
  batch does not set the range.
- percentile: clip to the p-th percentile of |values| on each side (histogram based).
- entropy: TensorRT's KL-divergence calibration: the clipping threshold whose quantized
  histogram is closest (KL) to the original one, searched on the histogram with its spikes
  (exact zeros, constant image background) flattened, since they would drag the threshold down.
- mse: the clipping range that minimises the expected squared quantization error.

Histogram observers keep a 2 x 2048-bin histogram symmetric around 0 whose range grows (and
re-bins what it had) when a batch exceeds it; each batch adds a regular subsample of at most
about a million values (the range itself is exact). Everything is computed in float64.
Calibration data with NaN or inf is refused (DataError).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..core.errors import DataError, UsageError
from .primitives import compute_qparams, fake_quant, qrange

OBSERVERS = ("minmax", "ema", "percentile", "entropy", "mse")
_ALIASES = {"moving_average": "ema", "moving-average": "ema", "kl": "entropy", "max": "minmax"}


def _check_finite(x: torch.Tensor) -> None:
    if not torch.isfinite(x).all():
        raise DataError("calibration data produced NaN or inf values",
                        hint="check the input data (NaN in images?) and the model's weights")


def _reduce_dims(x: torch.Tensor, axis: int | None) -> tuple[int, ...]:
    return tuple(d for d in range(x.dim()) if d != (axis % x.dim() if axis is not None else None))


class Observer:
    name = ""

    def __init__(self, axis: int | None = None):
        self.axis = axis
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.batches = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach()
        if x.numel() == 0:
            return
        if not x.is_floating_point():
            x = x.float()
        if self.axis is None:
            lo, hi = torch.aminmax(x)
        else:
            dims = _reduce_dims(x, self.axis)
            lo = torch.amin(x, dim=dims) if dims else x
            hi = torch.amax(x, dim=dims) if dims else x
        lo, hi = lo.double(), hi.double()
        _check_finite(lo)  # NaN and inf propagate through min / max: no full-tensor scan needed
        _check_finite(hi)
        self._update_range(lo, hi)
        self._observe(x)
        self.batches += 1

    def _update_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)

    def _observe(self, x: torch.Tensor) -> None:
        pass

    def _require(self) -> None:
        if self.min is None:
            raise DataError(f"the {self.name} observer saw no data",
                            hint="calibration needs at least one non-empty batch")

    def range(self, bits: int = 8, signed: bool = False, symmetric: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) to quantize with, float64 (per channel when axis is set)."""
        self._require()
        return self.min.clone(), self.max.clone()

    def qparams(self, bits: int = 8, *, signed: bool = False, symmetric: bool = False):
        lo, hi = self.range(bits, signed, symmetric)
        return compute_qparams(lo, hi, bits, signed=signed, symmetric=symmetric)


class MinMaxObserver(Observer):
    name = "minmax"


class MovingAverageMinMaxObserver(Observer):
    name = "ema"

    def __init__(self, axis: int | None = None, momentum: float = 0.1):
        super().__init__(axis)
        if not 0 < momentum <= 1:
            raise UsageError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum

    def _update_range(self, lo, hi):
        if self.min is None:
            self.min, self.max = lo, hi
        else:
            m = self.momentum
            self.min = self.min + m * (lo - self.min)
            self.max = self.max + m * (hi - self.max)


class HistogramObserver(Observer):
    """Per-tensor histogram over [-A, A] (A = largest |x| so far), ``2 * bins`` bins."""

    MAX_SAMPLES = 1 << 20

    def __init__(self, axis: int | None = None, bins: int = 2048):
        if axis is not None:
            raise UsageError("histogram observers (percentile, entropy, mse) are per tensor",
                             hint="use minmax or mse for per-channel weights")
        super().__init__(None)
        self.bins = bins
        self.amax = 0.0
        self.hist = np.zeros(2 * bins, dtype=np.float64)

    def _observe(self, x: torch.Tensor) -> None:
        amax = float(torch.max(self.max.abs(), self.min.abs()))
        if amax == 0.0:
            self.hist[self.bins] += x.numel()  # all zeros: first bin of the positive half
            return
        if amax > self.amax:
            if self.amax > 0 and self.hist.sum() > 0:
                # re-bin what we had onto the wider grid (mass at old bin centres)
                old_edges = np.linspace(-self.amax, self.amax, 2 * self.bins + 1)
                centres = (old_edges[:-1] + old_edges[1:]) / 2
                self.hist, _ = np.histogram(centres, bins=2 * self.bins, range=(-amax, amax), weights=self.hist)
            elif self.hist.sum() > 0:  # only zeros so far
                zeros = self.hist.sum()
                self.hist = np.zeros(2 * self.bins)
                self.hist[self.bins] = zeros
            self.amax = amax
        flat = x.reshape(-1)
        step = _sample_step(flat.numel(), x[0].numel() if x.dim() > 1 else 1, self.MAX_SAMPLES)
        if step > 1:  # a regular subsample is plenty for a 4096-bin histogram (min / max stay exact)
            flat = flat[::step]
        h = torch.histc(flat.float(), bins=2 * self.bins, min=-self.amax, max=self.amax)
        self.hist += h.double().numpy() * step

    # helpers for subclasses -------------------------------------------------
    def _abs_hist(self) -> tuple[np.ndarray, float]:
        """Histogram of |x| with ``bins`` bins over [0, A] and the bin width."""
        neg, pos = self.hist[: self.bins][::-1], self.hist[self.bins:]
        return neg + pos, self.amax / self.bins

    def _clip(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.clamp(self.min, min=-t)
        hi = torch.clamp(self.max, max=t)
        return lo, hi

    def _levels(self, bits: int) -> int:
        # one-sided data (ReLU outputs) uses the whole grid; two-sided data half of it per side
        return (1 << bits) if float(self.min) >= 0 or float(self.max) <= 0 else (1 << (bits - 1))


def _sample_step(n: int, period: int, cap: int) -> int:
    """Stride of a regular subsample of ``n`` values with at most ~``cap`` of them. The stride is
    coprime with ``period`` (the values per sample, C*H*W), so every channel and pixel position is
    visited as often as the others: a stride that divides W would only ever see some columns."""
    step = max(1, n // cap)
    if step == 1:
        return 1
    while math.gcd(step, max(period, 1)) != 1:
        step += 1
    return step


class PercentileObserver(HistogramObserver):
    name = "percentile"

    def __init__(self, axis: int | None = None, percentile: float = 99.99, bins: int = 2048):
        super().__init__(axis, bins)
        if not 50 < percentile <= 100:
            raise UsageError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def range(self, bits=8, signed=False, symmetric=False):
        self._require()
        if self.amax == 0:
            return self.min.clone(), self.max.clone()
        h, width = self._abs_hist()
        cdf = np.cumsum(h) / h.sum()
        i = int(np.searchsorted(cdf, self.percentile / 100.0))
        t = min((i + 1) * width, self.amax)
        return self._clip(t)


class EntropyObserver(HistogramObserver):
    """TensorRT's calibration: minimise KL(P || Q) over clipping thresholds (8-bit: 2048 bins).

    Spikes are taken out of the in-range histogram before the search (not out of the clipped
    tail). A spike is one value repeated many times: the exact zeros of ReLU outputs and padding,
    and, in the early layers of a CNN, the constant responses to uniform image background. The
    quantizer rounds such a value like any other, but the KL between the fine histogram and its
    merged version charges a spike about ``mass * log(bins merged per level)``, which falls as the
    threshold falls; left in, spikes drag the threshold far below the data (a ReLU6 layer of
    mobilenetv2 clipped at 0.8 instead of ~6 and cost 11 points of top-1). Each spike is replaced
    by the running median of its neighbours; the mass a threshold clips still counts in full.
    """

    name = "entropy"

    def range(self, bits=8, signed=False, symmetric=False):
        self._require()
        if self.amax == 0:
            return self.min.clone(), self.max.clone()
        h, width = self._abs_hist()
        levels = self._levels(bits)
        i = _kl_threshold_bin(_despike(h), levels, tail=h)
        return self._clip(min(i * width, self.amax))


def _despike(hist: np.ndarray, half: int = 8) -> np.ndarray:
    """The histogram with isolated spikes replaced by the median of the surrounding ``2 * half + 1``
    bins, and the zero bin by its neighbour's count."""
    h = np.asarray(hist, dtype=np.float64)
    if len(h) < 3:
        return h.copy()
    pos = h[h > 0]
    if not len(pos):
        return h.copy()
    unit = float(pos.min())  # one sample (times the subsampling stride)
    from numpy.lib.stride_tricks import sliding_window_view

    med = np.median(sliding_window_view(np.pad(h, half, mode="edge"), 2 * half + 1), axis=1)
    # far above its neighbourhood: more than twice the median plus a few Poisson standard deviations
    spike = h > 2 * med + 4 * np.sqrt(np.maximum(med, unit) * unit) + 4 * unit
    out = np.where(spike, med, h)
    out[0] = min(h[0], h[1])  # exact zeros (ReLU, padding) are represented exactly by every grid
    return out


def _kl_threshold_bin(hist: np.ndarray, levels: int, tail: np.ndarray | None = None) -> int:
    """Number of histogram bins to keep (threshold = that many bins), TensorRT style. ``tail`` (by
    default ``hist``) is the histogram whose mass beyond a threshold is clipped into its last bin."""
    tail = hist if tail is None else tail
    n = len(hist)
    if levels >= n or tail[levels:].sum() == 0:
        nz = np.nonzero(tail)[0]
        return int(nz[-1]) + 1 if len(nz) else n
    total_tail = np.cumsum(tail[::-1])[::-1]  # total_tail[i] = sum(tail[i:])
    # coarse-to-fine over the candidate thresholds (KL is smooth in i): stride 8, then +-8 around the best
    kl_of = {}
    coarse = list(range(levels, n + 1, 8)) + [n]
    best_i = min(coarse, key=lambda i: kl_of.setdefault(i, _kl_at(hist, total_tail, i, levels)))
    fine = range(max(levels, best_i - 8), min(n, best_i + 8) + 1)
    return min(fine, key=lambda i: kl_of[i] if i in kl_of else kl_of.setdefault(i, _kl_at(hist, total_tail, i, levels)))


def _kl_at(hist: np.ndarray, total_tail: np.ndarray, i: int, levels: int) -> float:
    """KL(P || Q) for a threshold of ``i`` bins: P clips the tail into its last bin; Q merges the
    i bins into ``levels`` quantized bins and expands them back over the non-empty source bins
    (empty bins stay empty, as in TensorRT)."""
    n = len(hist)
    p = hist[:i].copy()
    if i < n:
        p[i - 1] += total_tail[i]
    nz = hist[:i] != 0
    edges = np.floor(np.arange(levels + 1) * (i / levels)).astype(np.int64)
    edges[-1] = i
    starts = edges[:-1]
    lengths = np.diff(edges)
    sums = np.add.reduceat(hist[:i], starts)
    counts = np.add.reduceat(nz.astype(np.float64), starts)
    valid = lengths > 0
    if not valid.all():  # reduceat repeats values for empty slices
        sums = np.where(valid, sums, 0.0)
        counts = np.where(valid, counts, 0.0)
    per = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    q = np.repeat(per, lengths) * nz
    ps, qs = p.sum(), q.sum()
    if qs == 0 or ps == 0:
        return math.inf
    p_n, q_n = _smooth(p / ps), _smooth(q / qs)
    m = p_n > 0
    return float(np.sum(p_n[m] * np.log(p_n[m] / q_n[m])))


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Move eps of mass onto empty bins so KL stays finite (as TensorRT and ONNX Runtime do)."""
    zeros = p == 0
    if not zeros.any():
        return p
    p = p + eps * zeros
    return p / p.sum()


class MSEObserver(Observer):
    """Clipping range that minimises the squared quantization error.

    Per tensor it works on a histogram (activations); per channel (weights) it searches a grid
    of shrink factors of each channel's range directly on the last tensor seen.
    """

    name = "mse"
    GRID = 100

    def __init__(self, axis: int | None = None, bins: int = 2048):
        super().__init__(axis)
        self._hist = HistogramObserver(None, bins) if axis is None else None
        self._last: torch.Tensor | None = None

    def _observe(self, x):
        if self._hist is not None:
            self._hist.min, self._hist.max = self.min, self.max
            self._hist._observe(x)
        else:
            self._last = x

    def range(self, bits=8, signed=False, symmetric=False):
        self._require()
        alphas = torch.linspace(1.0 / self.GRID, 1.0, self.GRID, dtype=torch.float64)
        qmin, qmax = qrange(bits, signed, symmetric)
        lo0 = torch.clamp(self.min, max=0.0)
        hi0 = torch.clamp(self.max, min=0.0)
        if self._hist is not None:
            h = self._hist
            if h.amax == 0:
                return self.min.clone(), self.max.clone()
            edges = np.linspace(-h.amax, h.amax, 2 * h.bins + 1)
            vals = torch.from_numpy((edges[:-1] + edges[1:]) / 2)
            w = torch.from_numpy(h.hist)
            keep = w > 0
            vals, w = vals[keep], w[keep]
            best, best_err = 1.0, math.inf
            for a in alphas.tolist():
                s, z = compute_qparams(lo0 * a, hi0 * a, bits, signed=signed, symmetric=symmetric)
                err = float((w * (fake_quant(vals, s.double(), z, qmin, qmax) - vals) ** 2).sum())
                if err < best_err - 1e-12 * abs(best_err if math.isfinite(best_err) else 0):
                    best, best_err = a, err
            return lo0 * best, hi0 * best
        x = self._last.double()
        ax = self.axis % x.dim()
        xc = x.movedim(ax, 0).reshape(x.shape[ax], -1)
        errs = []
        for a in alphas.tolist():
            s, z = compute_qparams(lo0 * a, hi0 * a, bits, signed=signed, symmetric=symmetric)
            errs.append(((fake_quant(xc, s.double(), z, qmin, qmax, axis=0) - xc) ** 2).sum(1))
        errs = torch.stack(errs)  # [grid, C]
        # ties (e.g. all-zero channels) go to the widest range
        best = (errs - errs.min(0).values <= 1e-12 * errs.max(0).values.clamp(min=1e-300)).double()
        idx = (best * torch.arange(1, len(alphas) + 1, dtype=torch.float64)[:, None]).argmax(0)
        a = alphas[idx]
        return lo0 * a, hi0 * a


_TYPES = {"minmax": MinMaxObserver, "ema": MovingAverageMinMaxObserver, "percentile": PercentileObserver,
          "entropy": EntropyObserver, "mse": MSEObserver}


def canonical(name: str) -> str:
    n = _ALIASES.get(name, name)
    if n not in _TYPES:
        raise UsageError(f"unknown calibration method {name!r}", hint=f"one of: {', '.join(OBSERVERS)}")
    return n


def make_observer(name: str, *, axis: int | None = None, **kw) -> Observer:
    return _TYPES[canonical(name)](axis=axis, **kw)
