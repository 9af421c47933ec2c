"""int8 of a vision transformer: every Linear and attention matmul runs integer kernels in ONNX Runtime;
LayerNorm / Softmax / GELU stay float and the report says so."""
import torch

import edgeslim
from edgeslim import models
from edgeslim.core.registry import Context, run
from edgeslim.quantization import PTQ
from edgeslim.quantization.onnx_qdq import parity
from edgeslim.runtimes.onnxruntime import integer_ops


def test_vit_int8_runs_every_matmul_in_integers(tmp_path):
    torch.manual_seed(0)
    m = models.create("vit_tiny").eval()
    q, details = run(m, PTQ(bits=8), Context(data=torch.randn(32, 1, 28, 28), progress=False))
    assert details["float_ops"] == ["GELU", "LayerNorm", "Softmax"]
    assert any("Softmax" in n and "float" in n for n in details["notes"])
    path = tmp_path / "q.onnx"
    edgeslim.quantization.export(q, path, torch.randn(1, 1, 28, 28))
    ops = integer_ops(path, threads=1)
    assert ops["float_compute"] == []  # no float MatMul / Gemm / Conv left
    assert ops["integer_ops"].get("QLinearMatMul", 0) + ops["integer_ops"].get("MatMulIntegerToFloat", 0) >= 6 * 6
    p = parity(q, path, [torch.randn(4, 1, 28, 28)])
    assert p["max_abs_diff"] < 0.05


class _MHANet(torch.nn.Module):
    """torchvision's ViT in miniature: nn.MultiheadAttention, whose int8 export used to keep batch 1."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(1, 16, 4, 4)
        self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        a, _ = self.attn(t, t, t, need_weights=False)
        return self.fc((t + a).mean(1))


def test_multihead_attention_int8_file_takes_any_batch(tmp_path):
    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(0)
    m = _MHANet().eval()
    q, _ = run(m, PTQ(bits=8), Context(data=torch.randn(32, 1, 8, 8), progress=False))
    path = tmp_path / "q.onnx"
    edgeslim.quantization.export(q, path, torch.randn(1, 1, 8, 8))
    sess = ort.InferenceSession(str(path))
    assert not isinstance(sess.get_inputs()[0].shape[0], int)  # the batch is a dimension, not a constant
    x = torch.randn(3, 1, 8, 8)
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(y, q(x).detach().numpy(), atol=0.05)
