"""Canvases of pasted Fashion-MNIST garments: the images behind fashion-mnist-detect and -seg.

Each canvas is SIZE x SIZE grey, black, with 1..MAX_GARMENTS garments pasted at random positions, each
scaled to a random side of SCALES x SIZE (14..35 px on 64 x 64, about 0.5x..1.25x the 28 px originals).
A garment's silhouette is its pixels brighter than THRESHOLD with the holes inside filled; later
garments cover earlier ones inside their silhouette. Its box is the tight box of its whole silhouette
(xyxy, pixel edges: a garment covering columns 3..9 has x0 = 3, x1 = 10), so a partly covered garment
keeps its full box; its mask pixels are the visible part of its silhouette, 1 + its class (0 is
background). Two garments' boxes overlap by at most MAX_OVERLAP of the smaller one: a placement that
breaks that is drawn again, up to PLACEMENT_TRIES times, then the garment is left out (never the first).

Everything is drawn from one numpy Generator, so the same seed gives the same canvases, and the
garments come from the ``pool`` of source images given, each used once while the pool lasts.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

MAX_GARMENTS = 4
SCALES = (14 / 64, 35 / 64)
THRESHOLD = 16
MAX_OVERLAP = 0.25
PLACEMENT_TRIES = 50


@dataclasses.dataclass(frozen=True)
class Canvases:
    """images and masks uint8 (N, S, S); per garment, in canvas order: boxes float32 (G, 4) xyxy,
    labels int64 (G,) 0-based, sources int64 (G,) (the index of its source image); canvas i holds
    garments ``offsets[i]:offsets[i + 1]``."""

    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    sources: np.ndarray
    offsets: np.ndarray


def sides(size: int) -> tuple[int, int]:
    """The smallest and largest side a garment is scaled to on a ``size`` canvas."""
    return max(4, round(SCALES[0] * size)), max(4, round(SCALES[1] * size))


def make_canvases(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, n: int, size: int,
                  seed) -> Canvases:
    """``n`` canvases of ``size`` px from source ``images`` (M, 28, 28) uint8 with ``labels`` (M,),
    using only the source indices in ``pool``; ``seed`` seeds numpy's default_rng."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, MAX_GARMENTS + 1, n)
    canvas = np.repeat(np.arange(n), counts)
    slot = np.arange(len(canvas)) - np.repeat(np.cumsum(counts) - counts, counts)
    source = _draw(rng, np.asarray(pool, dtype=np.int64), len(canvas))
    lo, hi = sides(size)
    side = rng.integers(lo, hi + 1, len(canvas))
    groups, rel = _scaled(images[source], side)
    keep = rel[:, 2] > rel[:, 0]  # an empty silhouette has no box: left out
    ox, oy, keep = _place(rng, canvas, slot, side, rel, keep, size, n)
    out_images, out_masks = _paste(n, size, canvas, slot, ox, oy, groups, labels[source] + 1, keep)
    boxes = (rel + np.stack([ox, oy, ox, oy], 1))[keep].astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(canvas[keep], minlength=n))]).astype(np.int64)
    return Canvases(out_images, out_masks, boxes, labels[source][keep].astype(np.int64), source[keep], offsets)


def _draw(rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
    """``k`` indices from ``pool``: a random order of it, started again when it runs out."""
    rounds = -(-k // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(rounds)])[:k]


def _silhouettes(images: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_fill_holes

    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # fill within each image, never across the stack
    return binary_fill_holes(images > THRESHOLD, structure=structure)


def _scaled(images: np.ndarray, side: np.ndarray):
    """Per side z: (the garments of that side, their images and silhouettes scaled to z x z), and every
    garment's tight box of its scaled silhouette, (G, 4) int64 xyxy inside its patch (zeros if empty)."""
    sil28 = _silhouettes(images)
    groups = {}
    rel = np.zeros((len(images), 4), dtype=np.int64)
    for z in np.unique(side).tolist():
        idx = np.flatnonzero(side == z)
        both = torch.from_numpy(np.stack([images[idx], sil28[idx] * 255], 1).astype(np.float32))
        scaled = torch.nn.functional.interpolate(both, size=(z, z), mode="bilinear", antialias=True,
                                                 align_corners=False).numpy()
        sil = scaled[:, 1] > 127.5
        rows, cols = sil.any(2), sil.any(1)
        rel[idx] = np.stack([cols.argmax(1), rows.argmax(1), z - cols[:, ::-1].argmax(1),
                             z - rows[:, ::-1].argmax(1)], 1)
        rel[idx[~rows.any(1)]] = 0
        groups[z] = (idx, np.clip(np.round(scaled[:, 0]), 0, 255).astype(np.uint8), sil)
    return groups, rel


def _place(rng, canvas, slot, side, rel, keep, size: int, n: int):
    """Top-left corners (ox, oy) of every garment's patch, and which garments stay (overlap limited)."""
    ox, oy = rng.integers(0, size - side + 1), rng.integers(0, size - side + 1)
    grid = np.full((n, MAX_GARMENTS), -1, dtype=np.int64)
    grid[canvas, slot] = np.arange(len(canvas))
    for _ in range(PLACEMENT_TRIES):
        bad = _crowded(grid, rel + np.stack([ox, oy, ox, oy], 1), keep)
        if not bad.any():
            break
        ox[bad] = rng.integers(0, size - side[bad] + 1)
        oy[bad] = rng.integers(0, size - side[bad] + 1)
    else:
        keep = keep & ~_crowded(grid, rel + np.stack([ox, oy, ox, oy], 1), keep, drop=True)
    return ox, oy, keep


def _crowded(grid: np.ndarray, boxes: np.ndarray, keep: np.ndarray, drop: bool = False) -> np.ndarray:
    """Garments whose box overlaps an earlier garment's of the same canvas by more than MAX_OVERLAP of
    the smaller box. With ``drop``, garments found crowded are left out as the check goes, so one
    crowded garment does not also take out those after it that only overlap it."""
    bad = np.zeros(len(boxes), dtype=bool)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for b in range(1, grid.shape[1]):
        for a in range(b):
            ga, gb = grid[:, a], grid[:, b]
            both = (ga >= 0) & (gb >= 0)
            ga, gb = ga[both], gb[both]
            live = keep[ga] & keep[gb] & (~bad[ga] if drop else True)
            w = np.minimum(boxes[ga, 2], boxes[gb, 2]) - np.maximum(boxes[ga, 0], boxes[gb, 0])
            h = np.minimum(boxes[ga, 3], boxes[gb, 3]) - np.maximum(boxes[ga, 1], boxes[gb, 1])
            inter = np.clip(w, 0, None) * np.clip(h, 0, None)
            bad[gb[live & (inter > MAX_OVERLAP * np.minimum(area[ga], area[gb]))]] = True
    return bad


def _paste(n, size, canvas, slot, ox, oy, groups, values, keep):
    """The canvases and masks, garments pasted slot by slot so that later ones cover earlier ones."""
    images = np.zeros(n * size * size, dtype=np.uint8)
    masks = np.zeros(n * size * size, dtype=np.uint8)
    for s in range(MAX_GARMENTS):
        for z, (idx, pix, sil) in groups.items():
            pick = (slot[idx] == s) & keep[idx]
            g, sil = idx[pick], sil[pick]
            ar = np.arange(z)
            flat = (canvas[g] * size * size + oy[g] * size + ox[g])[:, None, None] + ar[:, None] * size + ar
            images[flat[sil]] = pix[pick][sil]
            masks[flat[sil]] = np.broadcast_to(values[g][:, None, None], sil.shape)[sil]
    return images.reshape(n, size, size), masks.reshape(n, size, size)
