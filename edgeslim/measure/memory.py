"""Peak memory of running an artifact, measured, in a fresh process.

The probe (a fresh interpreter running ``_probe``) imports the runtime, then resets the kernel's
peak-RSS mark (Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS), loads the
artifact, runs it ``runs`` times on one batch, and reports VmHWM minus the RSS before loading: the
memory that loading and running the artifact took (weights, arenas, activations), without the
interpreter and the libraries, which every deployment pays differently. A fresh process per
measurement, because allocators keep what an earlier artifact freed.

The probe imports only the runtime seam and the one runtime it measures (not edgeslim's package
roots, which import torch), so a probe costs about a second; ``peak_memories`` runs one probe per
artifact at once (each its own process: their peaks do not mix).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..core.errors import EdgeslimError
from ..core.shapes import batched

METHOD = "peak RSS above the RSS before loading, in a fresh process (Linux VmHWM, reset through /proc/self/clear_refs)"
_ROOT = str(Path(__file__).resolve().parents[2])
# the probe's interpreter: the package roots as bare namespaces (their __init__ imports torch), then the probe
_BOOT = ("import sys, types\n"
         "for n in ('edgeslim', 'edgeslim.measure'):\n"
         "    m = types.ModuleType(n); m.__path__ = [sys.argv[1] + '/' + n.replace('.', '/')]; sys.modules[n] = m\n"
         "from edgeslim.measure.memory import main\n"
         "main(sys.argv[2])\n")


def peak_memory(artifact: str | os.PathLike, input_shape, *, runtime: str | None = None, threads: int = 1,
                runs: int = 3, timeout: float = 300) -> dict[str, Any]:
    """{"peak_memory_bytes", "method", "runtime"} of running ``artifact`` (its runtime chosen by
    ``runtime`` or by its suffix) on one batch of ``input_shape``."""
    return peak_memories([artifact], input_shape, runtime=runtime, threads=threads, runs=runs, timeout=timeout)[0]


def peak_memories(artifacts: list, input_shape, *, runtime: str | None = None, threads: int = 1, runs: int = 3,
                  timeout: float = 300) -> list[dict[str, Any]]:
    """``peak_memory`` of each artifact, the probes running at once, one fresh process each."""
    procs = []
    for artifact in artifacts:
        job = {"artifact": str(Path(artifact).resolve()), "shape": list(batched(input_shape)),
               "runtime": runtime or _runtime_name(artifact), "threads": int(threads), "runs": int(runs)}
        procs.append((artifact, job["runtime"], subprocess.Popen(
            [sys.executable, "-c", _BOOT, _ROOT, json.dumps(job)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})))
    return [_result(artifact, name, p, timeout) for artifact, name, p in procs]


def _result(artifact, name: str, p: subprocess.Popen, timeout: float) -> dict[str, Any]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise EdgeslimError(f"measuring the memory of {artifact} took more than {timeout:.0f}s") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        why = (err.strip().splitlines() or ["no output"])[-1]
        raise EdgeslimError(f"the memory probe of {artifact} in {name} failed: {why}")
    return json.loads(lines[-1])


def _runtime_name(artifact) -> str:
    from .. import runtimes

    rt = runtimes.for_artifact(artifact)
    if rt is None:
        raise EdgeslimError(f"no runtime runs {artifact}", hint="give runtime=NAME")
    return rt.name


def _status() -> tuple[int, int]:
    s = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", s)[1]) * 1024, int(re.search(r"VmRSS:\s+(\d+)", s)[1]) * 1024


def _probe(job: dict) -> dict:
    import gc

    import numpy as np

    from .. import runtimes

    rt = runtimes.get(job["runtime"])
    x = np.random.default_rng(0).standard_normal(job["shape"], dtype=np.float32)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # the peak mark = the RSS now
    _, before = _status()
    runner = rt.load(job["artifact"], threads=job["threads"])
    for _ in range(job["runs"]):
        runner(x)
    peak, _ = _status()
    return {"peak_memory_bytes": max(0, peak - before), "method": METHOD, "runtime": rt.version()}


def main(job: str) -> None:
    """The probe's entry point (in its own interpreter): one JSON line out, or one error line and exit 1."""
    import warnings

    warnings.filterwarnings("ignore")
    try:
        print(json.dumps(_probe(json.loads(job))))
    except (OSError, EdgeslimError) as e:  # no /proc (not Linux), or the artifact does not load
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
