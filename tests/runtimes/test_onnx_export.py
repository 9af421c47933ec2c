import onnx
import pytest
import torch
from torch import nn

from edgeslim.core.errors import ExportError
from edgeslim.runtimes import export_onnx
from edgeslim.runtimes.onnxruntime import session
from edgeslim.testing.models import TinyResNet, toy_loader


def test_export_verifies_and_keeps_model_untouched(tmp_path):
    m = TinyResNet().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = export_onnx(m, tmp_path / "m.onnx", input_shape=(1, 8, 8), loader=toy_loader())
    assert m.training  # caller's model left as it was
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert res["max_abs_diff"] < 1e-4 and res["top1_agreement"] == 1.0
    assert res["size_bytes"] == (tmp_path / "m.onnx").stat().st_size
    onnx.checker.check_model(str(tmp_path / "m.onnx"))


def test_dynamic_batch(tmp_path):
    export_onnx(TinyResNet(), tmp_path / "m.onnx", input_shape=(1, 8, 8))
    s = session(tmp_path / "m.onnx")
    assert s.run(None, {"input": torch.randn(5, 1, 8, 8).numpy()})[0].shape == (5, 4)


class _Noisy(nn.Module):
    """Differs between runs, so ONNX Runtime cannot match it: verification must fail."""

    def forward(self, x):
        return x.flatten(1) + torch.rand(1).item() * 10


def test_failed_verification_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ExportError, match="max abs diff"):
        export_onnx(_Noisy(), tmp_path / "n.onnx", input_shape=(1, 4, 4))
    assert not (tmp_path / "n.onnx").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_detector_exports_its_boxes_scores_and_labels_at_batch_1(tmp_path):
    """A model with several outputs (a detector: torchvision's convention) exports each under its
    name, at the exported batch, and every output is checked against PyTorch."""
    import onnx
    import torch

    from edgeslim import models
    from edgeslim.runtimes import export_onnx

    det = models.create("tinydet", num_classes=3, in_channels=1, width=8, topk=5)
    info = export_onnx(det, tmp_path / "d.onnx", torch.randn(1, 1, 32, 32))
    graph = onnx.load(str(tmp_path / "d.onnx")).graph
    assert [o.name for o in graph.output] == ["boxes", "scores", "labels"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # no dynamic batch: per-image outputs
    assert info["max_abs_diff"] < 1e-3 and info["top1_agreement"] is None
