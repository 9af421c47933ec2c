"""What ``edgeslim.data.load`` returns, and the machinery shared by every dataset.

Datasets keep images as uint8 and normalise a whole batch at once: each split
implements ``__getitems__`` (a list of indices -> one ``(x, y)`` batch), so the
DataLoader does one tensor gather per batch instead of one Python call per item.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..core.errors import DataError, UsageError

Batch = tuple[torch.Tensor, Any]  # (x, y): y labels, detection targets or masks


TASKS = ("classification", "detection", "segmentation")
IGNORE = 255  # the mask value of pixels no class is scored on (segmentation)


@dataclasses.dataclass(frozen=True)
class DataMeta:
    """What a model needs to know about the data. Unlabelled data has no classes (num_classes 0).

    task: "classification" (y: int64 (N,) class indices), "detection" (y: a list of N dicts {"boxes":
    float32 (n, 4) xyxy in input pixels, "labels": int64 (n,) 0-based over ``classes``}) or
    "segmentation" (y: int64 (N, H, W) class indices, IGNORE where no class is scored).
    category_ids: for data from a COCO file, the category id of each class index (sorted by id)."""

    name: str
    classes: list[str]
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W)
    mean: tuple[float, ...]  # per channel, on the 0..1 pixel scale
    std: tuple[float, ...]
    labelled: bool = True
    task: str = "classification"
    category_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; the tasks are: {', '.join(TASKS)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check_model_classes(self, num_classes: int, model: str = "the model") -> None:
        """A DataError when the data has classes (categories) that a model with ``num_classes`` outputs
        cannot predict, naming them."""
        if not self.labelled or num_classes >= self.num_classes:
            return
        missing = [self._class_text(i) for i in range(num_classes, self.num_classes)]
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{self.name} has {self.num_classes} classes but {model} has {num_classes}: "
                        f"no model class for {shown}",
                        hint=f"build the model with num_classes={self.num_classes} (--num-classes), or drop "
                        "those classes from the data")

    def _class_text(self, i: int) -> str:
        cid = f" (category id {self.category_ids[i]})" if self.category_ids else ""
        return f"{self.classes[i]!r}{cid}"


@dataclasses.dataclass
class DataBundle:
    """Train / validation / test loaders (val is None when val_fraction is 0) and the metadata."""

    train: DataLoader
    val: DataLoader | None
    test: DataLoader | None
    meta: DataMeta

    def calibration_batches(self, n: int) -> Iterator[Batch]:
        """The first ``n`` training batches, in dataset order (no shuffle): the same on every call."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UsageError(f"calibration_batches needs a non-negative number of batches, got {n!r}")
        loader = self.train
        ordered = DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            shuffle=False,
            collate_fn=_batched,
            num_workers=loader.num_workers,
        )
        return itertools.islice(iter(ordered), n)


class Normalizer:
    """uint8 pixels -> float32 ``(x / 255 - mean) / std`` per channel, as one multiply-add."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, pixels.to(torch.float32), self.scale)


class BatchedSplit(Dataset):
    """A split that builds whole batches (``__getitems__``: indices -> one batch); one item is a batch of one."""

    def __getitem__(self, i: int) -> Batch:
        x, y = self.__getitems__([i])
        return x[0], y[0]


class TensorSplit(BatchedSplit):
    """Rows ``rows`` of an in-memory uint8 image tensor (N, C, H, W) and int64 labels (N,)."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, normalize: Normalizer, rows: torch.Tensor | None = None
    ):
        self.images, self.labels, self.normalize = images, labels, normalize
        self.rows = torch.arange(len(images)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def labels_present(self) -> set[int]:
        return set(self.labels[self.rows].unique().tolist())

    def __getitems__(self, indices: list[int]) -> Batch:
        rows = self.rows[torch.as_tensor(indices, dtype=torch.long)]
        return self.normalize(self.images[rows]), self.labels[rows]


def check_labels(train: Dataset, meta: DataMeta) -> None:
    """Labelled data must be learnable from its training split: a classifier or a segmenter needs two classes
    there (with one, every model scores 100% and training learns nothing, a wrong success rather than a
    result); a detector needs one box."""
    if not meta.labelled:
        return
    present = train.labels_present() if hasattr(train, "labels_present") else None
    if meta.task == "detection":
        if meta.num_classes < 1 or present == set():
            raise DataError(f"{meta.name} has no boxes in its training split: a detector needs at least one",
                            hint="label some objects in the training images, or use other data")
        return
    n = len(present) if present is not None else meta.num_classes
    if meta.num_classes < 2 or n < 2:
        names = ", ".join(meta.classes[i] for i in sorted(present or [])[:3]) if present else ""
        where = "has" if meta.num_classes < 2 else "has in its training split"
        model = "a classifier" if meta.task == "classification" else "a segmentation model"
        raise DataError(f"{meta.name} {where} {n} class{'es' if n != 1 else ''}" + (f" ({names})" if names else "")
                        + f": {model} needs at least two",
                        hint="add images of another class (one subfolder per class), or use other data"
                        if meta.task == "classification" else "label pixels of another class, or use other data")


def carve(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split ``range(n)`` into (kept, carved) with ``round(n * fraction)`` carved, chosen by ``seed``.

    Both parts come back sorted, so the order inside a split does not depend on the seed.
    """
    if fraction == 0:
        return torch.arange(n), None
    k = max(1, round(n * fraction))
    if k >= n:
        raise DataError(
            f"cannot carve {fraction:.0%} of {n} samples into a separate split and keep any for training",
            hint="use a smaller val_fraction or a larger dataset",
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


def _batched(batch: Batch) -> Batch:
    # __getitems__ already returns a whole batch; the default collate would try to stack it again
    return batch


def make_loader(
    dataset: Dataset | None, *, batch_size: int, num_workers: int, shuffle_seed: int | None = None
) -> DataLoader | None:
    """A loader of whole-tensor batches; shuffled from ``shuffle_seed`` when it is given."""
    if dataset is None:
        return None
    shuffle = shuffle_seed is not None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(shuffle_seed) if shuffle else None,
        collate_fn=_batched,
        num_workers=num_workers,
    )
