"""Device agent benchmark: latency timed here versus through `edgeslim agent` on loopback.

An agent process is started on 127.0.0.1; each artifact (zoo lenet5 and resnet20 as fp32 ONNX, resnet20
as int8 QDQ ONNX through edgeslim's PTQ; batch 1) is timed locally (``bench``, a fresh session in this
process) and through the agent (the same timing, run there), in interleaved rounds in shuffled order so
that the machine's drift hits both alike. Reported: the median over rounds of each side's per-round
median, their ratio, each side's run-to-run spread (max - min of the per-round medians, in % of the
median), and the per-candidate overhead of going through the agent: the wall time of one round trip
minus the timed runs' total (upload, the agent's session load and warm-up, the HTTP exchange), next to
the same figure for the local timing (session load and warm-up only).

    python benchmarks/agent.py [--rounds 7] [--runs 100] [--warmup 10] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import random
import secrets
import select
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _common import results_section

SHAPE = (1, 1, 28, 28)
ARTIFACTS = [("lenet5 fp32", "lenet5", False), ("resnet20 fp32", "resnet20", False),
             ("resnet20 int8 (PTQ W8A8)", "resnet20", True)]


def build(work: Path) -> list[tuple[str, Path]]:
    """The artifacts: random weights (latency does not depend on them), int8 through edgeslim's PTQ."""
    import torch

    import edgeslim
    from edgeslim import models, runtimes
    from edgeslim.quantization import PTQ

    torch.manual_seed(0)
    example = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(0))
    calib = torch.randn(64, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
    out = []
    for i, (label, spec, int8) in enumerate(ARTIFACTS):
        model = models.create(spec, num_classes=10, in_channels=1).eval()
        if int8:
            model = edgeslim.quantize(model, PTQ(bits=8, calib_batches=2), data=calib, progress=False)
        path = work / f"{i}-{spec}{'-int8' if int8 else ''}.onnx"
        runtimes.get("onnxruntime").export(model, path, example)
        out.append((label, path))
    return out


def start_agent(work: Path):
    from edgeslim.agent import Agent
    from edgeslim.testing import cli_command

    token = secrets.token_urlsafe(24)
    (work / "token").write_text(token)
    os.chmod(work / "token", 0o600)
    proc = subprocess.Popen(cli_command() + ["agent", "--port", "0", "--token-file", str(work / "token")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline() if select.select([proc.stdout], [], [], 120)[0] else ""
    if not line.startswith("agent listening on "):
        proc.kill()
        raise SystemExit(f"the agent did not start: {line!r}")
    return proc, Agent(line.split()[-1], token)


def measure(artifacts, agent, *, rounds: int, runs: int, warmup: int, threads: int) -> dict:
    from edgeslim.measure import bench

    rec = {label: {"local": [], "agent": [], "local_over": [], "agent_over": [], "load": [], "trip": []}
           for label, _ in artifacts}
    for r in range(rounds):
        jobs = [(label, path, side) for label, path in artifacts for side in ("local", "agent")]
        random.Random(r).shuffle(jobs)
        for label, path, side in jobs:
            d = rec[label]
            if side == "local":
                t0 = time.perf_counter()
                s = bench([path], SHAPE, threads=threads, warmup=warmup, runs=runs, seed=r)[0]
                wall = (time.perf_counter() - t0) * 1e3
                d["local"].append(s["median_ms"])
                d["local_over"].append(wall - s["mean_ms"] * s["runs"])
            else:
                res = agent.time(path, SHAPE, threads=threads, warmup=warmup, runs=runs, seed=r)
                d["agent"].append(statistics.median(res["times_ms"]))
                d["agent_over"].append(res["round_trip_ms"] - sum(res["times_ms"]))
                d["load"].append(res["load_ms"])
                d["trip"].append(res["round_trip_ms"])
        print(f"round {r + 1}/{rounds} done", flush=True)
    return rec


def spread(xs: list[float]) -> float:
    return 100 * (max(xs) - min(xs)) / statistics.median(xs)


def table(artifacts, rec: dict) -> tuple[str, str, list]:
    med = statistics.median
    lat = ["| artifact | bytes | local median ms | agent median ms | agent / local | local spread | agent spread "
           "| within noise |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    over = ["| artifact | agent round trip ms | its timed runs ms | agent overhead ms | local overhead ms "
            "| extra per candidate ms | agent session load ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    extras = []
    for label, path in artifacts:
        d = rec[label]
        lo, ag = med(d["local"]), med(d["agent"])
        noise = max(spread(d["local"]), spread(d["agent"]))
        ok = 100 * abs(ag - lo) / lo <= noise
        lat.append(f"| {label} | {path.stat().st_size:,} | {lo:.4f} | {ag:.4f} | {ag / lo:.3f} | "
                   f"{spread(d['local']):.1f}% | {spread(d['agent']):.1f}% | {'yes' if ok else 'no'} |")
        extra = med(d["agent_over"]) - med(d["local_over"])
        extras.append(extra)
        over.append(f"| {label} | {med(d['trip']):.1f} | {med(d['trip']) - med(d['agent_over']):.1f} | "
                    f"{med(d['agent_over']):.1f} | {med(d['local_over']):.1f} | {extra:.1f} | {med(d['load']):.1f} |")
    return "\n".join(lat), "\n".join(over), extras


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        artifacts = build(work)
        proc, agent = start_agent(work)
        try:
            rec = measure(artifacts, agent, rounds=args.rounds, runs=args.runs, warmup=args.warmup,
                          threads=args.threads)
        finally:
            proc.terminate()
            proc.wait(10)
        lat, over, extras = table(artifacts, rec)
    print(lat, over, sep="\n\n")
    text = ("## Device agent: local timing vs through `edgeslim agent` on loopback\n\n"
            f"Batch 1, {args.threads} thread(s), {args.warmup} warm-up + {args.runs} timed runs per measurement, "
            f"{args.rounds} rounds; in each round every artifact is timed once here (`bench`, a fresh session in "
            "this process) and once through an agent process on 127.0.0.1 (the same timing, run there), in "
            "shuffled order. Latency is the median over rounds of each per-round median; spread is max - min of "
            "the per-round medians in % of their median; 'within noise' means |agent - local| / local is at most "
            "the larger spread. Random weights (latency does not depend on them).\n\n" + lat + "\n\n"
            "Overhead per candidate: wall time of one call minus its timed runs' total (medians over rounds). The "
            "agent's includes the upload, the HTTP exchange, its session load and warm-up; the local one the "
            "session load and warm-up only; 'extra' is their difference, the cost of timing on the agent: "
            f"{min(extras):.1f} to {max(extras):.1f} ms per candidate here (loopback; a real network adds the "
            "artifact's transfer time).\n\n" + over + f"\n\nWhole run: {time.perf_counter() - t0:.0f} s.")
    results_section("agent", text)


if __name__ == "__main__":
    main()
