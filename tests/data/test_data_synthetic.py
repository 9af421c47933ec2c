"""synthetic:C,H,W[:N] and the name registry."""
from __future__ import annotations

import pytest
import torch

from edgeslim.core.errors import UsageError
from edgeslim.data import load


def everything(loader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_shapes_labels_and_meta():
    data = load("synthetic:3,8,6:40", batch_size=16)
    meta = data.meta
    assert meta.name == "synthetic:3,8,6:40" and not meta.labelled
    assert meta.classes == [] and meta.num_classes == 0 and meta.input_shape == (3, 8, 6)
    assert (len(data.train.dataset), len(data.val.dataset), len(data.test.dataset)) == (40, 4, 40)
    x, y = next(iter(data.train))
    assert x.shape == (16, 3, 8, 6) and x.dtype == torch.float32 and y.dtype == torch.int64
    for loader in (data.train, data.val, data.test):
        _, ys = everything(loader)
        assert (ys == -1).all()
    xs, _ = everything(data.test)
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05  # normalised uniform noise


def test_default_n_and_no_val():
    data = load("Synthetic:1,4,4", val_fraction=0)
    assert len(data.train.dataset) == 256 and data.val is None and data.meta.name == "synthetic:1,4,4:256"


def test_deterministic_by_seed_and_splits_disjoint():
    a, b, c = (everything(load("synthetic:1,5,5:30", seed=s).test)[0] for s in (7, 7, 8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    data = load("synthetic:1,5,5:30", val_fraction=0.5)
    rows = [set(map(tuple, everything(l)[0].flatten(1).tolist())) for l in (data.train, data.val, data.test)]
    assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])


def test_train_and_test_do_not_depend_on_val_fraction():
    a = load("synthetic:2,3,3:20", val_fraction=0)
    b = load("synthetic:2,3,3:20", val_fraction=0.3)
    assert torch.equal(a.train.dataset.images[:40], b.train.dataset.images[:40])
    assert torch.equal(everything(a.test)[0], everything(b.test)[0])


def test_calibration_batches():
    data = load("synthetic:1,4,4:10", batch_size=4)
    batches = list(data.calibration_batches(5))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in batches]), everything(data.calibration_batches(3))[0])


@pytest.mark.parametrize(
    "spec",
    ["synthetic:", "synthetic", "synthetic:1,28", "synthetic:1,28,28,3", "synthetic:a,b,c", "synthetic:0,28,28",
     "synthetic:1,28,28:0", "synthetic:1,28,28:x", "synthetic:1,-2,28"],
)
def test_bad_specs(spec):
    with pytest.raises(UsageError, match="bad synthetic spec") as err:
        load(spec)
    assert "synthetic:C,H,W[:N]" in err.value.hint and err.value.exit_code == 2


def test_too_big():
    with pytest.raises(UsageError, match=r"would hold 2.1 GiB of inputs \(limit 2 GiB\)"):
        load("synthetic:3,1000,1000:256")


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagefolder", "imagefolder:", "fashion-mnist:x", ""])
def test_unknown_names_list_the_valid_forms(name):
    with pytest.raises(UsageError, match="unknown dataset") as err:
        load(name)
    for form in ("fashion-mnist", "imagefolder:PATH", "synthetic:C,H,W[:N]"):
        assert form in err.value.hint


@pytest.mark.parametrize("n", [-1, 1.5, True])
def test_calibration_batches_bad_count(n):
    with pytest.raises(UsageError, match="calibration_batches needs a non-negative number"):
        load("synthetic:1,2,2:4").calibration_batches(n)
