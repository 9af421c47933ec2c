"""Fixtures for the search tests (helpers live in search_toys.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from search_toys import SMALL_SPACE, SPEC, toy_bundle, trained_toy, write_imagefolder  # noqa: E402


@pytest.fixture(scope="session")
def toy_data():
    return toy_bundle()


@pytest.fixture(scope="session")
def toy_model():
    return trained_toy()


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory):
    """(data name, trained checkpoint dir) for CLI tests."""
    import edgeslim.data
    from edgeslim import models
    from edgeslim.testing.models import TinyConvNet
    from edgeslim.train import fit

    root = write_imagefolder(tmp_path_factory.mktemp("toyfolder") / "imgs")
    name = f"imagefolder:{root}"
    data = edgeslim.data.load(name, batch_size=32, val_fraction=0.25)
    model = TinyConvNet(num_classes=4, width=16)
    fit(model, data, epochs=8, lr=0.05, progress=False, seed=0)
    ckpt = models.save(model.eval(), root.parent / "ckpt", spec=SPEC, input_shape=data.meta.input_shape,
                       build={"num_classes": 4, "in_channels": 1, "width": 16}, classes=data.meta.classes)
    return name, ckpt


@pytest.fixture
def small_space_file(tmp_path):
    import yaml

    p = tmp_path / "space.yaml"
    p.write_text(yaml.safe_dump(SMALL_SPACE))
    return p
