"""Training stability (issue 16): LeNet-5, 3 epochs on Fashion-MNIST, seeds 0-9 at 1 and 2 threads.

    python benchmarks/training_stability.py                   # everything (resumes finished runs)
    python benchmarks/training_stability.py --seeds 3 --threads 1   # a reduced run (its own section note)
    python benchmarks/training_stability.py --render          # rebuild the section from saved measurements

Part "recipe": `edgeslim train --model lenet5 --data fashion-mnist --epochs 3 --seed S` (run in this
process through ``edgeslim.cli.main``, with ``torch.set_num_threads(T)``) for every seed and thread
count: did it diverge, its test top-1, how many steps had their gradient clipped.

Part "old": the recipe before issue 16 (no warm-up, no gradient clipping, same seeds, same 3-epoch
cosine schedule), stopped after its first ``--old-steps`` steps, where the divergences were seen:
how many diverged.

Part "repeat": the same command line run twice as separate processes: are the weights
bit-identical and the test top-1 equal?
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import CACHE, results_section, this_command, utc_stamp  # noqa: E402

NAME = "training_stability"
WORK = CACHE / NAME
SAVED = WORK / "results.json"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def weights_digest(ckpt: Path) -> str:
    return hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()[:16]


def train_args(seed: int, epochs: float, out: Path) -> list[str]:
    return ["train", "--model", "lenet5", "--data", "fashion-mnist", "--epochs", f"{epochs:g}", "--seed", str(seed),
            "--out", str(out), "--json"]


def run_recipe(seed: int, threads: int, epochs: float) -> dict:
    """One `edgeslim train` in this process at ``threads`` torch threads."""
    import contextlib
    import io

    from edgeslim.cli import main

    out = WORK / "runs" / f"t{threads}-s{seed}"
    torch.set_num_threads(threads)
    stdout, stderr = io.StringIO(), io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(train_args(seed, epochs, out))
    row = {"seed": seed, "threads": threads, "rc": rc, "wall_s": time.perf_counter() - t}
    if rc != 0:
        row["error"] = stderr.getvalue().strip().splitlines()[0] if stderr.getvalue().strip() else f"exit {rc}"
        row["diverged"] = "diverged" in row.get("error", "")
        return row
    details = json.loads((out / "report.json").read_text())["details"]
    row.update(diverged=False, test_top1=json.loads(stdout.getvalue())["test_top1"], steps=details["steps"],
               clipped_steps=details["clipped_steps"], warmup_steps=details["warmup_steps"],
               weights=weights_digest(out / "checkpoint"))
    return row


def run_old(seed: int, threads: int, epochs: float, steps: int) -> dict:
    """The recipe before issue 16, first ``steps`` steps of the same schedule: diverged or not."""
    from edgeslim import data, models
    from edgeslim.train import TrainingDiverged, fit, seed_everything

    class Enough(Exception):
        pass

    def stop(step, model):
        if step >= steps:
            raise Enough

    torch.set_num_threads(threads)
    bundle = data.load("fashion-mnist", seed=seed)
    seed_everything(seed)
    model = models.create("lenet5", num_classes=10, in_channels=1)
    row = {"seed": seed, "threads": threads, "diverged": False, "at_step": None}
    try:
        fit(model, bundle, epochs=epochs, seed=seed, warmup_steps=0, clip_grad=0, on_step=[stop], progress=False)
    except Enough:
        pass
    except TrainingDiverged as e:
        row.update(diverged=True, at_step=e.step)
    return row


def run_repeat(seed: int, epochs: float, threads: int) -> dict:
    """The same command line twice, each its own process with ``threads`` threads (OMP_NUM_THREADS)."""
    exe = Path(sys.executable).with_name("edgeslim")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgeslim.cli"]
    rows = []
    for k in ("a", "b"):
        out = WORK / "repeat" / k
        args = train_args(seed, epochs, out)
        p = subprocess.run(cmd + args, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
        if p.returncode:
            rows.append({"rc": p.returncode, "error": p.stderr.strip().splitlines()[0]})
            continue
        rows.append({"rc": 0, "test_top1": json.loads(p.stdout)["test_top1"], "weights": weights_digest(out / "checkpoint")})
    line = "edgeslim " + " ".join(train_args(seed, epochs, Path("DIR")))
    return {"command": line, "runs": rows, "threads": threads}


def _load() -> dict:
    return json.loads(SAVED.read_text()) if SAVED.exists() else {}


def _save(saved: dict) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    SAVED.write_text(json.dumps(saved, indent=1))


def _recipe_lines(rows: list[dict], threads: list[int]) -> list[str]:
    lines = ["| threads | seeds | diverged | test top-1 min | mean | max | steps with the gradient clipped (mean) |",
             "|---|---|---|---|---|---|---|"]
    for t in threads:
        rs = [r for r in rows if r["threads"] == t]
        ok = [r["test_top1"] for r in rs if not r.get("diverged") and r["rc"] == 0]
        clipped = [r["clipped_steps"] for r in rs if "clipped_steps" in r]
        lines.append(f"| {t} | {len(rs)} | {sum(bool(r.get('diverged')) for r in rs)} | "
                     + (f"{min(ok):.2f} | {statistics.mean(ok):.2f} | {max(ok):.2f} | " if ok else "- | - | - | ")
                     + (f"{statistics.mean(clipped):.1f} of {rs[0]['steps']} |" if clipped else "- |"))
    per_seed = ["", "| seed | " + " | ".join(f"{t} thread{'s' * (t > 1)}" for t in threads) + " |",
                "|---|" + "---|" * len(threads)]
    for s in sorted({r["seed"] for r in rows}):
        cells = []
        for t in threads:
            r = next((r for r in rows if r["seed"] == s and r["threads"] == t), None)
            cells.append("-" if r is None else r.get("error", f"{r['test_top1']:.2f}") if r["rc"] else
                         f"{r['test_top1']:.2f}")
        per_seed.append(f"| {s} | " + " | ".join(cells) + " |")
    failed = [r for r in rows if r["rc"] != 0]
    notes = [f"- seed {r['seed']}, {r['threads']} threads: {r['error']}" for r in failed]
    return lines + per_seed + ([""] + notes if notes else [])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def section(saved: dict) -> str:
    from edgeslim.train import loop

    run = saved["run"]
    lines = ["## Training stability: LeNet-5 on Fashion-MNIST (issue 16)", "",
             f"`edgeslim train --model lenet5 --data fashion-mnist --epochs {run['epochs']:g} --seed S` for seeds "
             f"{min(run['seeds'])}-{max(run['seeds'])} at {' and '.join(map(str, run['threads']))} torch thread{'s' * (run['threads'] != [1])} "
             f"(default recipe: linear warm-up over {loop.WARMUP_FRACTION:.0%} of the steps, at most "
             f"{loop.WARMUP_MAX}; gradient norm clipped to {loop.DEFAULT_CLIP_GRAD:g}).", ""]
    lines += _recipe_lines(saved.get("recipe", []), run["threads"])
    old = saved.get("old", [])
    if old:
        div = [r for r in old if r["diverged"]]
        lines += ["", f"Before (no warm-up, no clipping, same seeds and schedule, first {run['old_steps']} steps "
                      f"only): {len(div)} of {_plural(len(old), 'run')} diverged"
                  + (f" (at steps {', '.join(str(r['at_step']) for r in div)})." if div else ".")]
    rep = saved.get("repeat")
    if rep:
        runs = rep["runs"]
        same = (len(runs) == 2 and all(r["rc"] == 0 for r in runs) and runs[0]["weights"] == runs[1]["weights"])
        accs = ", ".join(f"{r['test_top1']:.2f}" if r["rc"] == 0 else r["error"] for r in runs)
        lines += ["", f"Repeat: `{rep['command']}` run twice as separate processes "
                      f"({_plural(rep['threads'], 'thread')}): "
                      f"test top-1 {accs}; weights {'bit-identical' if same else 'DIFFERENT'}."]
    if run.get("reduced"):
        lines += ["", f"_Reduced run: {run['reduced']}._"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    ap.add_argument("--threads", default="1,2", help="torch thread counts")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--old-steps", type=int, default=200, help="steps of the old recipe to run per seed")
    ap.add_argument("--parts", default="recipe,old,repeat")
    ap.add_argument("--repeat-threads", type=int, default=2, help="OMP_NUM_THREADS of the two repeated commands")
    ap.add_argument("--fresh", action="store_true", help="ignore saved runs")
    ap.add_argument("--render", action="store_true", help="rebuild the RESULTS.md section from saved measurements")
    args = ap.parse_args()
    saved = {} if args.fresh else _load()
    if args.render:
        results_section(NAME, section(saved), command=saved["command"], stamp=saved["stamp"])
        return 0
    threads = [int(t) for t in args.threads.split(",")]
    seeds = list(range(args.seeds))
    full = args.seeds == 10 and threads == [1, 2] and args.epochs == 3 and args.parts == "recipe,old,repeat"
    run = {"seeds": seeds, "threads": threads, "epochs": args.epochs, "old_steps": args.old_steps,
           "reduced": None if full else f"seeds 0-{args.seeds - 1}, threads {args.threads}, {args.epochs:g} epochs, "
                                        f"parts {args.parts}"}
    if saved.get("run", {}).get("epochs") != args.epochs:
        saved = {}
    saved.update(run=run, command=this_command(), stamp=utc_stamp())
    parts = args.parts.split(",")
    for t in threads:
        for s in seeds:
            if "recipe" in parts and not any(r["seed"] == s and r["threads"] == t for r in saved.get("recipe", [])):
                log(f"recipe: seed {s}, {t} threads")
                saved.setdefault("recipe", []).append(run_recipe(s, t, args.epochs))
                log(f"  -> {saved['recipe'][-1].get('test_top1', saved['recipe'][-1].get('error'))}")
                _save(saved)
            if "old" in parts and not any(r["seed"] == s and r["threads"] == t for r in saved.get("old", [])):
                saved.setdefault("old", []).append(run_old(s, t, args.epochs, args.old_steps))
                log(f"old recipe: seed {s}, {t} threads: diverged {saved['old'][-1]['diverged']}")
                _save(saved)
    if "repeat" in parts:
        log("repeat: one command line, twice")
        saved["repeat"] = run_repeat(0, args.epochs, args.repeat_threads)
        _save(saved)
    results_section(NAME, section(saved), command=saved["command"], stamp=saved["stamp"])
    print(section(saved))
    return 0


if __name__ == "__main__":
    sys.exit(main())
