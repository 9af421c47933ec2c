"""Shared helpers for benchmark scripts: cached reference models and RESULTS.md sections.

Every script owns one section of RESULTS.md between `<!-- NAME -->` and `<!-- /NAME -->` and rewrites
only that section (under a file lock, atomically), with the machine, date and command it ran.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import os
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "RESULTS.md"
CACHE = ROOT / ".cache"
HEADER = ("# edgeslim benchmark results\n\nEvery number below was written by the script named in its section; "
          "rerun that command to reproduce it. Figures compared in one table were measured in one run on the "
          "same machine.\n")


def machine_line(threads: int | None = None) -> str:
    from edgeslim.core.report import machine_info

    m = machine_info(threads)
    return f"{m['cpu']} ({m['cores']} cores), {m['runtime']}, torch {m['torch']}, Python {m['python']}"


def this_command() -> str:
    """The command line that runs this script, as a user would type it from the repository root."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT.parent), *sys.argv[1:]])


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def results_section(name: str, markdown: str, *, command: str | None = None, stamp: str | None = None) -> Path:
    """Replace (or append) section ``name`` of RESULTS.md with ``markdown`` plus a provenance line
    (``command`` and ``stamp``: of the run that measured it, when the section is rendered later)."""
    from edgeslim.core.io import atomic_write_text

    command = command or this_command()
    stamp = stamp or utc_stamp()
    body = (f"<!-- {name} -->\n{markdown.rstrip()}\n\n"
            f"_Measured {stamp} on {machine_line()} with `{command}`._\n<!-- /{name} -->")
    with open(ROOT / ".RESULTS.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = RESULTS.read_text() if RESULTS.exists() else HEADER
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            text = head + body + rest.split(end, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + body + "\n"
        atomic_write_text(RESULTS, text)
    return RESULTS


def cached_trained(spec: str, epochs: float, *, data: str = "fashion-mnist", seed: int = 0, lr: float | None = None,
                   optimizer: str = "sgd", **build):
    """Train ``spec`` once and reuse it: returns (model, checkpoint dir, sidecar). The cache key is
    spec, epochs, data, seed, lr and optimizer."""
    import edgeslim.data
    from edgeslim import models
    from edgeslim.train import fit, task_score

    epochs = int(epochs) if float(epochs).is_integer() else float(epochs)  # 1 and 1.0 share an entry
    key = f"{spec.replace(':', '_')}-{data.replace(':', '_').replace('/', '_')}-e{epochs}-s{seed}-{optimizer}-lr{lr}"
    if build:
        key += "-" + "-".join(f"{k}{v}" for k, v in sorted(build.items()))
    ckpt = CACHE / key / "checkpoint"
    if (ckpt / "edgeslim.json").exists():
        model, meta = models.load(ckpt)
        return model, ckpt, meta
    bundle = edgeslim.data.load(data, seed=seed)
    build = {"num_classes": bundle.meta.num_classes, "in_channels": bundle.meta.input_shape[0], **build}
    torch_seed(seed)
    model = models.create(spec, **build)
    print(f"[cache] training {spec} for {epochs} epochs on {data} ...", flush=True)
    fit(model, bundle, epochs=epochs, lr=lr, optimizer=optimizer, seed=seed, progress=False)
    from edgeslim.metrics import default_for

    name = default_for(getattr(bundle.meta, "task", "classification"))  # top1, map, miou
    metrics = {f"test_{name}": task_score(model, bundle.test),
               f"val_{name}": task_score(model, bundle.val) if bundle.val is not None else None}
    models.save(model, ckpt, spec=spec, build=build, input_shape=bundle.meta.input_shape,
                classes=bundle.meta.classes, metrics=metrics)
    model, meta = models.load(ckpt)
    return model, ckpt, meta


def torch_seed(seed: int) -> None:
    from edgeslim.train import seed_everything

    seed_everything(seed)
