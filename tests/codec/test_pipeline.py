import types

import pytest
import torch

from edgeslim.codec import DeepCompress, EszError, decode_file, deep_compress
from edgeslim.codec.pipeline import magnitude_mask, per_layer
from edgeslim.core.config import Config
from edgeslim.core.errors import EdgeslimError, UsageError
from edgeslim.core.registry import apply
from edgeslim.testing.models import TinyConvNet, TinyMLP, toy_loader

SPEC = "edgeslim.testing.models:TinyConvNet"


def _data():
    loader = toy_loader(n=64)
    return types.SimpleNamespace(train=loader, val=None, test=loader, meta=None)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyConvNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = DeepCompress(prune={"conv1": 0.3, "conv": 0.6, "fc": 0.5}, bits={"conv": 4, "fc": 3}, index_bits=3,
                       prune_epochs=1, finetune_epochs=1)
    out = tmp_path_factory.mktemp("dc")
    small, report = deep_compress(model, cfg, data=_data(), spec=SPEC, input_shape=(1, 8, 8), out=out,
                                   runs=3, warmup=1, threads=1)
    # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return model, small, report, out


def test_layers_are_pruned_and_shared(compressed):
    _, small, report, _ = compressed
    rows = {r["layer"]: r for r in report.details["layers"]}
    assert set(rows) == {"conv1", "conv2", "fc"}
    for name, bits, rate in (("conv1", 4, 0.3), ("conv2", 4, 0.6), ("fc", 3, 0.5)):
        w = getattr(small, name).weight.detach()
        nz = int((w != 0).sum())
        assert nz <= w.numel() - round(rate * w.numel())
        assert len(torch.unique(w[w != 0])) <= 2 ** bits
        assert rows[name]["kept"] == nz and rows[name]["bits"] == bits


def test_esz_decodes_bit_exact_and_reproduces_accuracy(compressed):
    from edgeslim.train import evaluate

    _, small, report, out = compressed
    model, side = decode_file(out / "model.esz", spec=SPEC)  # a factory spec: the caller names it
    assert side["spec"] == SPEC and side["input_shape"] == [1, 8, 8]
    for k, v in small.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert report.details["decoded_bit_exact"] is True
    acc = evaluate(model, toy_loader(n=64))["top1"]
    assert acc == report.result["accuracy"] == report.details["accuracy_after_stage"]["huffman"]
    assert report.details["accuracy_after_stage"]["quantization"] == acc


def test_report_schema_and_sizes(compressed):
    _, _, report, out = compressed
    d = report.to_dict()
    assert d["command"] == "deepcompress"
    assert d["result"]["size_bytes"] == (out / "model.esz").stat().st_size
    assert d["baseline"]["size_bytes"] == sum(t.numel() * 4 for t in TinyConvNet().state_dict().values()
                                              if t.dtype == torch.float32) + 8 * 2  # + 2 int64 BN counters
    assert [s["stage"] for s in d["details"]["stages"]] == ["fp32", "pruning", "quantization", "huffman", "esz file"]
    sizes = [s["size_bytes"] for s in d["details"]["stages"][:4]]
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3]
    for key in ("weights", "kept", "bits", "index_bits", "fp32_bytes", "pruned_bytes", "quantized_bytes",
                "huffman_bytes", "huffman_weight_bits", "huffman_index_bits"):
        assert key in d["details"]["layers"][0]
    for name in ("report.json", "report.md", "model.esz", "checkpoint/edgeslim.json"):
        assert (out / name).is_file(), name
    from edgeslim import models

    ckpt_model, _ = models.load(out, spec=SPEC)
    _, small, _, _ = compressed
    assert all(torch.equal(ckpt_model.state_dict()[k], v) for k, v in small.state_dict().items())


def test_registry_and_config_round_trip():
    cfg = DeepCompress(prune={"fc": 0.9, "conv": 0.5}, bits=6, finetune_epochs=0, prune_epochs=0)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_yaml(cfg.to_yaml()) == cfg
    hash(cfg)
    model = TinyMLP()
    out = apply(model, DeepCompress(prune=0.5, bits=2, prune_epochs=0, finetune_epochs=0))
    assert len(torch.unique(out[1].weight)) <= 5  # 4 centroids + zero


def test_no_data_still_compresses():
    small, report = deep_compress(TinyMLP(), DeepCompress(prune=0.5, bits={"fc": 3}))
    assert report.result["accuracy"] is None and report.result["size_bytes"] > 0
    assert any("without retraining" in n for n in report.details["notes"])


@pytest.mark.parametrize("kw, match", [
    ({"prune": 1.0}, r"\[0, 1\)"),
    ({"prune": -0.1}, r"\[0, 1\)"),
    ({"prune": {"fc": 1.5}}, r"\[0, 1\)"),
    ({"bits": 9}, "1..8"),
    ({"bits": {"conv": 0}}, "1..8"),
    ({"index_bits": 12}, "1..8"),
    ({"init": "kmeans++"}, "initialisation"),
])
def test_bad_config(kw, match):
    with pytest.raises(UsageError, match=match):
        DeepCompress(**kw)


def test_layer_with_fewer_weights_than_centroids_fails_before_training():
    # TinyConvNet.conv1 has 72 weights; 8 bits means 256 centroids
    with pytest.raises(UsageError, match="conv1.*fewer than the 256 centroids") as e:
        deep_compress(TinyConvNet(), DeepCompress(prune=0.0, bits={"conv": 8, "fc": 2}, prune_epochs=5))
    assert "bits" in e.value.hint


def test_unknown_layer_pattern():
    with pytest.raises(UsageError, match="matches no layer"):
        deep_compress(TinyMLP(), DeepCompress(prune={"nope": 0.5}, bits=2))


def test_magnitude_mask_keeps_largest():
    w = torch.tensor([[0.1, -5.0, 0.2], [3.0, -0.01, 0.0]])
    m = magnitude_mask(w, 0.5)
    assert m.tolist() == [[False, True, True], [True, False, False]]
    m2 = magnitude_mask(w * 0 + 1, 0.5, old=m)  # iterative pruning never revives a pruned weight
    assert not (m2 & ~m).any()


def test_per_layer_groups_and_regex():
    model = TinyConvNet()
    layers = [(n, m) for n, m in model.named_modules() if n in ("conv1", "conv2", "fc")]
    got = per_layer(layers, {"conv1": 4, "conv": 8, "fc": 5})
    assert got == {"conv1": 4, "conv2": 8, "fc": 5}
    assert per_layer(layers, {"conv": 8}) == {"conv1": 8, "conv2": 8, "fc": None}


def test_decode_file_errors(tmp_path):
    p = tmp_path / "x.esz"
    p.write_bytes(b"not an esz file at all")
    with pytest.raises(EszError, match="not an .esz"):
        decode_file(p)
    with pytest.raises(EdgeslimError, match="no such file"):
        decode_file(tmp_path / "missing.esz")
