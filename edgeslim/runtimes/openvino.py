"""OpenVINO (the CPU plugin) as a Runtime: artifacts are OpenVINO IR, ``m.xml`` with ``m.bin`` beside it.

    rt = edgeslim.runtimes.get("openvino")
    rt.export(model, "m.xml", example)       # the ONNX Runtime export -> openvino.convert_model -> IR
    run = rt.load("m.xml", threads=2)        # a compiled model's InferRequest; numpy batch -> first output

Export makes the ONNX file exactly as the ONNX Runtime runtime does (a quantization simulation becomes
edgeslim's int8 QDQ graph, which OpenVINO turns into FakeQuantize + int8 weights and runs with its
u8/i8 kernels; a float model becomes the verified fp32 ONNX), converts it with ``openvino.convert_model``
and saves it with fp32 weights kept fp32 (``compress_to_fp16=False``). The IR is then run in OpenVINO
on the example (plus a random batch and up to two loader batches) and compared with the ONNX file in
ONNX Runtime: a float model must agree within ``ATOL`` (else an ExportError naming the difference), a
quantized one records its top-1 agreement. Both files are written into a temp dir beside ``path`` and
renamed into place only once verified, the .bin first and the .xml last.

Loading reads the file with the frontend its suffix names (.xml: IR, .onnx: ONNX, which OpenVINO also
runs) -- not ``Core.read_model``, whose probing of every frontend makes TensorFlow's print parse errors
to stderr for a corrupt file -- and compiles it for "CPU" with ``threads`` inference threads, one
stream, the LATENCY hint and f32 inference precision (on CPUs with bf16/AMX the plugin would otherwise
run float layers in bf16). OpenVINO never runs more threads than the machine has cores: asking for
more is a UsageError rather than a figure labelled with a thread count it was not measured at.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import EdgeslimError, ExportError, UsageError
from .base import deploy_config, Runner, file_size, timed_runs

NAME = "openvino"
SUFFIX = ".xml"
ATOL = 1e-3  # a float export's verification: max abs diff of the IR against the ONNX file in ONNX Runtime
_FRONTENDS = {".xml": "ir", ".onnx": "onnx"}


def require():
    """The openvino module; an EdgeslimError with the install hint when the package is missing."""
    try:
        import openvino
    except ImportError:
        raise EdgeslimError("the openvino runtime needs the package openvino",
                            hint="pip install edgeslim[openvino]") from None
    return openvino


def _message(e: BaseException) -> str:
    """The line of an OpenVINO exception that says what went wrong: its text is a stack of
    "Exception from src/...:N:" and "Check '...' failed at ..." lines above the actual message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '", "FrontEnd API failed"))]
    return (useful or lines or [type(e).__name__])[-1]


def _check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"threads must be an integer >= 1, got {threads!r}")
    return threads


# -- load and run ----------------------------------------------------------------------------------
class OvRunner:
    """A compiled model's InferRequest as a Runner: one batch in, the first output out (float32), or every
    output (``outputs``, each in its own type)."""

    def __init__(self, compiled: Any, path: Path, threads: int):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.path = path
        self.threads = threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        out = self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return tuple(np.asarray(out[port]) for port in self.compiled.outputs)


def compile_config(threads: int) -> dict[str, Any]:
    """The CPU plugin's properties for a runner of ``threads`` threads."""
    return {"INFERENCE_NUM_THREADS": int(threads), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"}


def read_model(path: str | os.PathLike, *, name: str | None = None):
    """``path`` (.xml IR with its .bin, or .onnx) as an ``openvino.Model``; one ExportError line naming
    the runtime and the file when it cannot be read."""
    from openvino.frontend import FrontEndManager

    path, shown = Path(path), name or str(path)
    framework = _FRONTENDS.get(path.suffix)
    if framework is None:
        raise UsageError(f"OpenVINO loads .xml (IR) or .onnx files, got {shown}")
    if not path.is_file():
        raise ExportError(f"OpenVINO cannot load {shown}: no such file")
    try:
        fe = FrontEndManager().load_by_framework(framework)
        return fe.convert(fe.load(str(path)))
    except Exception as e:  # noqa: BLE001 - RuntimeError, GeneralFailure and others
        raise ExportError(f"OpenVINO cannot load {shown}: {_message(e)}") from None


def load_runner(path: str | os.PathLike, *, threads: int = 2, core: Any = None, name: str | None = None) -> OvRunner:
    """A Runner of the file at ``path`` compiled for CPU with exactly ``threads`` inference threads."""
    ov = require()
    threads = _check_threads(threads)
    shown = name or str(path)
    model = read_model(path, name=shown)
    try:
        compiled = (core or ov.Core()).compile_model(model, "CPU", compile_config(threads))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"OpenVINO cannot compile {shown} for CPU: {_message(e)}") from None
    got = int(compiled.get_property("INFERENCE_NUM_THREADS"))
    if got != threads:  # the plugin caps the threads at the cores it may use, silently
        raise UsageError(f"OpenVINO's CPU plugin runs at most {got} threads here (one per available core); "
                         f"asked for {threads}", hint=f"use threads <= {got} with the openvino runtime")
    return OvRunner(compiled, Path(path), threads)


_PLUMBING = {"Const", "Input", "Output", "Parameter", "Result", "Reorder", "Reshape", "Convert", "Transpose"}


def precisions(runner: OvRunner) -> dict[str, dict[str, int]]:
    """{"integer": {layer type: count}, "float": {...}} of the compiled model's runtime layers (their
    runtime precision: u8/i8/u4/i4 integer, else float), without the data-movement layers."""
    out: dict[str, dict[str, int]] = {"integer": {}, "float": {}}
    for op in runner.compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind, prec = (info[k].astype(str) if k in info else "" for k in ("layerType", "runtimePrecision"))
        if kind and kind not in _PLUMBING:
            side = out["integer" if prec in ("u8", "i8", "u4", "i4") else "float"]
            side[kind] = side.get(kind, 0) + 1
    return out


def int8_layers(runner: OvRunner) -> list[str]:
    """The layer types that the compiled model runs in u8/i8 (its runtime model's precisions)."""
    out = set()
    for op in runner.compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        kind, prec = (info[k].astype(str) if k in info else "" for k in ("layerType", "runtimePrecision"))
        if prec in ("u8", "i8") and kind != "Const":
            out.add(kind)
    return sorted(out)


# -- export ----------------------------------------------------------------------------------------
def _inputs(example, loader: Any, batches: int) -> list[np.ndarray]:
    """The example, a seeded random batch of its shape (batch >= 4) and up to ``batches`` loader batches."""
    import torch

    example = example.detach().cpu().float()
    shape = list(example.shape)
    shape[0] = max(shape[0], 4)
    g = torch.Generator().manual_seed(1234)
    xs = [example, torch.randn(*shape, generator=g) * example.std().clamp(min=1.0)]
    if loader is not None:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            xs.append(x.detach().cpu().float())
    return [x.numpy() for x in xs]


def verify_ir(xml: str | os.PathLike, onnx_file: str | os.PathLike, example, *, loader: Any = None,
              quantized: bool = False, batches: int = 2, name: str | None = None) -> dict[str, Any]:
    """Run the IR in OpenVINO and the ONNX file in ONNX Runtime on the same inputs: {"max_abs_diff",
    "top1_agreement", "int8_layers"}; a float model differing by ``ATOL`` or more is an ExportError."""
    from .onnxruntime import OnnxRuntime
    from .parity import max_diff

    shown = name or str(xml)
    ir, ref_run = load_runner(xml, threads=1, name=shown), OnnxRuntime().load(onnx_file, threads=1)
    fixed = ref_run.session.get_inputs()[0].shape[0]  # a file exported at batch 1 (a detector) runs pieces
    diff, agree, total = 0.0, 0, 0
    for batch in _inputs(example, loader, batches):
        step = fixed if isinstance(fixed, int) and fixed > 0 else len(batch)
        for x in (batch[i:i + step] for i in range(0, len(batch) - step + 1, step)):
            refs, gots = ref_run.outputs(x), ir.outputs(x)
            if [g.shape for g in gots] != [r.shape for r in refs]:
                raise ExportError(f"OpenVINO's outputs of {shown} have shapes {[g.shape for g in gots]}, ONNX "
                                  f"Runtime's {[r.shape for r in refs]}")
            diff = max(diff, max_diff(refs, gots))
            ref, got = refs[0], gots[0]
            if ref.ndim == 2 and ref.dtype.kind == "f":
                agree += int((ref.argmax(1) == got.argmax(1)).sum())
                total += ref.shape[0]
    if not quantized and not diff < ATOL:  # NaN fails too
        raise ExportError(f"OpenVINO's output of {shown} differs from ONNX Runtime's: max abs diff {diff:.3g}, "
                          f"not below {ATOL:g}", hint="an operator may convert differently; file an issue with the model")
    return {"max_abs_diff": diff, "top1_agreement": (agree / total) if total else None,
            "int8_layers": int8_layers(ir)}


def convert(onnx_file: str | os.PathLike, xml: str | os.PathLike) -> None:
    """ONNX -> OpenVINO IR (``xml`` and the .bin beside it), fp32 weights kept fp32."""
    ov = require()
    try:
        model = ov.convert_model(str(onnx_file))
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        raise ExportError(f"OpenVINO cannot convert the model's ONNX file: {_message(e)}") from None
    ov.save_model(model, str(xml), compress_to_fp16=False)


def _publish(tmp_xml: Path, path: Path) -> None:
    """Rename the verified IR into place: the .bin first, the .xml (what names the artifact) last."""
    tmp_bin, bin_path = tmp_xml.with_suffix(".bin"), path.with_suffix(".bin")
    if not tmp_bin.exists():
        tmp_bin.write_bytes(b"")  # a model without weights: an empty .bin, never a stale one beside the .xml
    os.replace(tmp_bin, bin_path)
    try:
        os.replace(tmp_xml, path)
    except OSError:
        bin_path.unlink(missing_ok=True)
        raise


def export_ir(model, path: str | os.PathLike, example, *, loader: Any = None) -> dict[str, Any]:
    """The verified OpenVINO IR of ``model`` at ``path`` (.xml; its .bin beside it): {"path",
    "size_bytes" (.xml + .bin), "max_abs_diff", "top1_agreement", "quantized", "int8_layers", "onnx"}."""
    from .. import runtimes

    path = Path(path)
    if path.suffix != SUFFIX:
        raise UsageError(f"an OpenVINO IR path must end in .xml, got {str(path)!r}")
    quantized = deploy_config(model) is not None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent))
    except OSError as e:  # name the file asked for, not the temp dir
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        onnx_info = runtimes.get("onnxruntime").export(model, tmp / "model.onnx", example, loader=loader)
        convert(tmp / "model.onnx", tmp / "model.xml")
        check = verify_ir(tmp / "model.xml", tmp / "model.onnx", example, loader=loader, quantized=quantized,
                          name=path.name)
        _publish(tmp / "model.xml", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    onnx = {k: v for k, v in onnx_info.items() if k != "path"}
    return {"path": str(path), "size_bytes": ir_size(path), **check, "quantized": quantized, "onnx": onnx}


def ir_size(path: str | os.PathLike) -> int:
    """Bytes of an IR: the .xml plus the .bin beside it."""
    p = Path(path)
    b = p.with_suffix(".bin")
    return p.stat().st_size + (b.stat().st_size if b.is_file() else 0)


# -- the Runtime -----------------------------------------------------------------------------------
class OpenVINO:
    """OpenVINO's CPU plugin; artifacts are IR .xml files (weights in the .bin beside them)."""

    name = NAME
    suffix = SUFFIX
    # it reads edgeslim's INT4-packed QDQ files too, but its ONNX frontend widens INT4 weights to i8: a
    # W4A8 IR is as large and as fast as W8A8 (benchmarks/RESULTS.md, runtime-formats), so the search
    # offers 8-bit weights only
    weight_bits = (8,)

    def __init__(self):
        self._ov = require()
        self._core = None

    @property
    def core(self):
        """One ``openvino.Core`` for every model this runtime compiles."""
        if self._core is None:
            self._core = self._ov.Core()
        return self._core

    def version(self) -> str:
        return f"openvino {self._ov.__version__.split('-')[0]}"

    def export(self, model, path: str | os.PathLike, example, *, loader: Any = None) -> dict:
        return export_ir(model, path, example, loader=loader)

    def load(self, artifact: str | os.PathLike, *, threads: int = 2) -> OvRunner:
        """A Runner of an .xml IR (or an .onnx file, which OpenVINO reads too)."""
        return load_runner(artifact, threads=threads, core=self.core)

    def time(self, runner: Runner, x: np.ndarray, *, warmup: int, runs: int) -> list[float]:
        if isinstance(runner, OvRunner):  # the bare infer call: nothing of ours inside the timing
            req, feed = runner.request, {0: np.ascontiguousarray(x, dtype=np.float32)}
            return timed_runs(lambda: req.infer(feed, share_inputs=True), warmup=warmup, runs=runs)
        return timed_runs(lambda: runner(x), warmup=warmup, runs=runs)

    def kernels(self, artifact: str | os.PathLike, *, threads: int = 1) -> dict:
        """The compiled model's layers by their runtime precision (integer or float)."""
        return {"runtime": self.version(), **precisions(self.load(artifact, threads=threads))}

    def size(self, artifact: str | os.PathLike) -> int:
        """An .xml: it plus its .bin; an .onnx: as ONNX Runtime sizes it; a directory: every file in it."""
        p = Path(artifact)
        if p.is_file() and p.suffix == SUFFIX:
            return ir_size(p)
        if p.is_file() and p.suffix == ".onnx":
            from .onnxruntime import OnnxRuntime

            return OnnxRuntime().size(p)
        return file_size(p)
