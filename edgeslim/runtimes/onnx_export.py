"""Export to ONNX and verify the file in ONNX Runtime against PyTorch.

Verification is part of export, not an option users forget: the ONNX checker, then the same random
inputs (and real data when given) through torch and ONNX Runtime; the max abs difference and top-1
agreement go into the result, and a failure is an ExportError.
"""
from __future__ import annotations

import copy
import functools
import io
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..core.errors import ExportError, UsageError
from ..core.io import atomic_path

INPUT, OUTPUT = "input", "output"
TORCHSCRIPT_MAX_OPSET = 20  # torch.onnx's TorchScript exporter stops here; later opsets go through dynamo


@functools.lru_cache(maxsize=1)
def opset_range() -> tuple[int, int]:
    """(lowest, highest) ai.onnx opset an export can target on this install: from torch.onnx's oldest
    (7; ONNX Runtime has no older kernels either) to the newest that both the onnx package (whose version
    converter the dynamo exporter uses) and ONNX Runtime know."""
    try:
        from torch.onnx._constants import ONNX_MIN_OPSET as lo
    except ImportError:  # a private module: its value in every torch since 1.13
        lo = 7
    from .onnxruntime import accepts_opset

    hi = onnx.defs.onnx_opset_version()
    while hi > lo and not accepts_opset(hi):
        hi -= 1
    return int(lo), int(hi)


def check_opset(opset: Any) -> None:
    lo, hi = opset_range()
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or not lo <= opset <= hi):
        raise UsageError(f"opset must be an integer in {lo}..{hi} (what torch.onnx exports and "
                         f"{_ort_version()} runs), got {opset!r}", hint="leave it out for the default (17)")


def onnx_export(model: nn.Module, path: str | os.PathLike, example_inputs: torch.Tensor | None = None, *,
                input_shape: tuple[int, ...] | None = None, dynamic_batch: bool = True, verify: bool = True,
                loader: Any = None, opset: int | None = None, atol: float = 1e-4,
                verify_batches: int = 2) -> dict[str, Any]:
    """Export ``model`` (left untouched) to ``path`` and verify it. Returns
    {"path", "size_bytes", "max_abs_diff", "top1_agreement", "opset"}."""
    check_opset(opset)
    if example_inputs is None:
        if input_shape is None:
            raise ExportError("export needs example_inputs or input_shape")
        shape = tuple(input_shape)
        example_inputs = torch.randn(*(shape if len(shape) == 4 or len(shape) == 2 else (1, *shape)))
    model = copy.deepcopy(model).cpu().eval()
    example_inputs = example_inputs.cpu()
    names = output_names(model, example_inputs)
    if len(names) > 1:  # a detector's outputs (boxes, scores, labels) are per image: batch 1, as exported
        dynamic_batch = False
    path = Path(path)
    with _work_dir(path) as work:  # a model over 2 GB comes with its weights in files beside it
        tmp = Path(work) / path.name
        try:
            _torch_export(model, example_inputs, tmp, dynamic_batch, opset, names)
        except OSError as e:  # name the file the caller asked for, not the working copy
            raise OSError(e.errno, e.strerror, str(path)) from None
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise ExportError(f"the exported graph fails the ONNX checker: {str(e).splitlines()[0]}") from None
        result: dict[str, Any] = {"path": str(path), "opset": _opset(tmp)}
        if opset is not None and result["opset"] != opset:  # an exporter may quietly keep its own
            raise ExportError(f"asked for opset {opset}, the exporter could only write opset {result['opset']}",
                              hint="choose another --opset, or leave it out")
        if verify:
            result.update(compare(model, tmp, example_inputs, loader=loader, atol=atol, batches=verify_batches))
        place(tmp, path, move=True)  # the working directory is beside ``path``
    from .onnxruntime import OnnxRuntime

    result["size_bytes"] = OnnxRuntime().size(path)
    return result


def _work_dir(path: Path):
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None


def data_file(path: Path) -> Path:
    """Where the weights of an ONNX file over 2 GB live: one file beside it, ``NAME.onnx.data``."""
    return path.with_name(path.name + ".data")


def has_external_data(path: Path) -> bool:
    m = onnx.load(str(path), load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)


def place(src: Path, dst: Path, *, move: bool = False) -> None:
    """Copy (``move``: rename, within one file system) the ONNX file ``src`` to ``dst``; weights kept
    outside the file (a model over 2 GB) go to one ``data_file(dst)`` written first, so ``dst`` appears
    complete."""
    import shutil

    if not has_external_data(src):
        if move:
            os.replace(src, dst)
            return
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        return
    m = onnx.load(str(src))  # with its weights, wherever the exporter put them
    with _work_dir(dst) as name:
        work = Path(name)
        onnx.save_model(m, str(work / dst.name), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_file(dst).name, size_threshold=1024)
        os.replace(work / data_file(dst).name, data_file(dst))
        os.replace(work / dst.name, dst)


@torch.no_grad()
def output_names(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The exported file's output names: the model's ``output_names`` (a detector's boxes, scores,
    labels), else "output" for one tensor, output0.. for several."""
    declared = getattr(model, "output_names", None)
    if declared:
        return list(declared)
    out = model(x)
    return [OUTPUT] if isinstance(out, torch.Tensor) or len(out) == 1 else [f"{OUTPUT}{i}" for i in range(len(out))]


def _torch_export(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool, opset: int | None,
                  names: list[str]) -> None:
    axes = {INPUT: {0: "batch"}, **{n: {0: "batch"} for n in names}} if dynamic_batch else None
    errors: list[tuple[str, BaseException]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter is fast and writes one self-contained file; the dynamo exporter
        # is the fallback for models it cannot script (and the only one past TorchScript's opsets).
        if opset is None or opset <= TORCHSCRIPT_MAX_OPSET:
            try:
                with _quiet(fd=True):  # it prints the whole TorchScript graph to stderr when it fails
                    torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=[INPUT],
                                      output_names=names, dynamic_axes=axes, opset_version=opset or 17,
                                      do_constant_folding=True)
                return
            except Exception as e:
                _raise_os_error(e, path)
                errors.append(("torchscript exporter", e))
        try:
            shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            # two images: torch.export specializes a dimension of size 1 (the batch would be fixed at 1)
            xd = x[:1].expand(2, *x.shape[1:]).contiguous() if dynamic_batch else x
            with _quiet():
                prog = torch.onnx.export(model, (xd,), dynamo=True, input_names=[INPUT], output_names=names,
                                         dynamic_shapes=shapes, opset_version=opset or 18)
            prog.save(str(path), external_data=False)
            return
        except Exception as e:
            _raise_os_error(e, path)
            errors.append(("dynamo exporter", e))
    raise ExportError("cannot export the model to ONNX" + (f" at opset {opset}" if opset else "") + "; "
                      + "; ".join(f"{who}: {_first_line(_root(e))}" for who, e in errors), hint=_hint(errors, opset))


def _chain(e: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while e is not None and all(e is not s for s in seen):
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _root(e: BaseException) -> BaseException:
    return _chain(e)[-1]


def _first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    return text.splitlines()[0] if text else type(e).__name__


_ERRNO_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")


def _raise_os_error(e: BaseException, path: Path) -> None:
    """A write that failed (disk full, read-only, permissions) is not the model's fault: the OSError goes
    up -- also one a library only quotes ("os error 28") -- for the CLI to name the path, instead of
    becoming "an operator ONNX lacks"."""
    chain = _chain(e)
    for c in chain:
        if isinstance(c, OSError) and c.errno is not None:
            raise c
    m = next((m for c in chain if (m := _ERRNO_TEXT.search(str(c)))), None)
    if m is not None:
        code = int(m[1] or m[2])
        raise OSError(code, os.strerror(code), str(path)) from e


_OPERATOR_WORDS = re.compile(r"not supported|unsupported|no decomposition|translating node|onnx function", re.I)


def _is_operator_problem(e: BaseException) -> bool:
    from torch.onnx.errors import UnsupportedOperatorError

    return any(isinstance(c, (UnsupportedOperatorError, NotImplementedError)) or _OPERATOR_WORDS.search(str(c))
               for c in _chain(e))


def _hint(errors: list[tuple[str, BaseException]], opset: int | None) -> str:
    if any(_is_operator_problem(e) for _, e in errors):
        lo, hi = opset_range()
        return ("a layer uses an operator ONNX (at this opset) lacks: exclude or replace it"
                + (f", or try another --opset in {lo}..{hi}" if opset else ""))
    return "rerun with --debug for the traceback and report it with the model"


class _quiet:
    """Silence an exporter's progress prints (``fd``: also what native code writes to stderr)."""

    def __init__(self, fd: bool = False):
        self.fd = fd

    def __enter__(self):
        import contextlib
        import tempfile

        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if self.fd:
            self._stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            set_stream = getattr(torch._C, "_jit_set_onnx_log_output_stream", None)
            if set_stream is not None:  # the TorchScript exporter logs to stdout (the --json channel) by default
                set_stream("stderr")
            try:
                sys.stderr.flush()
                saved, sink = os.dup(2), tempfile.TemporaryFile()
                os.dup2(sink.fileno(), 2)
            except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it
                return self
            self._stack.callback(sink.close)
            self._stack.callback(os.close, saved)
            self._stack.callback(os.dup2, saved, 2)
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def _opset(path: Path) -> int | None:
    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


@torch.no_grad()
def compare(model: nn.Module, onnx_path: str | os.PathLike, example_inputs: torch.Tensor, *, loader: Any = None,
            atol: float = 1e-4, batches: int = 2, threads: int = 2, raise_on_fail: bool = True) -> dict[str, Any]:
    """Run torch and ONNX Runtime on fresh random inputs (and real batches when a loader is given)."""
    from .onnxruntime import OnnxRuntime
    from .parity import max_diff as output_diff

    run = OnnxRuntime().load(onnx_path, threads=threads)
    several = len(run.session.get_outputs()) > 1  # a detector: every output compared, at the exported batch
    g = torch.Generator().manual_seed(1234)
    shape = list(example_inputs.shape)
    shape[0] = shape[0] if several else max(shape[0], 4)
    inputs = [torch.randn(*shape, generator=g) * example_inputs.std().clamp(min=1.0) for _ in range(batches)]
    if loader is not None:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            inputs.append(x.cpu())
    max_diff, agree, total = 0.0, 0, 0
    for x in inputs:
        if several:
            x = x[: shape[0]]
            refs = [r.numpy() for r in model(x)]
            max_diff = max(max_diff, output_diff(refs, run.outputs(x.numpy())))
            continue
        ref = model(x)
        got = run(x.numpy())
        ref = ref.numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
        max_diff = max(max_diff, float(np.abs(ref - got).max()))
        if ref.ndim == 2:
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            total += ref.shape[0]
    out = {"max_abs_diff": max_diff, "top1_agreement": (agree / total) if total else None}
    if raise_on_fail and max_diff > atol:
        raise ExportError(f"ONNX Runtime output differs from PyTorch: max abs diff {max_diff:.3g} > {atol:g}",
                          hint="an operator may be exported differently; file an issue with the model")
    return out


def _ort_version() -> str:
    from .onnxruntime import OnnxRuntime

    return OnnxRuntime().version()
