"""A model whose weights pass ONNX's 2 GB protobuf limit exports as one file plus one data file beside it."""
import torch
from torch import nn

from edgeslim.runtimes import copy_artifact, export_onnx
from edgeslim.runtimes import onnx_export as ox


def test_external_weights_go_to_one_data_file_and_travel_with_copies(tmp_path, monkeypatch):
    # the exporter's 2 GB switch, lowered: every initializer over 1 KB goes to a file of its own, as
    # torch's exporter does past 2 GB
    real = ox._torch_export

    def export_with_external_weights(model, x, path, *a, **kw):
        real(model, x, path, *a, **kw)
        import onnx

        m = onnx.load(str(path))
        onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=1024)

    monkeypatch.setattr(ox, "_torch_export", export_with_external_weights)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    out = tmp_path / "out"
    r = export_onnx(model, out / "model.onnx", torch.randn(1, 64))
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert r["size_bytes"] == sum(p.stat().st_size for p in out.iterdir()) and r["max_abs_diff"] < 1e-5
    copy_artifact(out / "model.onnx", tmp_path / "kept" / "baseline.onnx")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["baseline.onnx", "baseline.onnx.data"]
    import onnxruntime as ort

    y = ort.InferenceSession(str(tmp_path / "kept" / "baseline.onnx")).run(None, {"input": torch.ones(1, 64).numpy()})[0]
    assert torch.allclose(torch.as_tensor(y), model(torch.ones(1, 64)), atol=1e-5)
