"""Fashion-MNIST: search path, download (faked), checks on the files, splits, batches."""
from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeslim.core.errors import DataError, UsageError
from edgeslim.data import DataBundle, DataMeta, fashion_mnist, load
from edgeslim.data.bundle import TensorSplit
from edgeslim.data.idx import write_idx

N_TRAIN, N_TEST = 60, 20


def fake_arrays(n: int, split_tag: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixels encode (sample id, split), so a sample can be traced through loaders."""
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    ids = np.arange(n)
    images[:, 0, 0] = ids // 256
    images[:, 0, 1] = ids % 256
    images[:, 0, 2] = split_tag
    images[:, 5:20, 5:20] = 100
    labels = (ids % 10).astype(np.uint8)
    return images, labels


def write_fake_fmnist(folder: Path, *, gz: bool = True, n_train: int = N_TRAIN, n_test: int = N_TEST) -> Path:
    suffix = ".gz" if gz else ""
    for split, n, tag in (("train", n_train, 1), ("test", n_test, 2)):
        images, labels = fake_arrays(n, tag)
        img_name, lbl_name = fashion_mnist.FILES[split]
        write_idx(folder / (img_name + suffix), images)
        write_idx(folder / (lbl_name + suffix), labels)
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real Debian folder, an empty cache, no $EDGESLIM_DATA, no network, no cached arrays."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian" / "fashion-mnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGESLIM_DATA", raising=False)

    def no_network(url):
        raise AssertionError(f"test tried to fetch {url}")

    monkeypatch.setattr(fashion_mnist, "_fetch", no_network)
    fashion_mnist._load_arrays_cached.cache_clear()
    yield tmp_path
    fashion_mnist._load_arrays_cached.cache_clear()


@pytest.fixture
def fake_fmnist(isolated) -> Path:
    return write_fake_fmnist(isolated / "fm")


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation: back to 0..255 integers."""
    return (x * fashion_mnist.STD[0] + fashion_mnist.MEAN[0]).mul(255).round().to(torch.int64)


def ids_and_tags(loader) -> tuple[list[int], set[int]]:
    ids, tags = [], set()
    for x, _ in loader:
        p = pixels(x)[:, 0, 0]
        ids += (p[:, 0] * 256 + p[:, 1]).tolist()
        tags |= set(p[:, 2].tolist())
    return ids, tags


def test_loads_from_data_dir(fake_fmnist):
    data = load("fashion-mnist", data_dir=fake_fmnist, batch_size=16)
    assert isinstance(data, DataBundle) and isinstance(data.meta, DataMeta)
    meta = data.meta
    assert meta.name == "fashion-mnist" and meta.labelled
    assert meta.classes[0] == "T-shirt/top" and meta.classes[9] == "Ankle boot" and meta.num_classes == 10
    assert meta.input_shape == (1, 28, 28) and meta.mean == (0.2860,) and meta.std == (0.3530,)
    assert (len(data.train.dataset), len(data.val.dataset), len(data.test.dataset)) == (54, 6, N_TEST)
    x, y = next(iter(data.train))
    assert x.dtype == torch.float32 and x.shape == (16, 1, 28, 28) and y.dtype == torch.int64
    # test is in file order and not shuffled; labels and pixels come back exactly
    xs, ys = zip(*data.test)
    images, labels = fake_arrays(N_TEST, 2)
    assert torch.equal(torch.cat(ys), torch.from_numpy(labels.astype(np.int64)))
    assert torch.equal(pixels(torch.cat(xs))[:, 0], torch.from_numpy(images.astype(np.int64)))


def test_raw_files_subfolder_and_env(isolated, monkeypatch):
    write_fake_fmnist(isolated / "root" / "fashion-mnist", gz=False)
    assert len(load("fashion-mnist", data_dir=isolated / "root").test.dataset) == N_TEST
    monkeypatch.setenv("EDGESLIM_DATA", str(isolated / "root"))
    assert len(load("FASHION_MNIST").train.dataset) == 54


def test_debian_dir_then_cache(isolated):
    write_fake_fmnist(fashion_mnist.cache_dir(), n_test=7)
    assert len(load("fashion-mnist").test.dataset) == 7
    write_fake_fmnist(fashion_mnist.DEBIAN_DIR, n_test=5)  # earlier in the search order
    assert len(load("fashion-mnist").test.dataset) == 5
    assert fashion_mnist.cache_dir() == isolated / "cache" / "edgeslim" / "fashion-mnist"


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert fashion_mnist.cache_dir() == Path.home() / ".cache" / "edgeslim" / "fashion-mnist"


def test_missing_without_download_lists_where_it_looked(isolated):
    (isolated / "half").mkdir()
    write_idx(isolated / "half" / "train-images-idx3-ubyte.gz", fake_arrays(3, 1)[0])
    with pytest.raises(DataError) as err:
        load("fashion-mnist", data_dir=isolated / "half", download=False)
    msg, hint = err.value.message, err.value.hint
    assert msg.startswith("Fashion-MNIST not found. Looked in:")
    assert f"{isolated / 'half'} (data_dir): missing train-labels-idx1-ubyte[.gz], t10k-images" in msg
    assert f"{fashion_mnist.DEBIAN_DIR} (Debian package dataset-fashion-mnist): no such folder" in msg
    assert f"{fashion_mnist.cache_dir()} (user cache): no such folder" in msg
    assert "download=False" in msg and fashion_mnist.MIRROR not in msg
    assert msg.count("(data_dir)") == 2  # the folder and its fashion-mnist/ subfolder
    assert "apt-get install dataset-fashion-mnist" in hint and "--data-dir" in hint and "EDGESLIM_DATA" in hint


def test_missing_with_failing_download(isolated, monkeypatch):
    calls = []

    def offline(url):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(fashion_mnist, "_fetch", offline)
    with pytest.raises(DataError) as err:
        load("fashion-mnist")
    msg = err.value.message
    assert calls == [fashion_mnist.MIRROR + "train-images-idx3-ubyte.gz"]
    assert str(fashion_mnist.DEBIAN_DIR) in msg and str(fashion_mnist.cache_dir()) in msg
    assert "download of train-images-idx3-ubyte.gz failed: [Errno -3] Temporary failure" in msg
    assert fashion_mnist.MIRROR in msg
    assert "apt-get install dataset-fashion-mnist" in err.value.hint
    assert not fashion_mnist.cache_dir().exists() or not any(fashion_mnist.cache_dir().iterdir())


def _serve(monkeypatch, source_dir, *, tamper=None):
    """Fake mirror serving the files in source_dir; the MD5 table is set to their sums."""
    files = {p.name: p.read_bytes() for p in source_dir.iterdir()}
    monkeypatch.setattr(fashion_mnist, "MD5", {n: hashlib.md5(b).hexdigest() for n, b in files.items()})
    calls = []

    def fetch(url):
        name = url.removeprefix(fashion_mnist.MIRROR)
        calls.append(name)
        return tamper(files[name]) if tamper and name.startswith("t10k-images") else files[name]

    monkeypatch.setattr(fashion_mnist, "_fetch", fetch)
    return calls


def test_download_verifies_md5_and_fills_the_cache(isolated, monkeypatch):
    calls = _serve(monkeypatch, write_fake_fmnist(isolated / "mirror"))
    data = load("fashion-mnist")
    assert len(calls) == 4 and len(data.test.dataset) == N_TEST
    assert sorted(p.name for p in fashion_mnist.cache_dir().iterdir()) == sorted(fashion_mnist.MD5)
    load("fashion-mnist")  # now found in the cache
    assert len(calls) == 4


def test_download_into_an_unwritable_cache(isolated, monkeypatch):
    _serve(monkeypatch, write_fake_fmnist(isolated / "mirror"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "a-file"))
    (isolated / "a-file").write_text("not a folder")
    with pytest.raises(DataError, match=r"cannot save train-images-idx3-ubyte.gz in .*a-file/edgeslim/fashion-mnist"):
        load("fashion-mnist")


def test_download_with_wrong_md5_saves_nothing_bad(isolated, monkeypatch):
    _serve(monkeypatch, write_fake_fmnist(isolated / "mirror"), tamper=lambda b: b[:-1] + b"x")
    with pytest.raises(DataError, match=r"downloaded t10k-images-idx3-ubyte.gz has MD5 \w+, expected \w+; not saved"):
        load("fashion-mnist")
    saved = sorted(p.name for p in fashion_mnist.cache_dir().iterdir())
    assert saved == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # verified ones only, no temp files


def test_official_md5_table():
    assert fashion_mnist.MD5 == {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }


@pytest.mark.parametrize(
    "damage, message",
    [
        ("count", "train-images-idx3-ubyte.gz has 60 images but train-labels-idx1-ubyte.gz has 59 labels"),
        ("shape", "expected uint8 images of shape (N, 28, 28), got uint8 (60, 32, 32)"),
        ("label", "label 10 out of range 0..9"),
        ("labels-2d", "expected uint8 labels of shape (N,), got uint8 (60, 1)"),
        ("gzip", "corrupt or truncated gzip data"),
        ("magic", "wrong magic number"),
    ],
)
def test_bad_files_fail_clearly(fake_fmnist, damage, message):
    images, labels = fake_arrays(N_TRAIN, 1)
    img, lbl = (fake_fmnist / (n + ".gz") for n in fashion_mnist.FILES["train"])
    if damage == "count":
        write_idx(lbl, labels[:-1])
    elif damage == "shape":
        write_idx(img, np.zeros((N_TRAIN, 32, 32), dtype=np.uint8))
    elif damage == "label":
        labels[3] = 10
        write_idx(lbl, labels)
    elif damage == "labels-2d":
        write_idx(lbl, labels[:, None])
    elif damage == "gzip":
        img.write_bytes(img.read_bytes()[:-20])
    elif damage == "magic":
        img.write_bytes(gzip.compress(b"\x08\x03\x00\x00" + gzip.decompress(img.read_bytes())[4:]))
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        load("fashion-mnist", data_dir=fake_fmnist)
    assert err.value.hint


def test_val_split_is_carved_from_train_deterministically(fake_fmnist):
    def split_ids(seed, val_fraction=0.25):
        data = load("fashion-mnist", data_dir=fake_fmnist, seed=seed, val_fraction=val_fraction, batch_size=8)
        train_ids, train_tags = ids_and_tags(data.train)
        val_ids, val_tags = ids_and_tags(data.val)
        test_ids, test_tags = ids_and_tags(data.test)
        assert train_tags == val_tags == {1} and test_tags == {2}  # val comes from train, never from test
        assert len(val_ids) == 15 and len(train_ids) == 45 and len(test_ids) == N_TEST
        assert sorted(train_ids + val_ids) == list(range(N_TRAIN))  # disjoint and complete
        return set(val_ids)

    assert split_ids(0) == split_ids(0)
    assert split_ids(0) != split_ids(1)
    data = load("fashion-mnist", data_dir=fake_fmnist, val_fraction=0)
    assert data.val is None and len(data.train.dataset) == N_TRAIN


def test_too_few_samples_for_a_val_split(isolated):
    write_fake_fmnist(isolated / "tiny", n_train=1)
    with pytest.raises(DataError, match="cannot carve 10% of 1 samples") as err:
        load("fashion-mnist", data_dir=isolated / "tiny")
    assert "smaller val_fraction" in err.value.hint
    write_fake_fmnist(isolated / "two", n_train=2)  # labels 0 and 1: the fewest a classifier can learn from
    assert load("fashion-mnist", data_dir=isolated / "two", val_fraction=0).val is None


def test_one_class_is_refused(isolated):
    write_fake_fmnist(isolated / "tiny", n_train=1)  # every training label is 0
    with pytest.raises(DataError, match=r"fashion-mnist has in its training split 1 class \(T-shirt/top\): a "
                                        r"classifier needs at least two"):
        load("fashion-mnist", data_dir=isolated / "tiny", val_fraction=0)


def test_missing_data_dir_does_not_fall_back(isolated, monkeypatch):
    write_fake_fmnist(fashion_mnist.DEBIAN_DIR)  # a copy that a typo must not silently pick up
    with pytest.raises(DataError, match=r"--data-dir \(data_dir\) .*no-such does not exist"):
        load("fashion-mnist", data_dir=isolated / "no-such")
    monkeypatch.setenv("EDGESLIM_DATA", str(isolated / "gone"))
    with pytest.raises(DataError, match=r"\$EDGESLIM_DATA .*gone does not exist"):
        load("fashion-mnist")


def test_train_shuffle_is_seeded_and_eval_is_ordered(fake_fmnist):
    def first_ids(seed):
        return ids_and_tags(load("fashion-mnist", data_dir=fake_fmnist, seed=seed, batch_size=60).train)[0]

    assert first_ids(3) == first_ids(3) != first_ids(4)
    data = load("fashion-mnist", data_dir=fake_fmnist, batch_size=8, eval_batch_size=5)
    ids, _ = ids_and_tags(data.test)
    assert ids == list(range(N_TEST))
    assert [len(x) for x, _ in data.val] == [5, 1] and len(next(iter(data.train))[0]) == 8


def test_calibration_batches_are_the_first_train_rows_in_order(fake_fmnist):
    data = load("fashion-mnist", data_dir=fake_fmnist, batch_size=10)
    kept = data.train.dataset.rows.tolist()
    batches = list(data.calibration_batches(2))
    assert len(batches) == 2 and all(x.shape == (10, 1, 28, 28) for x, _ in batches)
    ids = ids_and_tags([(x, y) for x, y in batches])[0]
    assert ids == kept[:20]
    again = list(data.calibration_batches(2))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert len(list(data.calibration_batches(100))) == 6  # no more than the split holds


def test_batches_are_one_tensor_gather_not_per_item(fake_fmnist, monkeypatch):
    def per_item(self, i):
        raise AssertionError("per-item __getitem__ called by the loader")

    monkeypatch.setattr(TensorSplit, "__getitem__", per_item)
    data = load("fashion-mnist", data_dir=fake_fmnist, batch_size=7)
    assert sum(len(x) for x, _ in data.train) == 54


def test_arrays_are_parsed_once_per_process(fake_fmnist):
    a = load("fashion-mnist", data_dir=fake_fmnist)
    b = load("fashion-mnist", data_dir=fake_fmnist, seed=5)
    assert a.train.dataset.images is b.train.dataset.images and a.train.dataset.images.dtype == torch.uint8
    lbl = fake_fmnist / "t10k-labels-idx1-ubyte.gz"
    write_idx(lbl, np.zeros(N_TEST, dtype=np.uint8))  # the file changed: read again
    os.utime(lbl, ns=(1, 1))
    c = load("fashion-mnist", data_dir=fake_fmnist)
    assert c.test.dataset.labels.sum() == 0 and a.test.dataset.labels.sum() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"eval_batch_size": 2.5}, "eval_batch_size must be a positive integer"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"val_fraction": -0.1}, r"val_fraction must be in \[0, 1\)"),
        ({"num_workers": -1}, "num_workers must be a non-negative integer"),
    ],
)
def test_bad_arguments(fake_fmnist, kwargs, message):
    with pytest.raises(UsageError, match=message):
        load("fashion-mnist", data_dir=fake_fmnist, **kwargs)


def test_num_workers(fake_fmnist):
    data = load("fashion-mnist", data_dir=fake_fmnist, num_workers=1, batch_size=32, val_fraction=0)
    assert [len(x) for x, _ in data.train] == [32, 28]


REAL = fashion_mnist.DEBIAN_DIR


@pytest.mark.skipif(not (REAL / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGESLIM_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = load("fashion-mnist", download=False)  # found in the Debian folder
    assert len(data.train.dataset) + len(data.val.dataset) == 60000 and len(data.test.dataset) == 10000
    assert len(data.val.dataset) == 6000
    assert len(load("fashion-mnist", data_dir=REAL, val_fraction=0.2).val.dataset) == 12000
    x, y = next(iter(data.train))
    assert x.shape == (128, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    some_x = torch.cat([x for x, _ in itertools.islice(data.test, 20)])  # 2560 images
    assert abs(some_x.mean().item()) < 0.05 and abs(some_x.std().item() - 1) < 0.05
    assert torch.equal(torch.bincount(data.test.dataset.labels), torch.full((10,), 1000))


def test_download_cut_short(isolated, monkeypatch):
    def cut(url):
        raise fashion_mnist.http.client.IncompleteRead(b"partial", 100)

    monkeypatch.setattr(fashion_mnist, "_fetch", cut)
    with pytest.raises(DataError, match="download of train-images-idx3-ubyte.gz failed: IncompleteRead"):
        load("fashion-mnist")
