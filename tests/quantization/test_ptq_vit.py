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
