"""Data no classifier can learn from is refused when it is loaded, for every command at once."""
import pytest
from PIL import Image

from edgeslim.core.errors import DataError
from edgeslim.data import load


def _folder(root, classes):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (6, 6), color=30 * i).save(root / name / f"{i}.png")
    return root


def test_one_class_folder_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"imagefolder:.* has 1 class \(cat\): a classifier needs at least two") as e:
        load(f"imagefolder:{_folder(tmp_path / 'one', ['cat'])}")
    assert "another class" in e.value.hint


def test_two_classes_load(tmp_path):
    assert load(f"imagefolder:{_folder(tmp_path / 'two', ['cat', 'dog'])}").meta.num_classes == 2


def test_unlabelled_synthetic_data_is_not_a_class_problem():
    assert not load("synthetic:1,4,4:8").meta.labelled
