"""Scoring subnets on the supernet, and measuring the finalists as the files they deploy as.

    Limits      the latency limit (ms), the size limit (bytes of the fp32 file) and the metric's floor;
                ``excess`` sums each miss relative to its limit (0: feasible), what every strategy ranks
    Scorer      ``scorer(arch) -> Candidate``: the subnet's BatchNorm statistics recalibrated on fixed
                training batches, its validation score in the metric (the first ``val_batches``), its
                latency from the lookup table, its size predicted as 4 bytes a parameter; each answer is
                stored (store.py), an architecture scored before is answered from the study
    finalists   the best subnets extracted as plain networks, exported to the runtime, timed whole, sized
                on disk and scored on the whole validation split: the figures the winner is chosen on
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from ..core.shapes import batched
from .candidate import Candidate, best
from .store import NasStore
from .supernet import Supernet, extract, recalibrate


@dataclasses.dataclass(frozen=True)
class Limits:
    latency_ms: float | None = None
    size_bytes: int | None = None
    min_score: float | None = None

    def excess(self, score: float | None, latency_ms: float, size_bytes: int) -> float:
        out = 0.0
        if self.latency_ms is not None:
            out += max(0.0, latency_ms / self.latency_ms - 1)
        if self.size_bytes is not None:
            out += max(0.0, size_bytes / self.size_bytes - 1)
        if self.min_score is not None:
            out += max(0.0, (self.min_score - (score if score is not None else 0.0)) / max(abs(self.min_score), 1.0))
        return out

    def text(self, metric: str = "top1") -> str:
        parts = [f"latency <= {self.latency_ms:.3f} ms" if self.latency_ms is not None else None,
                 f"fp32 file <= {self.size_bytes / 1e3:.1f} kB" if self.size_bytes is not None else None,
                 f"val {metric} >= {self.min_score:.2f}" if self.min_score is not None else None]
        return ", ".join(p for p in parts if p) or "none (the most accurate subnet wins)"


class Scorer:
    def __init__(self, net: Supernet, data, shape, limits: Limits, metric, cfg, work: Path, fingerprint: dict,
                 table, log, agent=None):
        self.net, self.data, self.shape, self.limits, self.metric, self.cfg = net, data, shape, limits, metric, cfg
        self.table, self.log, self.work, self.agent = table, log, work, agent
        from ..train.loop import seeded_shuffle

        with seeded_shuffle(data.train, cfg.seed):  # the same images in every run, a resumed one included
            self.calib = [x for (x, _), _ in zip(data.train, range(cfg.calib_batches))]
        self.store = NasStore(work.parent / "study.db", net.space, fingerprint)
        self.scored = 0

    def params(self, arch: dict) -> int:
        from ..models import create

        sub = create("nasnet", num_classes=self.net.num_classes, in_channels=self.net.in_channels,
                     **self.net.space.net(arch))
        return sum(p.numel() for p in sub.parameters())

    def score(self, model: nn.Module, max_batches: int | None) -> float:
        from ..metrics import torch_runner

        model.eval()
        with torch.no_grad():
            return self.metric.evaluate(torch_runner(model), self.data.val, max_batches=max_batches).value

    def __call__(self, arch: dict) -> Candidate:
        known = self.store.lookup(arch)
        if known is not None:
            return dataclasses.replace(known, cached=True)
        self.net.set_arch(arch)
        recalibrate(self.net, self.calib)
        score = self.score(self.net, self.cfg.val_batches)
        lat, params = self.table.predict(arch), self.params(arch)
        excess = self.limits.excess(score, lat, 4 * params)
        c = Candidate(dict(arch), round(score, 4), round(lat, 5), params, excess <= 0, round(excess, 5),
                      self.cfg.strategy)
        self.store.record(c)
        self.scored += 1
        if self.scored % 25 == 0:
            top = best(self.store.history())
            self.log(f"search: {self.scored} subnets scored; best so far val {top.score:.2f}, {top.latency_ms:.3f} ms"
                     f"{'' if top.feasible else ' (no subnet meets the limits yet)'}")
        return c

    def subnet(self, arch: dict, batches: list[torch.Tensor]) -> nn.Module:
        self.net.set_arch(arch)
        recalibrate(self.net, batches)
        return extract(self.net, arch)

    def val_batches_list(self) -> list:
        n = self.cfg.val_batches or len(self.data.val)
        return [b for b, _ in zip(self.data.val, range(n))]

    def finalists(self, history: list[Candidate], k: int, work: Path, reference: dict | None = None,
                  speedup: float | None = None) -> tuple[list[dict], Limits]:
        """The ``k`` best subnets measured as files, best first (feasible, then excess, then score), and
        the limits they were judged by: timed together in one bench call (fresh sessions in alternating
        rounds), beside the reference's file when there is one, so that an 'Nx' limit is the reference's
        latency in that same measurement divided by N."""
        from .. import runtimes
        from ..measure import bench

        rt = runtimes.get(self.cfg.runtime)
        folder = work / "finalists"
        folder.mkdir(parents=True, exist_ok=True)
        picks = sorted(history, key=Candidate.key)[:k]
        models, paths = [], []
        for i, c in enumerate(picks):
            models.append(self.subnet(c.arch, self.calib))
            paths.append(folder / f"finalist-{i}{rt.suffix}")
            rt.export(models[-1], paths[-1], torch.zeros(batched(self.shape)))
        targets = ([Path(reference["path"])] if reference else []) + paths
        times = [t["median_ms"] for t in bench(targets, batched(self.shape), threads=self.cfg.threads, warmup=5,
                                               runs=self.cfg.latency_runs, rounds=3, agent=self.agent)]
        limits = self.limits
        if reference:
            ref_ms, times = times[0], times[1:]
            if speedup:
                limits = dataclasses.replace(limits, latency_ms=ref_ms / speedup)
        out = []
        for i, (c, model, path, ms) in enumerate(zip(picks, models, paths, times)):
            size, score = rt.size(path), self.score(model, None)
            excess = limits.excess(score, ms, size)
            out.append({"arch": c.arch, "model": model, "predicted_ms": c.latency_ms, "measured_ms": round(ms, 5),
                        "size_bytes": size, "params": c.params, "search_score": c.score, "val_score": round(score, 4),
                        "feasible": excess <= 0, "excess": round(excess, 5)})
            self.log(f"finalist {i}: val {score:.2f} (search {c.score:.2f}), {ms:.3f} ms measured against "
                     f"{c.latency_ms:.3f} predicted, {size / 1e3:.1f} kB")
        return sorted(out, key=lambda f: (not f["feasible"], f["excess"], -f["val_score"], f["measured_ms"])), limits
