"""``coco:PATH[:SIZE]``: images plus a COCO instances JSON (detection), the format labelling tools export.

PATH is the instances JSON itself, or a folder holding exactly one ``*.json`` (else one in its
``annotations/`` subfolder). Each image's ``file_name`` is looked up under the folder (for a JSON file:
its folder, and that folder's parent when it is called ``annotations``), then under ``images/`` there.

Categories become class indices 0..K-1 in sorted category-id order (meta.category_ids[i] is the id of
class i; meta.classes their names). Boxes (COCO's [x, y, w, h] in image pixels) become xyxy and are
scaled with their image, which is resized to SIZE x SIZE (default: the first image's size scaled down
to fit 320 x 320). Crowd annotations (iscrowd 1) are left out; images without annotations stay, as
images with no objects. The test split is 10% of the images carved with a fixed seed, so it stays the
same across seeds; validation is carved from what is left with ``seed``.

Everything is checked when the data is loaded, before any training: malformed JSON, an image listed
but missing or of another size than the JSON says, a box outside its image (an overshoot of up to
1 px is clipped), an annotation whose category_id is not in the categories; each a DataError naming
the file, the image and the value.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError
from . import images
from .images import path_and_size
from .bundle import BatchedSplit, Batch, DataMeta, Normalizer, carve

FORM = "coco:PATH[:SIZE]"
MAX_SIDE = 320
TEST_FRACTION = 0.1
OVERSHOOT = 1.0  # pixels a box may pass its image's edge by, clipped; beyond that it is refused
LAYOUT_HINT = ("PATH is an instances JSON, or a folder with one *.json (or annotations/*.json) and the images "
               "it lists (there or in images/)")


def parse(spec: str) -> tuple[Path, int | None]:
    """'PATH' or 'PATH:SIZE' (the part after 'coco:') -> (path, size or None)."""
    return path_and_size("coco", spec, 320, is_path=Path.exists)


def build(spec: str, *, val_fraction: float, seed: int):
    """(train, val, test, meta) for load(); val is None when val_fraction is 0."""
    path, size = parse(spec)
    json_path, roots = locate(path)
    doc = read_json(json_path)
    ids, names = categories(doc, json_path)
    samples = read_samples(doc, json_path, roots, {cid: i for i, cid in enumerate(ids)})
    first = images.open_image(samples[0].path, "coco")
    mode = images.mode_of(first)
    hw = (size, size) if size else images.fit(first.height, first.width, MAX_SIDE)
    kept, carved = carve(len(samples), TEST_FRACTION, 0)
    test, pool = [samples[i] for i in carved], [samples[i] for i in kept]
    mean, std = images.stats([s.path for s in pool], mode, hw, "coco")
    normalize = Normalizer(mean, std)
    kept, carved = carve(len(pool), val_fraction, seed)
    train = CocoSplit([pool[i] for i in kept], mode, hw, normalize)
    val = None if carved is None else CocoSplit([pool[i] for i in carved], mode, hw, normalize)
    meta = DataMeta(name=f"coco:{path}" + (f":{size}" if size else ""), classes=names, num_classes=len(names),
                    input_shape=(1 if mode == "L" else 3, *hw), mean=mean, std=std, task="detection",
                    category_ids=ids)
    return train, val, CocoSplit(test, mode, hw, normalize), meta


class Sample:
    """One image: its file, its size (W, H) and its objects (boxes float32 (n, 4) xyxy, labels int64 (n,))."""

    __slots__ = ("path", "size", "boxes", "labels")

    def __init__(self, path: str, size: tuple[int, int], boxes: np.ndarray, labels: np.ndarray):
        self.path, self.size, self.boxes, self.labels = path, size, boxes, labels


class CocoSplit(BatchedSplit):
    """Samples decoded, resized and normalised one batch at a time, boxes scaled with their image."""

    def __init__(self, samples: list[Sample], mode: str, hw: tuple[int, int], normalize: Normalizer):
        self.samples, self.mode, self.hw, self.normalize = samples, mode, hw, normalize

    def __len__(self) -> int:
        return len(self.samples)

    def labels_present(self) -> set[int]:
        return {int(c) for s in self.samples for c in s.labels}

    def __getitems__(self, indices: list[int]) -> Batch:
        picked = [self.samples[i] for i in indices]
        x = torch.stack([images.pixels(s.path, self.mode, self.hw, "coco") for s in picked])
        targets = []
        for s in picked:
            scale = np.array([self.hw[1] / s.size[0], self.hw[0] / s.size[1]] * 2, dtype=np.float32)
            targets.append({"boxes": torch.from_numpy(s.boxes * scale), "labels": torch.from_numpy(s.labels)})
        return self.normalize(x), targets


def locate(path: Path) -> tuple[Path, list[Path]]:
    """(the instances JSON, the folders its file_names are looked up in, in order)."""
    if path.is_file():
        folders = [path.parent] + ([path.parent.parent] if path.parent.name == "annotations" else [])
        return path, [p for f in folders for p in (f, f / "images")]
    if not path.is_dir():
        raise DataError(f"coco: {path} is neither a JSON file nor a folder", hint=LAYOUT_HINT)
    found = sorted(path.glob("*.json")) or sorted((path / "annotations").glob("*.json"))
    if len(found) != 1:
        listed = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        what = f"{len(found)} JSON files ({listed})" if found else "no *.json file (nor annotations/*.json)"
        raise DataError(f"coco: {path} holds {what}", hint="name the instances JSON: coco:PATH/instances.json"
                        if found else LAYOUT_HINT)
    return found[0], [path, path / "images"]


def read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"coco: {path} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                        hint="export the annotations again as COCO JSON") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"coco: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(doc, dict):
        raise DataError(f"coco: {path} holds a JSON {type(doc).__name__}, not a COCO object", hint=LAYOUT_HINT)
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise DataError(f"coco: {path} has no {key!r} list: not a COCO instances file", hint=LAYOUT_HINT)
    return doc


def categories(doc: dict, path: Path) -> tuple[list[int], list[str]]:
    """Category ids in sorted order and their names."""
    seen: dict[int, str] = {}
    for i, c in enumerate(doc["categories"]):
        cid, name = _field(c, "id", int, path, f"categories[{i}]"), _field(c, "name", str, path, f"categories[{i}]")
        if cid in seen:
            raise DataError(f"coco: {path}: category id {cid} appears twice ({seen[cid]!r} and {name!r})")
        seen[cid] = name
    if not seen:
        raise DataError(f"coco: {path} has no categories", hint="a detection dataset needs at least one category")
    ids = sorted(seen)
    return ids, [seen[i] for i in ids]


def read_samples(doc: dict, path: Path, roots: list[Path], index: dict[int, int]) -> list[Sample]:
    """Every image of the file, checked: present, of its stated size, every box inside it."""
    listed = _images(doc, path, roots)
    objects: dict[int, list] = {image_id: [] for image_id in listed}
    for i, a in enumerate(doc["annotations"]):
        where = f"annotations[{i}]" + (f" (id {a['id']})" if isinstance(a, dict) and "id" in a else "")
        image_id = _field(a, "image_id", int, path, where)
        if image_id not in listed:
            raise DataError(f"coco: {path}: {where} is on image id {image_id}, which is not in 'images'")
        cid = _field(a, "category_id", int, path, where)
        if cid not in index:
            raise DataError(f"coco: {path}: {where} has category_id {cid}, which is not in 'categories' "
                            f"({', '.join(map(str, sorted(index)))})", hint="add the category or drop the annotation")
        if a.get("iscrowd"):
            continue
        file, (w, h) = listed[image_id]
        objects[image_id].append((_box(a.get("bbox"), w, h, path, f"{where} on {Path(file).name}"), index[cid]))
    samples = []
    for image_id, (file, size) in listed.items():
        boxes = np.array([b for b, _ in objects[image_id]], dtype=np.float32).reshape(-1, 4)
        labels = np.array([c for _, c in objects[image_id]], dtype=np.int64)
        samples.append(Sample(file, size, boxes, labels))
    return samples


def _images(doc: dict, path: Path, roots: list[Path]) -> dict[int, tuple[str, tuple[int, int]]]:
    """image id -> (file found, (W, H)); every file present and of the size the JSON gives."""
    listed, missing = {}, []
    for i, entry in enumerate(doc["images"]):
        where = f"images[{i}]"
        image_id, name = _field(entry, "id", int, path, where), _field(entry, "file_name", str, path, where)
        w, h = _field(entry, "width", int, path, where), _field(entry, "height", int, path, where)
        if image_id in listed:
            raise DataError(f"coco: {path}: image id {image_id} appears twice")
        if w < 1 or h < 1:
            raise DataError(f"coco: {path}: {where} ({name}) has size {w}x{h}")
        file = next((r / name for r in roots if (r / name).is_file()), None)
        if file is None:
            missing.append(name)
            continue
        actual = images.open_image(file, "coco", load=False).size
        if actual != (w, h):
            raise DataError(f"coco: {file} is {actual[0]}x{actual[1]} pixels but {path.name} says {w}x{h}",
                            hint="export the annotations again from the images as they are")
        listed[image_id] = (str(file), (w, h))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"coco: {path.name} lists {missing[0]}{more}, not found in {', '.join(map(str, roots))}",
                        hint=LAYOUT_HINT)
    if not listed:
        raise DataError(f"coco: {path} lists no images", hint=LAYOUT_HINT)
    return listed


def _box(bbox, w: int, h: int, path: Path, where: str) -> list[float]:
    """COCO [x, y, w, h] -> xyxy inside the W x H image (an overshoot up to OVERSHOOT px clipped)."""
    ok = isinstance(bbox, list) and len(bbox) == 4 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    if not ok or bbox[2] <= 0 or bbox[3] <= 0:
        raise DataError(f"coco: {path}: {where} has bbox {bbox!r}; a box is [x, y, width, height] with "
                        "positive width and height")
    x0, y0, x1, y1 = bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]
    if x0 < -OVERSHOOT or y0 < -OVERSHOOT or x1 > w + OVERSHOOT or y1 > h + OVERSHOOT \
            or min(x1, w) <= max(x0, 0) or min(y1, h) <= max(y0, 0):
        raise DataError(f"coco: {path}: {where} has bbox {bbox!r}, outside the {w}x{h} image",
                        hint=f"fix the box; boxes may pass the image's edge by {OVERSHOOT:g} px at most")
    return [max(x0, 0.0), max(y0, 0.0), min(x1, float(w)), min(y1, float(h))]


def _field(entry, key: str, kind: type, path: Path, where: str):
    value = entry.get(key) if isinstance(entry, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        got = "nothing" if value is None else repr(value)
        want = "an integer" if kind is int else "a string"
        raise DataError(f"coco: {path}: {where} has {got} as {key!r}, expected {want}",
                        hint="is this a COCO instances file?")
    return value
