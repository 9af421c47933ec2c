"""ExecuTorch (the XNNPACK delegate, on CPU) as a Runtime: artifacts are .pte programs.

    rt = edgeslim.runtimes.get("executorch")
    rt.export(model, "m.pte", example)       # torch.export -> XNNPACK lowering -> .pte, verified
    run = rt.load("m.pte", threads=2)        # ExecuTorch's Python runtime; numpy batch -> first output

A float model is exported as it is and verified against torch on ``example`` (max abs diff < 1e-4).
A quantization simulation goes through the int8 exporter registered for its config under the runtime
name "executorch" (``core.registry.register_export(PTQ, runtime="executorch")``; PTQ's lives in
edgeslim/quantization/executorch_int8.py). The helpers ``to_pte``, ``save_pte`` and ``load_method``
are what such exporters build on.

A .pte holds a program for the batch size it was exported with (``example``'s): a runner given
another batch runs it in chunks of that size (the last one padded) and concatenates the outputs.

Threads: ExecuTorch has one XNNPACK thread pool per process, and XNNPACK binds a method to the pool
it was loaded on. A runner resizes the pool to its ``threads`` (``portable_lib._unsafe_reset_threadpool``)
before it loads its method, and before it runs when the pool has another size since -- reloading its
method then, as the old pool is gone. Runners with different thread counts therefore take turns (a
reload on each switch) and must not run at the same time from two Python threads.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.errors import EdgeslimError, ExportError, UsageError
from ..core.io import atomic_path
from .base import deploy_config, Runner, file_size, timed_runs

NAME = "executorch"
ATOL = 1e-4  # the float export's verification: max abs diff against torch on the example


def require() -> None:
    """An EdgeslimError with the install hint when the executorch package is missing (found, not
    imported: importing its runtime takes seconds, paid on the first export or load)."""
    import importlib.util

    try:
        import executorch  # noqa: F401  (the bare package: cheap)

        found = all(importlib.util.find_spec(m) is not None for m in ("executorch.exir", "executorch.runtime"))
    except (ImportError, ValueError):
        found = False
    if not found:
        raise EdgeslimError("the executorch runtime needs the package executorch",
                            hint="pip install edgeslim[executorch]")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def first_output(out: Any) -> torch.Tensor:
    """The first tensor of a model's (possibly nested) output."""
    leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    if not leaves:
        raise ExportError("the model returns no tensor")
    return leaves[0]


# -- export ----------------------------------------------------------------------------------------
def to_pte(module: nn.Module, example: torch.Tensor) -> bytes:
    """``module`` (eval mode, on CPU) as an ExecuTorch program for ``example``'s shape: torch.export,
    then ``to_edge_transform_and_lower`` with the XNNPACK partitioner, then ``to_executorch``."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    try:
        ep = torch.export.export(module, (example,))
    except Exception as e:  # torch.export raises many unrelated types
        raise ExportError(f"torch.export cannot capture the model for executorch: {_first_line(e)}",
                          hint="the model must be traceable by torch.export (no data-dependent control flow)") from None
    try:
        return bytes(to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    except Exception as e:  # noqa: BLE001 - exir raises many unrelated types
        raise ExportError(f"lowering to executorch (XNNPACK) failed: {_first_line(e)}") from None


def save_pte(buffer: bytes, path: str | os.PathLike, verify: Callable[[Path], dict]) -> dict:
    """Write ``buffer`` at ``path`` atomically (a temp file beside it, renamed over ``path`` once
    ``verify(temp_path)`` returns); {"path", "size_bytes", **what verify returned}."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer)
        info = verify(tmp)
    return {"path": str(path), "size_bytes": file_size(path), **info}


def export_float(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, atol: float = ATOL) -> dict:
    """The verified float .pte of ``model`` (left untouched): {"path", "size_bytes", "max_abs_diff",
    "batch", "delegate"}; an ExportError when the program's output differs from torch's by ``atol``."""
    model = copy.deepcopy(model).cpu().eval()
    example = example.detach().cpu().float()
    with torch.no_grad():
        ref = first_output(model(example)).float().numpy()
    buffer = to_pte(model, example)

    def verify(tmp: Path) -> dict:
        got = load_runner(tmp, threads=None, name=Path(path).name)(example.numpy())
        diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        if not diff < atol:  # NaN fails too
            raise ExportError(f"the executorch program {Path(path).name} differs from torch on the example: "
                              f"max abs diff {diff:.3g} (shape {got.shape} vs {ref.shape}), above {atol:g}")
        return {"max_abs_diff": diff}

    info = save_pte(buffer, path, verify)
    return {**info, "batch": int(example.shape[0]), "delegate": "XnnpackBackend"}


# -- load and run ----------------------------------------------------------------------------------
# XNNPACK binds each method, when it is loaded, to the process-wide thread pool of that moment
# (xnn_create_runtime with get_pthreadpool()); _unsafe_reset_threadpool destroys that pool and makes a
# new one, so a method loaded before a resize must never run again (it would use the freed pool).
# Every resize made here bumps _POOL["generation"]; a runner reloads its method when the generation
# it was loaded under is gone.
_POOL = {"generation": 0}


def _threadpool():
    """ExecuTorch's (get_count, reset) of its process-wide thread pool, or None where it has none."""
    try:
        from executorch.extension.pybindings import portable_lib as pl
    except ImportError:
        return None
    get, reset = (getattr(pl, n, None) for n in ("_threadpool_get_thread_count", "_unsafe_reset_threadpool"))
    return (get, reset) if get is not None and reset is not None else None


def set_threads(threads: int | None) -> bool:
    """Resize ExecuTorch's thread pool (XNNPACK's threads) to ``threads`` when it has another size
    (None: leave it); whether the runtime lets us (False: this build has no thread-pool control).
    Methods loaded before a resize are stale (see ``_POOL``)."""
    pool = _threadpool()
    if pool is None:
        return False
    get, reset = pool
    if threads is not None and get() != threads:
        reset(int(threads))
        _POOL["generation"] += 1
    return True


def read_program(path: str | os.PathLike, *, name: str | None = None) -> bytes:
    """The bytes of the .pte at ``path``; an ExportError naming the runtime and file when there is none."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ExportError(f"executorch cannot load {name or path}: "
                          f"{'no such file' if isinstance(e, FileNotFoundError) else e.strerror}") from None


def load_method(data: bytes, *, name: str):
    """The "forward" method (an ``executorch.runtime.Method``) of the program ``data`` (a .pte's
    bytes); one ExportError line naming the runtime and ``name`` when it cannot be loaded."""
    from executorch.runtime import Runtime

    try:
        program = Runtime.get().load_program(data)
        if "forward" not in program.method_names:
            raise ExportError(f"executorch cannot load {name}: the program has no 'forward' method "
                              f"(it has: {', '.join(sorted(program.method_names)) or 'none'})")
        return program.load_method("forward")
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - the pybindings raise RuntimeError, others possible
        raise ExportError(f"executorch cannot load {name}: {_first_line(e)}",
                          hint="is it a .pte written by this executorch version (and with its delegates)?") from None


class PteRunner:
    """An ExecuTorch method as a Runner: one float32 NCHW batch in, the first output out (float32), or
    every output (``outputs``, at the exported batch).

    The program runs the batch size it was exported with (``batch``); other batches are run in chunks
    of it, the last chunk padded by repeating its first sample, and the outputs concatenated.
    ``threads``: XNNPACK's thread count, set before the method is loaded (None: the pool as it is)."""

    def __init__(self, data: bytes, *, threads: int | None, name: str):
        self.data, self.name = data, name
        self.threads = None if threads is None else int(threads)
        self.threads_set = set_threads(self.threads)
        self.generation = _POOL["generation"]
        self.method = load_method(data, name=name)
        meta = self.method.metadata.input_tensor_meta(0)
        self.input_shape = tuple(int(s) for s in meta.sizes())
        self.batch = self.input_shape[0] if self.input_shape else 1

    def ready(self):
        """The method, on a pool of ``threads`` threads, reloaded when a resize made it stale."""
        set_threads(self.threads)
        if self.generation != _POOL["generation"]:
            self.generation = _POOL["generation"]
            self.method = load_method(self.data, name=self.name)
        return self.method

    def tensor(self, x: np.ndarray) -> torch.Tensor:
        """``x`` as the contiguous float32 tensor the method takes (its sample shape checked)."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if tuple(t.shape[1:]) != self.input_shape[1:]:
            raise UsageError(f"{self.name} takes batches of shape (N, {', '.join(map(str, self.input_shape[1:]))}), "
                             f"got {tuple(t.shape)}")
        return t

    def __call__(self, x: np.ndarray) -> np.ndarray:
        t = self.tensor(x)
        method = self.ready()
        n, b = int(t.shape[0]), self.batch
        if n == b:
            return first_output(method.execute([t])).float().numpy()
        outs = []
        for i in range(0, n, b):
            chunk = t[i:i + b]
            k = int(chunk.shape[0])
            if k < b:  # pad: the program's shape is fixed; the padding's outputs are dropped
                chunk = torch.cat([chunk, chunk[:1].expand(b - k, *chunk.shape[1:])]).contiguous()
            outs.append(first_output(method.execute([chunk]))[:k])
        if not outs:
            raise UsageError(f"{self.name} got an empty batch")
        return torch.cat(outs).float().numpy()

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        t = self.tensor(x)
        if int(t.shape[0]) != self.batch:
            raise UsageError(f"{self.name} runs batches of {self.batch} as a whole; got {int(t.shape[0])}")
        leaves = torch.utils._pytree.tree_leaves(self.ready().execute([t]))
        return tuple(o.numpy() for o in leaves if isinstance(o, torch.Tensor))


def load_runner(path: str | os.PathLike, *, threads: int | None = 2, name: str | None = None) -> PteRunner:
    """A PteRunner of the .pte at ``path`` (its bytes are kept: a stale method is reloaded from them)."""
    shown = name or str(path)
    return PteRunner(read_program(path, name=shown), threads=threads, name=shown)


# -- the Runtime -----------------------------------------------------------------------------------
class ExecuTorch:
    """ExecuTorch's Python runtime with the XNNPACK delegate; artifacts are .pte files."""

    name = NAME
    suffix = ".pte"
    weight_bits = (8,)  # integer weight widths its int8 path deploys (XNNPACK: int8)

    def __init__(self) -> None:
        require()

    def version(self) -> str:
        from executorch.version import __version__

        return f"executorch {__version__.split('+')[0]}"  # "1.5.1+cpu": the release, without the build tag

    def export(self, model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *,
               loader: Any = None) -> dict:
        """The verified float .pte, or, for a model made by a deployable-format config (a
        quantization), the file written by that config's executorch exporter (int8 for PTQ)."""
        from ..core.registry import export_for

        cfg = deploy_config(model)
        if cfg is not None:
            try:
                fn = export_for(cfg, runtime=NAME)
            except UsageError as e:
                raise UsageError(f"executorch has no int8 path for {type(cfg).__name__} ({cfg.kind}) models",
                                 hint=f"{e.hint}; or export with another runtime (e.g. onnxruntime)") from None
            return fn(model, path, example, cfg, loader=loader)
        return export_float(model, path, example)

    def load(self, artifact: str | os.PathLike, *, threads: int = 2) -> PteRunner:
        return load_runner(artifact, threads=threads)  # an ExportError when it cannot

    def time(self, runner: Runner, x: np.ndarray, *, warmup: int, runs: int) -> list[float]:
        if isinstance(runner, PteRunner) and x.shape[0] == runner.batch:  # the bare execute call
            inputs = [runner.tensor(x)]
            method = runner.ready()
            return timed_runs(lambda: method.execute(inputs), warmup=warmup, runs=runs)
        return timed_runs(lambda: runner(x), warmup=warmup, runs=runs)

    def kernels(self, artifact: str | os.PathLike, *, threads: int = 1) -> dict:
        """The program's delegates (XNNPACK) and the operators left outside them; inside a delegate the
        program does not tell integer from float, so those counts stay empty."""
        from executorch.exir._serialize._program import deserialize_pte_binary

        prog = deserialize_pte_binary(Path(artifact).read_bytes())
        plan = getattr(prog, "program", prog).execution_plan[0]
        delegated: dict[str, int] = {}
        for d in plan.delegates:
            delegated[d.id] = delegated.get(d.id, 0) + 1
        return {"runtime": self.version(), "integer": {}, "float": {}, "delegated": delegated,
                "outside_delegates": sorted({o.name for o in plan.operators})}

    def size(self, artifact: str | os.PathLike) -> int:
        return file_size(artifact)


__all__ = ["ATOL", "ExecuTorch", "PteRunner", "export_float", "first_output", "load_method", "load_runner",
           "read_program", "require", "save_pte", "set_threads", "to_pte"]
