"""Synthetic detection and segmentation batches in the loaders' conventions (edgeslim.data.tasks), for
tests: 64x64 one-channel canvases with 1-3 rectangles whose brightness says their class."""
import torch


def synthetic_batch(n: int = 4, size: int = 64, num_classes: int = 10, seed: int = 0):
    """(images (n, 1, size, size), detection targets [{"boxes", "labels"}], masks (n, size, size) with
    0 = background, 1 + label inside a rectangle, 255 (ignore) on each rectangle's top row)."""
    g = torch.Generator().manual_seed(seed)
    images, masks, targets = torch.zeros(n, 1, size, size), torch.zeros(n, size, size, dtype=torch.long), []

    def rand(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    for i in range(n):
        boxes, labels = [], []
        for _ in range(rand(1, 4)):
            w, h = rand(size // 6, size // 2), rand(size // 6, size // 2)
            x1, y1, c = rand(0, size - w), rand(0, size - h), rand(0, num_classes)
            images[i, 0, y1:y1 + h, x1:x1 + w] = (c + 1) / num_classes
            masks[i, y1:y1 + h, x1:x1 + w] = c + 1
            masks[i, y1, x1:x1 + w] = 255
            boxes.append([x1, y1, x1 + w, y1 + h])
            labels.append(c)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return (images - 0.1) / 0.25, targets, masks


class _Split(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def _collate(items):
    x = torch.stack([x for x, _ in items])
    ys = [y for _, y in items]
    return x, (ys if isinstance(ys[0], dict) else torch.stack(ys))


def synthetic_loader(task: str, n: int = 8, batch_size: int = 4, size: int = 64, seed: int = 0):
    """A DataLoader of detection ((images, [target dicts])) or segmentation ((images, masks)) batches."""
    x, targets, masks = synthetic_batch(n, size, seed=seed)
    labels = targets if task == "detection" else masks
    return torch.utils.data.DataLoader(_Split(x, labels), batch_size=batch_size, collate_fn=_collate)
