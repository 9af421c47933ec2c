"""Token merging (ToMe, Bolya et al. 2023): bipartite soft matching on attention keys.

After a block's attention, the tokens (past the protected class / distillation tokens) are split
alternately into sets A and B; each A token is matched to its most similar B token (cosine of the
keys), and the ``r`` best-matched A tokens are averaged into their B partners, weighted by the
number of patches each already holds (``size``). Everything is plain tensor algebra (sort, gather,
scatter-add) with shapes fixed by ``r``, so the exported ONNX graph holds fewer tokens after every
merging block and runs faster, with no custom operator.
"""
from __future__ import annotations

import torch


def merge_tokens(x: torch.Tensor, keys: torch.Tensor, size: torch.Tensor, r: int, protected: int = 1):
    """(x, size) with ``r`` fewer tokens; ``x`` (B, N, C), ``keys`` (B, N, D), ``size`` (B, N, 1)."""
    n_free = x.shape[1] - protected
    r = min(int(r), n_free // 2)
    if r <= 0:
        return x, size
    head_x, head_s = x[:, :protected], size[:, :protected]
    x, size, keys = x[:, protected:], size[:, protected:], keys[:, protected:]
    k = keys / keys.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ka, kb = k[:, ::2], k[:, 1::2]
    best, partner = (ka @ kb.transpose(-1, -2)).max(dim=-1)  # (B, Na): each A token's closest B token
    order = best.argsort(dim=-1, descending=True).unsqueeze(-1)  # most similar first
    src, keep = order[:, :r], order[:, r:]  # merged away / kept A tokens
    dst = partner.unsqueeze(-1).gather(1, src)
    c = x.shape[-1]
    xa, xb = x[:, ::2] * size[:, ::2], x[:, 1::2] * size[:, 1::2]  # sums of the patches a token holds
    sa, sb = size[:, ::2], size[:, 1::2]
    xb = xb.scatter_add(1, dst.expand(-1, -1, c), xa.gather(1, src.expand(-1, -1, c)))
    sb = sb.scatter_add(1, dst, sa.gather(1, src))
    kept_x, kept_s = xa.gather(1, keep.expand(-1, -1, c)), sa.gather(1, keep)
    x = torch.cat([head_x, kept_x / kept_s, xb / sb], dim=1)
    return x, torch.cat([head_s, kept_s, sb], dim=1)


def schedule(depth: int, total: int, kind: str = "constant") -> list[int]:
    """Tokens merged per block for ``total`` merged in all: ``constant`` spreads them evenly,
    ``decreasing`` merges more in early blocks (linearly falling to zero)."""
    if total <= 0 or depth <= 0:
        return [0] * max(depth, 0)
    if kind == "constant":
        w = [1.0] * depth
    elif kind == "decreasing":
        w = [float(depth - i) for i in range(depth)]
    else:
        raise ValueError(kind)
    raw = [total * v / sum(w) for v in w]
    out = [int(v) for v in raw]
    for i in sorted(range(depth), key=lambda i: raw[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out
