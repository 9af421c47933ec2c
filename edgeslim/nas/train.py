"""Training the weight-sharing supernet once, resumably.

    spos      single-path one-shot (Guo et al. 2020): each step trains one subnet drawn uniformly
    sandwich  BigNAS / OFA's sandwich rule: each step trains the largest subnet on the labels, then
              the smallest and ``random_subnets`` uniform ones, each distilled in place from the
              largest's (detached) predictions; the gradients of all of them make one update

SGD with Nesterov momentum, warm-up and cosine decay (edgeslim.train's schedule), gradient clipping.
After every epoch the supernet's weights and the optimizer's momentum go to ``DIR/.work/supernet``
(safetensors, plus a JSON record of the epoch and the settings): a killed run resumes at the last
finished epoch with the same schedule; a run with other settings starts afresh (and says so).
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.errors import UsageError
from ..core.io import atomic_path, write_json
from ..train.loop import optimizer_and_schedule, seed_everything, seeded_shuffle
from .supernet import Supernet

RULES = ("spos", "sandwich")


@dataclasses.dataclass(frozen=True)
class SupernetTraining:
    epochs: float = 6
    rule: str = "sandwich"
    random_subnets: int = 2  # sandwich: uniform subnets between the largest and the smallest
    distill: bool = True  # sandwich: the others learn the largest's predictions (in-place distillation)
    temperature: float = 1.0
    lr: float = 0.05
    weight_decay: float = 4e-5
    clip_grad: float = 5.0
    max_batches: int | None = None  # per epoch (tests, smoke runs)
    seed: int = 0

    def __post_init__(self):
        if self.rule not in RULES:
            raise UsageError(f"supernet rule {self.rule!r} is not known", hint=f"one of: {', '.join(RULES)}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, (int, float)) or not self.epochs > 0:
            raise UsageError(f"supernet epochs must be a number > 0, got {self.epochs!r}")
        if not isinstance(self.random_subnets, int) or self.random_subnets < 0:
            raise UsageError(f"random_subnets must be an integer >= 0, got {self.random_subnets!r}")

    def record(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items()}


def subnets_of_step(net: Supernet, cfg: SupernetTraining, rng: random.Random) -> list[dict]:
    sp = net.space
    if cfg.rule == "spos":
        return [sp.sample(rng)]
    return [sp.largest(), sp.smallest()] + [sp.sample(rng) for _ in range(cfg.random_subnets)]


def _step(net: Supernet, x, y, archs: list[dict], cfg: SupernetTraining) -> float:
    """Forward and backward of every subnet of one step; the first one's loss value is returned."""
    teacher, first = None, None
    for k, arch in enumerate(archs):
        out = net.set_arch(arch)(x)
        if teacher is not None and cfg.distill:
            t = cfg.temperature
            loss = F.kl_div(F.log_softmax(out / t, 1), teacher, reduction="batchmean") * t * t
        else:
            loss = F.cross_entropy(out, y)
        if not math.isfinite(loss.item()):
            from ..train import TrainingDiverged

            raise TrainingDiverged(k, loss.item())
        loss.backward()
        if k == 0:
            first = loss.item()
            if cfg.rule == "sandwich":
                teacher = F.softmax(out.detach() / cfg.temperature, 1)
    return first


def _paths(work: Path) -> tuple[Path, Path, Path]:
    d = work / "supernet"
    return d / "weights.safetensors", d / "momentum.safetensors", d / "state.json"


def _save(net: Supernet, opt, work: Path, state: dict) -> None:
    from safetensors.torch import save_file

    w, m, s = _paths(work)
    w.parent.mkdir(parents=True, exist_ok=True)
    names = {id(p): n for n, p in net.named_parameters()}
    bufs = {names[id(p)]: st["momentum_buffer"].contiguous() for g in opt.param_groups for p in g["params"]
            if (st := opt.state.get(p)) and st.get("momentum_buffer") is not None}
    with atomic_path(w) as tmp:
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp))
    with atomic_path(m) as tmp:
        save_file(bufs, str(tmp))
    write_json(s, state)  # written last: the epoch it names has its weights on disk


def _resume(net: Supernet, opt, work: Path, want: dict, log) -> int:
    """Epochs already done (0 when nothing matching is on disk); loads weights and momentum."""
    from safetensors.torch import load_file

    w, m, s = _paths(work)
    if not s.is_file():
        return 0
    try:
        state = json.loads(s.read_text())
    except (OSError, ValueError):
        return 0
    if state.get("settings") != want:
        log("supernet: the checkpoint in the work folder was trained with other settings; training afresh")
        return 0
    net.load_state_dict(load_file(str(w)))
    bufs = load_file(str(m))
    for n, p in net.named_parameters():
        if n in bufs:
            opt.state[p]["momentum_buffer"] = bufs[n]
    log(f"supernet: resuming after epoch {state['epochs_done']} of {want['training']['epochs']}")
    return int(state["epochs_done"])


def train_supernet(net: Supernet, data, cfg: SupernetTraining, *, work: Path, log: Callable[[str], None],
                   deadline: float | None = None) -> dict:
    """Train ``net`` in place on ``data.train``; returns {"epochs_done", "seconds", "steps", "rule"}."""
    loader = data.train
    per_epoch = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    total = max(1, math.ceil(per_epoch * cfg.epochs))
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt, sched = optimizer_and_schedule(trainable, total, min(100, math.ceil(0.05 * total)), lr=cfg.lr,
                                        optimizer="sgd", weight_decay=cfg.weight_decay, momentum=0.9,
                                        schedule="cosine")
    want = json.loads(json.dumps({"training": cfg.record(), "space": net.space.to_dict(), "classes": net.num_classes}))
    done = _resume(net, opt, work, want, log)
    steps = min(total, done * per_epoch)
    with warnings.catch_warnings():  # replaying the schedule of the finished epochs, before any optimizer step
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        for _ in range(steps):
            sched.step()
    t0, n_epochs = time.monotonic(), math.ceil(cfg.epochs)
    for epoch in range(done, n_epochs):
        if deadline is not None and time.monotonic() >= deadline:
            log(f"supernet: the time for training ran out after epoch {epoch} of {n_epochs}")
            break
        seed_everything(cfg.seed + epoch)
        rng = random.Random(cfg.seed * 1000 + epoch)
        net.train()
        running, seen, t_epoch = 0.0, 0, time.monotonic()
        with seeded_shuffle(loader, cfg.seed + epoch):
            for i, (x, y) in enumerate(loader):
                if i >= per_epoch or steps >= total:
                    break
                opt.zero_grad(set_to_none=True)
                running += _step(net, x, y, subnets_of_step(net, cfg, rng), cfg) * x.shape[0]
                seen += x.shape[0]
                torch.nn.utils.clip_grad_norm_(trainable, cfg.clip_grad)
                opt.step()
                sched.step()
                steps += 1
        done = epoch + 1
        _save(net, opt, work, {"epochs_done": done, "settings": want})
        log(f"supernet epoch {done}/{n_epochs} ({cfg.rule}): loss of the {'largest' if cfg.rule == 'sandwich' else 'sampled'}"
            f" subnet {running / max(seen, 1):.4f}, {time.monotonic() - t_epoch:.0f}s")
    net.set_arch(net.space.largest()).eval()
    return {"epochs_done": done, "epochs": cfg.epochs, "steps": steps, "rule": cfg.rule,
            "seconds": round(time.monotonic() - t0, 1)}
