"""Peak memory of running an artifact, measured, in a fresh process.

The probe (``python -m edgeslim.measure.memory``) imports the runtime, then resets the kernel's
peak-RSS mark (Linux: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS), loads the
artifact, runs it ``runs`` times on one batch, and reports VmHWM minus the RSS before loading: the
memory that loading and running the artifact took (weights, arenas, activations), without the
interpreter and the libraries, which every deployment pays differently. A fresh process per
measurement, because allocators keep what an earlier artifact freed.
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


def peak_memory(artifact: str | os.PathLike, input_shape, *, runtime: str | None = None, threads: int = 1,
                runs: int = 3, timeout: float = 300) -> dict[str, Any]:
    """{"peak_memory_bytes", "method", "runtime"} of running ``artifact`` (its runtime chosen by
    ``runtime`` or by its suffix) on one batch of ``input_shape``."""
    from .. import runtimes

    name = runtime or _runtime_name(artifact, runtimes)
    job = {"artifact": str(Path(artifact).resolve()), "shape": list(batched(input_shape)), "runtime": name,
           "threads": int(threads), "runs": int(runs)}
    try:
        p = subprocess.run([sys.executable, "-m", "edgeslim.measure.memory", json.dumps(job)], capture_output=True,
                           text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    except subprocess.TimeoutExpired:
        raise EdgeslimError(f"measuring the memory of {artifact} took more than {timeout:.0f}s") from None
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0 or not lines:
        why = (p.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeslimError(f"the memory probe of {artifact} in {name} failed: {why}")
    return json.loads(lines[-1])


def _runtime_name(artifact, runtimes) -> str:
    suffix = Path(artifact).suffix
    for n in runtimes.names():
        if suffix and runtimes._SUFFIXES.get(n) == suffix:
            return n
    raise EdgeslimError(f"no runtime runs {artifact}", hint="give runtime=NAME")


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


if __name__ == "__main__":
    try:
        print(json.dumps(_probe(json.loads(sys.argv[1]))))
    except (OSError, EdgeslimError) as e:  # no /proc (not Linux), or the artifact does not load
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
