"""Export failures name their cause: an opset outside what this install runs, an operator ONNX lacks,
or a write the system refused (never blamed on the model)."""
import errno

import onnx
import pytest
import torch
from torch import nn

from edgeslim.core.errors import ExportError, UsageError
from edgeslim.runtimes.onnx_export import check_opset, onnx_export as export_onnx, opset_range
from edgeslim.runtimes.onnxruntime import accepts_opset
from edgeslim.testing.models import TinyConvNet


def test_opset_range_is_what_torch_and_onnxruntime_handle():
    lo, hi = opset_range()
    assert lo == 7 and 18 <= hi <= onnx.defs.onnx_opset_version()
    assert accepts_opset(hi) and not accepts_opset(onnx.defs.onnx_opset_version() + 1)


@pytest.mark.parametrize("bad", [3, 6, 99, True, "17", 17.0])
def test_opset_outside_the_range_is_refused_before_export(bad, tmp_path):
    lo, hi = opset_range()
    with pytest.raises(UsageError, match=f"opset must be an integer in {lo}..{hi}"):
        export_onnx(TinyConvNet(), tmp_path / "m.onnx", input_shape=(1, 8, 8), opset=bad)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("which", ["low", "high"])
def test_both_ends_of_the_range_export_at_that_opset(which, tmp_path):
    lo, hi = opset_range()
    opset = lo if which == "low" else hi
    check_opset(opset)
    res = export_onnx(TinyConvNet(), tmp_path / "m.onnx", input_shape=(1, 8, 8), opset=opset)
    assert res["opset"] == opset and res["max_abs_diff"] < 1e-4


class _Histc(nn.Module):
    def forward(self, x):  # no exporter has aten::histc
        return torch.histc(x, bins=4).expand(x.shape[0], 4)


def test_a_missing_operator_is_named_and_nothing_is_printed(tmp_path, capfd):
    with pytest.raises(ExportError) as err:
        export_onnx(_Histc(), tmp_path / "m.onnx", input_shape=(2, 4))
    assert "aten::histc" in err.value.message and "operator ONNX" in err.value.hint
    out, printed = capfd.readouterr()
    assert "Torch IR graph" not in out + printed and not out  # stdout stays the --json channel
    assert not list(tmp_path.iterdir())


def _raising(exc):
    def export(*args, **kwargs):
        raise exc
    return export


def test_a_full_disk_is_an_os_error_not_an_operator(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.onnx, "export", _raising(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError) as err:
        export_onnx(TinyConvNet(), tmp_path / "m.onnx", input_shape=(1, 8, 8))
    assert err.value.errno == errno.ENOSPC
    assert not list(tmp_path.iterdir())


def test_an_errno_quoted_in_text_becomes_an_os_error_with_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.onnx, "export", _raising(RuntimeError("I/O error: Read-only (os error 30)")))
    with pytest.raises(OSError) as err:
        export_onnx(TinyConvNet(), tmp_path / "m.onnx", input_shape=(1, 8, 8))
    assert err.value.errno == errno.EROFS and err.value.filename == str(tmp_path / "m.onnx")  # the asked-for file


def test_other_failures_do_not_blame_operators(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.onnx, "export", _raising(ValueError("something else broke")))
    with pytest.raises(ExportError) as err:
        export_onnx(TinyConvNet(), tmp_path / "m.onnx", input_shape=(1, 8, 8))
    assert "something else broke" in err.value.message and "operator" not in err.value.hint
