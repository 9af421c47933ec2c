"""tinydet and tinyseg: shapes in both modes, the CenterNet encoding / decoding, export to ONNX with
ONNX Runtime parity, checkpoints, and the task each zoo entry declares."""
import json

import numpy as np
import pytest
import torch

from edgeslim import models
from edgeslim.core.errors import DataError, UsageError
from edgeslim.measure import count_macs, count_params
from edgeslim.models.centernet import STRIDE, HeadMaps, Postprocess, centernet_loss, encode

DENSE = [n for n, e in models.ZOO.items() if e.task != "classification"]


def test_every_zoo_entry_declares_its_task():
    tasks = {n: e.task for n, e in models.ZOO.items()}
    assert tasks["tinydet"] == "detection" and tasks["tinyseg"] == "segmentation"
    assert tasks["resnet20"] == tasks["lenet5"] == "classification" and set(tasks.values()) <= set(models.TASKS)
    assert models.task_of(models.create("tinydet")) == "detection"
    assert models.task_of(models.create("resnet8")) == "classification"
    with pytest.raises(UsageError, match="unknown task 'ranking'"):
        models.register_model("x", task="ranking")


def test_sizes_at_64px():
    """The figures the zoo documents: a few hundred thousand parameters, tens of MMACs at 64x64."""
    det, seg = models.create("tinydet"), models.create("tinyseg")
    assert count_params(det) == 356_606 and count_params(seg) == 221_862
    assert count_macs(det, (1, 1, 64, 64))[0] == 29_605_888
    assert count_macs(seg, (1, 1, 64, 64))[0] == 9_811_968


def test_tinydet_train_mode_gives_head_maps_and_eval_mode_fixed_k_detections(batch):
    x, _, _ = batch(n=3)
    m = models.create("tinydet", num_classes=7, topk=20).train()
    maps = m(x)
    assert isinstance(maps, HeadMaps)
    assert [tuple(t.shape) for t in maps] == [(3, 7, 16, 16), (3, 2, 16, 16), (3, 2, 16, 16)]
    with torch.no_grad():
        boxes, scores, labels = m.eval()(x[:1])
    assert boxes.shape == (20, 4) and scores.shape == (20,) and labels.shape == (20,) and labels.dtype == torch.int64
    assert bool((boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all())
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 64 and int(labels.max()) < 7
    assert bool((scores[:-1] >= scores[1:]).all()) and 0 <= float(scores.min()) and float(scores.max()) <= 1
    preds = m.predict(x)
    assert len(preds) == 3 and torch.allclose(preds[0]["boxes"], boxes, atol=1e-4) and preds[2]["scores"].shape == (20,)
    assert not m.training  # predict keeps the mode


def test_tinyseg_gives_logits_at_the_input_resolution_in_both_modes(batch):
    x, _, _ = batch(n=2, size=48)
    m = models.create("tinyseg", num_classes=5, input_size=48)
    assert m.train()(x).shape == (2, 5, 48, 48) and m.eval()(x).shape == (2, 5, 48, 48)
    assert models.create("tinyseg", in_channels=3).eval()(torch.randn(1, 3, 50, 70)).shape == (1, 11, 50, 70)


@pytest.mark.parametrize("name", DENSE)
def test_bad_sizes_and_widths_are_one_line(name):
    with pytest.raises(UsageError, match=f"{name} takes inputs of at least 16x16"):
        models.create(name, input_size=8)
    with pytest.raises(UsageError, match="width must be a positive integer"):
        models.create(name, width=0)


def test_encoding_puts_a_peak_at_each_centre_and_decoding_gives_the_box_back():
    boxes = torch.tensor([[10.0, 6.0, 30.0, 22.0], [40.0, 40.0, 57.0, 63.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([2, 5])}]
    enc = encode(targets, 6, 1, 16, 16, torch.device("cpu"))
    centre = ((boxes[:, :2] + boxes[:, 2:]) / 2 / STRIDE)
    cells = centre.floor().long()
    assert enc.heatmap[0, 2, cells[0, 1], cells[0, 0]] == 1 and enc.heatmap[0, 5, cells[1, 1], cells[1, 0]] == 1
    assert int((enc.heatmap == 1).sum()) == 2 and float(enc.heatmap[0, [0, 1, 3, 4]].max()) == 0
    assert torch.allclose(enc.offset, centre - cells) and torch.allclose(enc.size, (boxes[:, 2:] - boxes[:, :2]) / 4)
    # head maps that say exactly this decode to the same boxes, best first
    noise = torch.rand(1, 6, 16, 16, generator=torch.Generator().manual_seed(0))
    heat = torch.where(enc.heatmap == 1, 5.0, -5.0 - noise)  # no plateau: one peak per true centre
    size, offset = torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)
    for (cx, cy), s, o in zip(cells.tolist(), enc.size, enc.offset):
        size[0, :, cy, cx], offset[0, :, cy, cx] = s, o
    heat[0, 5, cells[1, 1], cells[1, 0]] = 6.0
    m = models.create("tinydet", num_classes=6, topk=4).eval()
    out_boxes, scores, labels = m.postprocess(HeadMaps(heat, size, offset), (64, 64))
    assert labels[0, :2].tolist() == [5, 2] and torch.allclose(out_boxes[0, :2], boxes.flip(0), atol=1e-5)
    assert float(scores[0, 1]) == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())


def test_fewer_peaks_than_k_fill_up_with_score_0():
    yy, xx = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    cone = -((yy - 1) ** 2 + (xx - 2) ** 2)[None, None]  # one peak, at cell (x 2, y 1)
    maps = HeadMaps(cone, torch.ones(1, 2, 4, 4), torch.full((1, 2, 4, 4), 0.5))
    boxes, scores, labels = Postprocess(k=3)(maps, (16, 16))
    assert scores[0].tolist() == [pytest.approx(0.5), 0.0, 0.0] and labels[0].tolist() == [0, 0, 0]
    assert boxes[0, 0].tolist() == [8.0, 4.0, 12.0, 8.0]  # centre (2.5, 1.5) cells, 1 x 1 cell, stride 4


def test_loss_is_low_for_the_right_maps_and_learns_something(batch):
    x, targets, _ = batch(n=2)
    m = models.create("tinydet").train()
    loss = m.detection_loss(m(x), targets)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    assert torch.isfinite(m.detection_loss(m(x), empty))  # images without objects: only the heat-map term


@pytest.mark.parametrize("targets,match", [
    ([{"boxes": torch.zeros(1, 4)}], "is not a dict of 'boxes' and 'labels'"),
    ([{"boxes": torch.zeros(1, 5), "labels": torch.zeros(1, dtype=torch.long)}], "'boxes' must be float"),
    ([{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([10])}], r"outside 0\.\.9: 10"),
    ([{"boxes": torch.tensor([[9.0, 1, 1, 9]]), "labels": torch.tensor([1])}], "empty or not finite"),
    (torch.zeros(1), "must be a list of 1 dicts"),
])
def test_bad_targets_are_one_data_error(targets, match):
    m = models.create("tinydet").train()
    with pytest.raises(DataError, match=match):
        centernet_loss(m(torch.randn(1, 1, 64, 64)), targets)


def _ort_outputs(path, x):
    from edgeslim.runtimes.onnxruntime import OnnxRuntime

    session = OnnxRuntime().load(path).session
    return [o.name for o in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: x})


@pytest.mark.parametrize("opset,dynamo", [(17, False), pytest.param(18, True, marks=pytest.mark.slow)])
def test_tinydet_exports_boxes_scores_labels_with_parity(tmp_path, batch, opset, dynamo):
    import warnings

    torch.manual_seed(0)
    m = models.create("tinydet").eval()
    x, _, _ = batch(n=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(tmp_path / "det.onnx"), input_names=["input"], dynamo=dynamo,
                          output_names=["boxes", "scores", "labels"], opset_version=opset)
    for seed in range(3):
        xi = x if seed == 0 else torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(seed))
        names, got = _ort_outputs(tmp_path / "det.onnx", xi.numpy())
        with torch.no_grad():
            ref = [t.numpy() for t in m(xi)]
        assert names == ["boxes", "scores", "labels"] and got[2].dtype == np.int64
        assert [g.shape for g in got] == [(50, 4), (50,), (50,)]
        assert np.abs(got[0] - ref[0]).max() < 1e-4 and np.abs(got[1] - ref[1]).max() < 1e-5
        assert np.array_equal(got[2], ref[2])


def test_tinyseg_exports_with_parity(tmp_path):
    from edgeslim.runtimes import export_onnx

    res = export_onnx(models.create("tinyseg").eval(), tmp_path / "seg.onnx", input_shape=(1, 64, 64))
    assert res["max_abs_diff"] < 1e-4


def test_a_changed_top_k_survives_a_checkpoint(tmp_path):
    m = models.create("tinydet").eval()
    m.postprocess.k = 7
    models.save(m, tmp_path / "c", spec="tinydet", input_shape=(1, 64, 64))
    m2, meta = models.load(tmp_path / "c")
    assert set(meta["structure"]) == {"postprocess"} and m2(torch.zeros(1, 1, 64, 64))[0].shape == (7, 4)


@pytest.mark.parametrize("name", DENSE)
def test_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(1)
    m = models.create(name, num_classes=4).eval()
    models.save(m, tmp_path / "c", spec=name, build={"num_classes": 4}, input_shape=(1, 64, 64))
    m2, meta = models.load(tmp_path / "c")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        a, b = m(x), m2(x)
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_models_command_says_each_task(cli):
    rows = {r["name"]: r for r in json.loads(cli("models", "--json", check_rc=0).stdout)["models"]}
    assert rows["tinydet"]["task"] == "detection" and rows["tinyseg"]["task"] == "segmentation"
    assert rows["resnet20"]["task"] == "classification" and rows["tinyseg"]["params"] == 221_862
    text = cli("models", check_rc=0).stdout
    assert "detection" in text.splitlines()[[r.split()[0] for r in text.splitlines()].index("tinydet")]


@pytest.mark.parametrize("name", DENSE)
def test_channel_pruning_reaches_backbone_neck_and_heads_and_the_result_loads(name, tmp_path):
    import edgeslim
    from edgeslim.pruning import ChannelPrune

    torch.manual_seed(0)
    m = models.create(name).train()  # traced in training mode: the head maps are the outputs
    small = edgeslim.prune(m, ChannelPrune(ratio=0.5), input_shape=(1, 64, 64), progress=False).eval()
    convs = {n: c.out_channels for n, c in small.named_modules() if isinstance(c, torch.nn.Conv2d)}
    if name == "tinydet":
        assert convs["stem.0"] == 8 and convs["fuse2.0"] == 32 and convs["heatmap_head.0.0"] == 16
        assert (convs["heatmap_head.1"], convs["size_head.1"], convs["offset_head.1"]) == (10, 2, 2)  # outputs kept
    else:
        assert convs["stem.0"] == 8 and convs["branch.0"] == 32 and convs["high_classifier"] == 11
    assert count_params(small) < 0.4 * count_params(m)
    models.save(small, tmp_path / "c", spec=name, input_shape=(1, 64, 64))
    again, _ = models.load(tmp_path / "c")
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        a, b = small(x), again(x)
    a, b = (a, b) if isinstance(a, tuple) else ((a,), (b,))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
