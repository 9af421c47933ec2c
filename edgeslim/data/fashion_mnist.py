"""Fashion-MNIST (Zalando): 60,000 training and 10,000 test images, 28x28 grey, 10 classes.

Where the four IDX files are looked for, in order: the folder the user names
(``data_dir`` / ``--data-dir``, else ``$EDGESLIM_DATA``; the folder itself or its
``fashion-mnist/`` subfolder), the Debian package's folder, and the user cache.
When none has them and ``download`` is true they are fetched from the official
mirror into the cache, MD5-checked, and written atomically.

The MD5 sums are those of the .gz files the mirror serves. They are checked on
download only: Debian's dataset-fashion-mnist package ships the same images
re-gzipped, so its .gz files have other sums; local files are checked for
structure (magic, shape, counts, label range) instead.
"""
from __future__ import annotations

import functools
import hashlib
import http.client
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError
from ..core.io import atomic_write_bytes
from .bundle import DataMeta, Normalizer, TensorSplit, carve
from .idx import read_idx

NAME = "fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = (0.2860,), (0.3530,)
MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {  # split -> (images, labels), without the .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
_BASENAMES = [name for pair in FILES.values() for name in pair]
HOW_TO_GET = (
    "install it with `apt-get install dataset-fashion-mnist`, or put the four files "
    f"({', '.join(n + '.gz' for n in _BASENAMES)}; gzipped or not) in a folder and pass "
    f"--data-dir DIR (data_dir=DIR) or set EDGESLIM_DATA=DIR; they are at {MIRROR}"
)


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/edgeslim/fashion-mnist, else ~/.cache/edgeslim/fashion-mnist."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "edgeslim" / NAME


def build(*, val_fraction: float, seed: int, data_dir: str | os.PathLike | None, download: bool):
    """(train, val, test, meta) for load(); val is None when val_fraction is 0."""
    train_x, train_y, test_x, test_y = load_arrays(find(data_dir, download=download))
    normalize = Normalizer(MEAN, STD)
    kept, carved = carve(len(train_x), val_fraction, seed)
    train = TensorSplit(train_x, train_y, normalize, kept)
    val = None if carved is None else TensorSplit(train_x, train_y, normalize, carved)
    test = TensorSplit(test_x, test_y, normalize)
    meta = DataMeta(name=NAME, classes=list(CLASSES), num_classes=10, input_shape=(1, 28, 28), mean=MEAN, std=STD)
    return train, val, test, meta


def find(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> dict[str, Path]:
    """Paths of the four files (basename -> path), from the first place that has all of them."""
    looked = []
    for folder, why in _candidates(data_dir):
        files, problem = _files_in(folder)
        if files:
            return files
        looked.append(f"  {folder} ({why}): {problem}")
    cache = cache_dir()
    if download:
        try:
            return _download(cache)
        except DataError as e:
            looked.append(f"  {MIRROR} (download into {cache}): {e.message}")
    where = "\n".join(looked)
    tail = "" if download else "\n(download=False, so it was not fetched)"
    raise DataError(f"Fashion-MNIST not found. Looked in:\n{where}{tail}", hint=HOW_TO_GET)


def _candidates(data_dir) -> list[tuple[Path, str]]:
    places = []
    if data_dir is not None:
        user, why = Path(data_dir).expanduser(), "data_dir"
    elif os.environ.get("EDGESLIM_DATA"):
        user, why = Path(os.environ["EDGESLIM_DATA"]).expanduser(), "$EDGESLIM_DATA"
    else:
        user = None
    if user is not None:
        if not user.exists():  # a folder the user named and mistyped must not fall back to another copy
            flag = "--data-dir (data_dir)" if why == "data_dir" else "$EDGESLIM_DATA"
            raise DataError(f"{flag} {user} does not exist", hint="name the folder that holds the Fashion-MNIST "
                            "files, or leave it out to use the installed or cached copy")
        places += [(user, why)] + ([(user / NAME, why)] if user.is_dir() else [])
    places += [(DEBIAN_DIR, "Debian package dataset-fashion-mnist"), (cache_dir(), "user cache")]
    return places


def _files_in(folder: Path) -> tuple[dict[str, Path] | None, str]:
    if not folder.is_dir():
        return None, "no such folder"
    found, missing = {}, []
    for base in _BASENAMES:
        path = next((p for p in (folder / f"{base}.gz", folder / base) if p.is_file()), None)
        if path is None:
            missing.append(base + "[.gz]")
        else:
            found[base] = path
    if missing:
        return None, "missing " + ", ".join(missing)
    return found, ""


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _download(cache: Path) -> dict[str, Path]:
    files = {}
    for base in _BASENAMES:
        name = base + ".gz"
        path = cache / name
        if not (path.is_file() and _md5(path.read_bytes()) == MD5[name]):
            try:
                blob = _fetch(MIRROR + name)
            except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts, cut transfers
                reason = getattr(e, "reason", None) or str(e) or type(e).__name__
                raise DataError(f"download of {name} failed: {reason}") from None
            if _md5(blob) != MD5[name]:
                raise DataError(f"downloaded {name} has MD5 {_md5(blob)}, expected {MD5[name]}; not saved")
            try:
                atomic_write_bytes(path, blob)
            except OSError as e:
                raise DataError(f"cannot save {name} in {cache}: {e.strerror or e}") from None
        files[base] = path
    return files


def _md5(blob: bytes) -> str:
    return hashlib.md5(blob, usedforsecurity=False).hexdigest()


def load_arrays(files: dict[str, Path]):
    """(train_x, train_y, test_x, test_y) as tensors: uint8 (N, 1, 28, 28) and int64 (N,).

    Cached per process, keyed on the files' paths, sizes and modification times.
    """
    return _load_arrays_cached(files_key(files))


def files_key(files: dict[str, Path]) -> tuple:
    """The four files' paths, sizes and modification times: what the arrays read from them depend on."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in (files[b] for b in _BASENAMES))


@functools.lru_cache(maxsize=2)
def _load_arrays_cached(key):
    paths = [Path(entry[0]) for entry in key]
    train = _pair(paths[0], paths[1])
    test = _pair(paths[2], paths[3])
    return (*train, *test)


def _pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    hint = "the files are damaged or not Fashion-MNIST; " + HOW_TO_GET
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        got = f"{images.dtype} {images.shape}"
        raise DataError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got {got}", hint=hint)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        got = f"{labels.dtype} {labels.shape}"
        raise DataError(f"{labels_path}: expected uint8 labels of shape (N,), got {got}", hint=hint)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels",
            hint=hint,
        )
    if len(labels) and labels.max() >= len(CLASSES):
        raise DataError(f"{labels_path}: label {labels.max()} out of range 0..{len(CLASSES) - 1}", hint=hint)
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)  # (N, 1, 28, 28), still uint8
    return x, torch.from_numpy(labels.astype(np.int64))
