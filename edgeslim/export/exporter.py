"""Export to ONNX and verify the file in ONNX Runtime against PyTorch.

Verification is part of export, not an option users forget: the ONNX checker, then the same random
inputs (and real data when given) through torch and ONNX Runtime; the max abs difference and top-1
agreement go into the result, and a failure is an ExportError.
"""
from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..core.errors import ExportError
from ..core.io import atomic_path
from . import runtime

INPUT, OUTPUT = "input", "output"


def onnx_export(model: nn.Module, path: str | os.PathLike, example_inputs: torch.Tensor | None = None, *,
                input_shape: tuple[int, ...] | None = None, dynamic_batch: bool = True, verify: bool = True,
                loader: Any = None, opset: int | None = None, atol: float = 1e-4,
                verify_batches: int = 2) -> dict[str, Any]:
    """Export ``model`` (left untouched) to ``path`` and verify it. Returns
    {"path", "size_bytes", "max_abs_diff", "top1_agreement", "opset"}."""
    if example_inputs is None:
        if input_shape is None:
            raise ExportError("export needs example_inputs or input_shape")
        shape = tuple(input_shape)
        example_inputs = torch.randn(*(shape if len(shape) == 4 or len(shape) == 2 else (1, *shape)))
    model = copy.deepcopy(model).cpu().eval()
    example_inputs = example_inputs.cpu()
    path = Path(path)
    with atomic_path(path) as tmp:
        _torch_export(model, example_inputs, tmp, dynamic_batch, opset)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise ExportError(f"the exported graph fails the ONNX checker: {str(e).splitlines()[0]}") from None
        result: dict[str, Any] = {"path": str(path), "opset": _opset(tmp)}
        if verify:
            result.update(compare(model, tmp, example_inputs, loader=loader, atol=atol, batches=verify_batches))
    result["size_bytes"] = path.stat().st_size
    return result


def _torch_export(model: nn.Module, x: torch.Tensor, path: Path, dynamic_batch: bool, opset: int | None) -> None:
    axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}} if dynamic_batch else None
    errors = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter is fast and writes one self-contained file; the dynamo exporter
        # is the fallback for models it cannot script.
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes=axes, opset_version=opset or 17, do_constant_folding=True)
            return
        except Exception as e:
            errors.append(f"torchscript exporter: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        try:
            shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
            with _quiet():
                prog = torch.onnx.export(model, (x,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                         dynamic_shapes=shapes, opset_version=opset or 18)
            prog.save(str(path), external_data=False)
            return
        except Exception as e:
            errors.append(f"dynamo exporter: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    raise ExportError("cannot export the model to ONNX; " + "; ".join(errors),
                      hint="a layer may use an operator ONNX lacks; exclude or replace it")


class _quiet:
    """Silence the dynamo exporter's progress prints."""

    def __enter__(self):
        import contextlib

        self._cm = contextlib.redirect_stdout(io.StringIO())
        self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _opset(path: Path) -> int | None:
    m = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)


@torch.no_grad()
def compare(model: nn.Module, onnx_path: str | os.PathLike, example_inputs: torch.Tensor, *, loader: Any = None,
            atol: float = 1e-4, batches: int = 2, threads: int = 2, raise_on_fail: bool = True) -> dict[str, Any]:
    """Run torch and ONNX Runtime on fresh random inputs (and real batches when a loader is given)."""
    sess = runtime.session(onnx_path, threads=threads)
    g = torch.Generator().manual_seed(1234)
    shape = list(example_inputs.shape)
    shape[0] = max(shape[0], 4)
    inputs = [torch.randn(*shape, generator=g) * example_inputs.std().clamp(min=1.0) for _ in range(batches)]
    if loader is not None:
        for i, (x, _) in enumerate(loader):
            if i >= batches:
                break
            inputs.append(x.cpu())
    max_diff, agree, total = 0.0, 0, 0
    for x in inputs:
        ref = model(x)
        got = runtime.run(sess, x.numpy())
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
