"""LiteRT (TensorFlow Lite) as a Runtime: litert-torch converts, ai-edge-litert's Interpreter runs.

    rt = edgeslim.runtimes.get("litert")
    rt.export(model, "m.tflite", example)        # float32 .tflite, verified against PyTorch
    run = rt.load("m.tflite", threads=2)         # XNNPACK (the Interpreter's default delegate)
    ms = rt.time(run, x, warmup=10, runs=50)     # the bare invoke

The converted graph keeps PyTorch's NCHW input (litert-torch inserts the transposes). A model quantized
by a config with a litert exporter (PTQ: quantization/litert_int8.py, full-integer int8) is written by
that exporter. Both packages are imported on first use, never when edgeslim is imported.

Batches: litert-torch 0.10 cannot lower a dynamic batch through a flatten/view (the jax lowering of
``aten.view`` needs concrete sizes), so the file has the example's batch. A Runner resizes the input
tensor to another batch (``resize_tensor_input`` + ``allocate_tensors``) where the graph allows it
(fully convolutional graphs); where the graph's shapes are fixed it runs the batch in pieces of the
converted batch (the last piece zero-padded), so a loader's batches of 64 work either way.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..core.errors import EdgeslimError, ExportError, UsageError
from .base import deploy_config, Runner, file_size, timed_runs

PARITY_ATOL = 1e-4  # float32 .tflite against PyTorch, max abs diff
_PACKAGES = {"litert_torch": "litert-torch", "ai_edge_litert": "ai-edge-litert"}


def available() -> bool:
    """Whether litert-torch and ai-edge-litert are installed (nothing imported)."""
    return all(importlib.util.find_spec(m) is not None for m in _PACKAGES)


def _require() -> None:
    if not available():
        raise EdgeslimError("the litert runtime needs the packages litert-torch and ai-edge-litert",
                            hint="pip install edgeslim[litert]")


def _first_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litert-torch's progress printing off for the duration (its switch is an environment variable)."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    before = os.environ.get(key)
    os.environ[key] = "n"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def convert(module: Any, example, *, quant_config: Any = None) -> Any:
    """``litert_torch.convert(module, (example,))`` (its progress output silenced); an ExportError
    naming litert when the converter fails."""
    import litert_torch

    with _quiet():
        try:
            return litert_torch.convert(module, (example,), quant_config=quant_config)
        except Exception as e:  # noqa: BLE001 - torch.export, jax and MLIR errors of many types
            raise ExportError(f"litert-torch cannot convert the model: {_first_line(e)}") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; renamed onto ``path`` when the block succeeds,
    removed when it raises (so ``path`` is never left half-written or unverified)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write(edge_model: Any, path: Path) -> None:
    """Serialize a converted litert-torch model to ``path``."""
    with _quiet():
        edge_model.export(str(path))


def interpreter(path: str | os.PathLike, threads: int = 2) -> Any:
    """An allocated ai-edge-litert Interpreter of ``path`` (XNNPACK, ``threads`` threads); an
    ExportError naming the runtime and the file when it does not load."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_path=str(path), num_threads=int(threads))
        interp.allocate_tensors()
    except Exception as e:  # noqa: BLE001 - the interpreter raises ValueError / RuntimeError
        raise ExportError(f"litert cannot load {path}: {_first_line(e)}") from None
    return interp


def _ordered_outputs(interp: Any) -> list[dict]:
    """The details of the model's outputs in signature order (output_0, output_1, ...; the order of the
    PyTorch model's outputs), or the interpreter's order where the model has no signature."""
    details = interp.get_output_details()
    try:
        sigs = interp._get_full_signature_list()  # {name: {"inputs": {..}, "outputs": {name: index}}}
        outs = next(iter(sigs.values()))["outputs"] if sigs else {}
    except Exception:  # noqa: BLE001 - a private helper; the output details are the fallback
        outs = {}
    by_index = {d["index"]: d for d in details}
    names = sorted(outs, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    ordered = [by_index[outs[n]] for n in names if outs[n] in by_index]
    return ordered if len(ordered) == len(details) else details


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """A float batch as the input tensor's type (quantized with its scale / zero point if integer)."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype, copy=False)
    scale, zero = detail["quantization"]
    if not scale:
        raise ExportError(f"the litert input tensor is {dtype} without quantization parameters")
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if dtype.kind in "iu" and scale:
        return ((y.astype(np.float32) - zero) * np.float32(scale)).astype(np.float32)
    return y.astype(np.float32, copy=False)


_COMPUTE = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV", "ADD", "MUL",
            "AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SOFTMAX", "CONV_3D"}  # TFLite builtin compute operators


class LiteRTRunner:
    """An ai-edge-litert Interpreter as a Runner: a float32 NCHW batch in, the first output (float32) out
    (``outputs``: every output, integer ones without quantization parameters as they are);
    integer inputs and outputs (a full-integer model) quantized / dequantized with their scale and zero point."""

    def __init__(self, interp: Any, path: str | os.PathLike = ""):
        self.interpreter = interp
        self.path = str(path)
        self._input = interp.get_input_details()[0]
        self._outputs = _ordered_outputs(interp)
        self.shape = tuple(int(d) for d in self._input["shape"])  # the converted input shape
        self.batch = self.shape[0]  # the converted batch
        self._current = self.shape  # the input tensor's shape now
        self._fixed: set[tuple[int, ...]] = set()  # shapes the graph cannot be resized to

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_dtype(self) -> np.dtype:
        return np.dtype(self._outputs[0]["dtype"])

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Make the input tensor ``shape`` (resizing the graph where it allows); False where it cannot."""
        shape = tuple(int(d) for d in shape)
        if shape == self._current:
            return True
        if shape in self._fixed:
            return False
        idx = self._input["index"]
        try:
            self.interpreter.resize_tensor_input(idx, list(shape), strict=False)
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError):  # a graph with fixed shapes (a reshape to the converted batch)
            self._fixed.add(shape)
            self.interpreter.resize_tensor_input(idx, list(self.shape), strict=False)
            self.interpreter.allocate_tensors()
            self._current = self.shape
            return False
        self._current = shape
        self._input = self.interpreter.get_input_details()[0]
        self._outputs = _ordered_outputs(self.interpreter)
        return True

    def set_input(self, x: np.ndarray) -> None:
        """Set the input tensor (``fits(x.shape)`` first)."""
        self.interpreter.set_tensor(self._input["index"], _quantize(x, self._input))

    def output(self, detail: dict | None = None) -> np.ndarray:
        detail = detail or self._outputs[0]
        return _dequantize(self.interpreter.get_tensor(detail["index"]), detail)

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not self.fits(x.shape):
            raise UsageError(f"{self.path or 'the .tflite'} runs inputs of shape {self.shape} as a whole; got "
                             f"{tuple(x.shape)}")
        self.set_input(x)
        self.interpreter.invoke()
        return tuple(self.output(d) if np.dtype(d["dtype"]).kind in "iu" and d["quantization"][0] else
                     self.interpreter.get_tensor(d["index"]).copy() for d in self._outputs)

    def _once(self, x: np.ndarray) -> np.ndarray:
        self.set_input(x)
        self.interpreter.invoke()
        return self.output()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.fits(x.shape):
            return self._once(x)
        if x.ndim != len(self.shape) or x.shape[1:] != self.shape[1:]:
            raise UsageError(f"{self.path or 'the .tflite'} takes inputs of shape {self.shape}; got {tuple(x.shape)}")
        n, outs = self.batch, []
        for i in range(0, x.shape[0], n):  # the graph's batch is fixed: run it piece by piece
            piece = x[i:i + n]
            if piece.shape[0] < n:
                piece = np.concatenate([piece, np.zeros((n - piece.shape[0], *piece.shape[1:]), np.float32)])
            outs.append(self._once(piece)[:min(n, x.shape[0] - i)])
        return np.concatenate(outs)


def _torch_output(model: Any, example) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(example)
    while isinstance(out, (tuple, list, dict)):
        out = next(iter(out.values())) if isinstance(out, dict) else out[0]
    return out.detach().float().cpu().numpy()


def export_float(model: Any, path: str | os.PathLike, example) -> dict:
    """The float32 .tflite of ``model`` at ``path``, written atomically and verified: the file run on
    ``example`` matches PyTorch within PARITY_ATOL, else an ExportError and nothing at ``path``."""
    example = example.detach().float().cpu()
    model = model.eval()
    edge = convert(model, example)
    with atomic_path(path) as tmp:
        write(edge, tmp)
        got = LiteRTRunner(interpreter(tmp, threads=1), path)(example.numpy())
        want = _torch_output(model, example)
        if got.shape != want.shape:
            raise ExportError(f"the litert output of {Path(path).name} has shape {got.shape}, PyTorch's {want.shape}")
        diff = float(np.max(np.abs(got - want))) if want.size else 0.0
        if not diff <= PARITY_ATOL:
            raise ExportError(f"the litert output of {Path(path).name} differs from PyTorch: max abs diff "
                              f"{diff:.3g} > {PARITY_ATOL:g}",
                              hint="report the model; export it for onnxruntime meanwhile")
    return {"path": str(path), "size_bytes": file_size(path), "runtime": "litert", "format": "float32",
            "input_shape": list(example.shape), "max_abs_diff": diff}


class LiteRT:
    """LiteRT's CPU interpreter (XNNPACK); artifacts are .tflite files."""

    name = "litert"
    suffix = ".tflite"
    weight_bits = (8,)  # integer weight widths its int8 path deploys (full-integer int8)

    def __init__(self) -> None:
        _require()

    def version(self) -> str:
        v = importlib.metadata.version
        return f"litert {v('ai-edge-litert')} (litert-torch {v('litert-torch')})"

    def export(self, model, path: str | os.PathLike, example, *, loader: Any = None) -> dict:
        """The .tflite of ``model``: a model made by a deployable-format config (a quantization) through
        that config's litert exporter (int8 for PTQ), any other as the verified float32 conversion."""
        cfg = deploy_config(model)
        if cfg is not None:
            from ..core.registry import export_for

            try:
                fn = export_for(cfg, runtime="litert")
            except UsageError:
                raise UsageError(f"litert has no int8 path for {type(cfg).__name__} ({cfg.kind}) models",
                                 hint="quantize with PTQ for litert, or export this model for onnxruntime") from None
            return fn(model, path, example, cfg, loader=loader)
        return export_float(model, path, example)

    def load(self, artifact: str | os.PathLike, *, threads: int = 2) -> LiteRTRunner:
        return LiteRTRunner(interpreter(artifact, threads=threads), artifact)  # an ExportError when it cannot

    def time(self, runner: Runner, x: np.ndarray, *, warmup: int, runs: int) -> list[float]:
        """The bare invoke, the input set once before (a batch the graph cannot take at once: the
        Runner's piecewise call, timed whole)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if isinstance(runner, LiteRTRunner) and runner.fits(x.shape):
            runner.set_input(x)
            return timed_runs(runner.interpreter.invoke, warmup=warmup, runs=runs)
        return timed_runs(lambda: runner(x), warmup=warmup, runs=runs)

    def kernels(self, artifact: str | os.PathLike, *, threads: int = 1) -> dict:
        """The model's operators, integer where their first input is an integer tensor, and how many
        nodes the XNNPACK delegate took over."""
        interp = interpreter(artifact, threads=threads)
        dtypes = {t["index"]: np.dtype(t["dtype"]) for t in interp.get_tensor_details()}
        out: dict[str, Any] = {"runtime": self.version(), "integer": {}, "float": {}}
        for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's only operator listing
            name, inputs = op["op_name"], [i for i in op["inputs"] if i >= 0]
            if name == "DELEGATE":
                out["delegated"] = out.get("delegated", 0) + 1
            elif name in _COMPUTE:
                side = out["integer" if inputs and dtypes[inputs[0]].kind in "iu" else "float"]
                side[name] = side.get(name, 0) + 1
        return out

    def size(self, artifact: str | os.PathLike) -> int:
        return file_size(artifact)
