"""Runtimes: where models are deployed, timed and sized (the Runtime seam, see base.py).

    rt = edgeslim.runtimes.get()                 # ONNX Runtime, the default
    rt.export(model, "m.onnx", example)          # deployable file (int8 QDQ for a quantized model)
    run = rt.load("m.onnx", threads=2)           # numpy batch -> first output
    ms = rt.time(run, x, warmup=10, runs=50)
"""
from __future__ import annotations

from typing import Callable

from ..core.errors import UsageError
from .base import Runner, Runtime, file_size, timed_runs

_FACTORIES: dict[str, Callable[[], Runtime]] = {}
_INSTANCES: dict[str, Runtime] = {}
_SUFFIXES: dict[str, str] = {}
_COMPANIONS = {".xml": (".bin",)}  # files an artifact needs beside it (OpenVINO IR's weights)


def register(name: str, factory: Callable[[], Runtime], suffix: str = "") -> None:
    """Make ``get(name)`` return ``factory()`` (called once, on first use: a runtime's package is
    imported only when it is used); ``suffix``: its artifacts' file suffix."""
    _FACTORIES[name] = factory
    _SUFFIXES[name] = suffix
    _INSTANCES.pop(name, None)


def names() -> list[str]:
    """The registered runtime names, sorted."""
    return sorted(_FACTORIES)


def get(name: str = "onnxruntime") -> Runtime:
    """The runtime registered as ``name``; a UsageError naming the valid names otherwise."""
    if name not in _FACTORIES:
        raise UsageError(f"no runtime named {name!r}; the runtimes are: {', '.join(names())}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


def for_artifact(path) -> Runtime | None:
    """The registered runtime whose artifacts have ``path``'s suffix (None when none has)."""
    from pathlib import Path

    suffix = Path(path).suffix
    return next((get(n) for n in names() if suffix and _SUFFIXES.get(n) == suffix), None)


def _onnxruntime() -> Runtime:
    from .onnxruntime import OnnxRuntime

    return OnnxRuntime()


def _torch() -> Runtime:
    from .torch_eager import TorchEager

    return TorchEager()


def suffix_of(name: str) -> str:
    """The artifact suffix of runtime ``name`` ('.onnx'; '' for one that runs no file); a UsageError
    naming the valid names for an unknown one."""
    if name not in _FACTORIES:
        raise UsageError(f"no runtime named {name!r}; the runtimes are: {', '.join(names())}")
    return _SUFFIXES[name] or ".onnx"  # torch eager times the module; its artifact is the ONNX file


def artifact_files(path) -> list:
    """The artifact's files: ``path`` and the companions its format needs beside it."""
    from pathlib import Path

    p = Path(path)
    return [p] + [p.with_suffix(s) for s in _COMPANIONS.get(p.suffix, ())]


def copy_artifact(src, dst) -> None:
    """Copy an artifact with its companion files, each atomically (companions first, the file that
    names them last)."""
    import shutil
    from pathlib import Path

    from ..core.io import atomic_path

    if Path(src).suffix == ".onnx":  # its weights may live in a data file named after it
        from .onnx_export import place

        place(Path(src), Path(dst))
        return
    for s, d in reversed(list(zip(artifact_files(src), artifact_files(dst)))):
        with atomic_path(d) as tmp:
            shutil.copyfile(s, tmp)


def export_onnx(model, path, example_inputs=None, **options) -> dict:
    """torch -> ONNX, checked and verified in ONNX Runtime (see ``onnx_export.onnx_export``)."""
    from .onnx_export import onnx_export

    return onnx_export(model, path, example_inputs, **options)


def export(model, path, *, runtime: str = "onnxruntime", example=None, input_shape=None, loader=None) -> dict:
    """The verb ``edgeslim.export``: ``model``'s deployable artifact for ``runtime`` at ``path`` (a
    quantized model through the runtime's own int8 path); ``example`` or ``input_shape`` (N,C,H,W)."""
    import torch

    if example is None:
        if input_shape is None:
            raise UsageError("export needs example= or input_shape=")
        example = torch.randn(*input_shape, generator=torch.Generator().manual_seed(0))
    return get(runtime).export(model, path, example, loader=loader)


_EXPORTS_THROUGH = {"openvino": "onnxruntime"}  # a runtime whose file is converted from another's export


def check_exportable(config, runtime: str) -> None:
    """A UsageError, before any work, when ``runtime`` has no path for the deployable format
    ``config`` makes (litert's and executorch's int8 path is PTQ's; OpenVINO reads every ONNX
    format). A float config needs none."""
    from ..core.registry import export_for

    suffix_of(runtime)  # the runtime exists
    if config is not None and getattr(config, "final", False) and runtime != "torch":
        export_for(config, _EXPORTS_THROUGH.get(runtime, runtime))


def _openvino() -> Runtime:
    from .openvino import OpenVINO

    return OpenVINO()


def _litert() -> Runtime:
    from .litert import LiteRT

    return LiteRT()


def _executorch() -> Runtime:
    from .executorch import ExecuTorch

    return ExecuTorch()


register("onnxruntime", _onnxruntime, ".onnx")
register("torch", _torch)
register("openvino", _openvino, ".xml")
register("litert", _litert, ".tflite")
register("executorch", _executorch, ".pte")

__all__ = ["Runner", "Runtime", "check_exportable", "export", "export_onnx", "file_size", "for_artifact", "get", "names", "register",
           "timed_runs"]
