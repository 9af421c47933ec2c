"""int8 of detectors and segmenters: a detector's box decoding and top-k stay float (a float region),
its convolutions run as integer kernels, and the deployed file's detections match the simulation's."""
import numpy as np
import pytest
import torch

import edgeslim
from edgeslim import models, runtimes
from edgeslim.quantization import PTQ
from edgeslim.quantization.graph import float_regions
from edgeslim.quantization.onnx_qdq import parity
from edgeslim.testing.tasks import synthetic_loader


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    det = models.create("tinydet", num_classes=10, topk=20).eval()
    loader = synthetic_loader("detection", n=8, batch_size=4)
    edgeslim.train.fit(det, loader, epochs=4, lr=0.05, optimizer="adam", seed=0)  # peaks that stand out
    return det.eval(), loader


def test_the_detectors_postprocess_is_a_float_region_and_its_convs_are_integer(detector, tmp_path):
    det, loader = detector
    q = edgeslim.quantize(det, PTQ(calib_batches=2), data=loader)
    assert float_regions(det) == ["postprocess"]
    rt = runtimes.get("onnxruntime")
    path = tmp_path / "q.onnx"
    rt.export(q, path, next(iter(loader))[0][:1], loader=loader)
    kernels = rt.kernels(path, threads=1)
    assert kernels["integer"].get("QLinearConv", 0) >= 12  # every backbone / neck conv and the heads' first convs
    # the three heads' last convs feed only the float region: they give it float outputs
    assert sum(kernels["float"].values()) == 3, kernels
    x = torch.cat([b for b, _ in loader])
    check = parity(q, rt.load(path, threads=1), [x])
    assert check["max_abs_diff"] < 0.5, check  # matched detections: boxes within half a pixel, scores too
    with torch.no_grad():
        for i in range(2):
            ref, got = q(x[i:i + 1]), rt.load(path, threads=1).outputs(x[i:i + 1].numpy())
            assert [tuple(r.shape) for r in ref] == [g.shape for g in got] and got[2].dtype == np.int64


def test_a_segmenters_int8_file_gives_the_simulations_logits(tmp_path):
    torch.manual_seed(0)
    seg = models.create("tinyseg", num_classes=11).eval()
    loader = synthetic_loader("segmentation", n=8, batch_size=4)
    q = edgeslim.quantize(seg, PTQ(calib_batches=2), data=loader)
    rt = runtimes.get("onnxruntime")
    rt.export(q, tmp_path / "s.onnx", next(iter(loader))[0][:1], loader=loader)
    assert rt.kernels(tmp_path / "s.onnx", threads=1)["integer"].get("QLinearConv", 0) >= 5
    x = next(iter(loader))[0]
    with torch.no_grad():
        ref = q(x).numpy()
    got = rt.load(tmp_path / "s.onnx", threads=1)(x.numpy())
    assert got.shape == ref.shape and (ref.argmax(1) == got.argmax(1)).mean() > 0.99
