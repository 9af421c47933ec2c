"""Every registered config type round-trips through dict / YAML and applies to the toy models.

One test, parametrized over ``core.registry.registered()`` after importing every technique package.
Each kind is built with its defaults, or with the small overrides in ``OVERRIDES`` where a default
would train for a full epoch or time every layer in ONNX Runtime (the test has to stay fast, not
to reproduce a default run). ``MODELS`` names the toy models a kind needs (depth pruning removes
residual blocks: only TinyResNet has any); every other kind applies to all of them.
"""
from __future__ import annotations

import copy

import pytest
import torch
import yaml

from edgeslim.core.config import Config
from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context, export_for, registered, run
from edgeslim.data import DataBundle
from edgeslim.data.bundle import DataMeta
from edgeslim.search.recipe import register_all
from edgeslim.testing.models import TOY_MODELS, toy_loader

register_all()
import edgeslim.codec  # noqa: E402,F401  (deep_compress)

QUICK_TRAINING = {"max_batches": 1}
OVERRIDES: dict[str, dict] = {
    "finetune": QUICK_TRAINING,
    "kd": QUICK_TRAINING,
    "qat": {**QUICK_TRAINING, "calib_batches": 1},
    "ptq": {"calib_batches": 1},
    "channel_prune": {"bn_batches": 1},
    "block_prune": {"bn_batches": 1, "calibration_batches": 1},
    "svd": {"check_latency": False, "bn_batches": 1},  # no per-layer ONNX Runtime timing
    "tucker": {"check_latency": False, "bn_batches": 1},
    "cp": {"check_latency": False, "bn_batches": 1, "n_iter_max": 5},
    "deep_compress": {"prune": 0.5, "bits": 2, "prune_epochs": 0, "finetune_epochs": 0},  # toy layers: few weights
}
MODELS: dict[str, tuple[str, ...]] = {"block_prune": ("tiny_resnet",), "head_prune": ("tiny_vit",),
                                      "token_merge": ("tiny_vit",)}


def _data() -> DataBundle:
    meta = DataMeta(name="toy", classes=[str(i) for i in range(4)], num_classes=4, input_shape=(1, 8, 8),
                    mean=(0.0,), std=(1.0,))
    return DataBundle(train=toy_loader(n=32, batch_size=16, seed=1), val=toy_loader(n=16, batch_size=16, seed=2),
                      test=toy_loader(n=16, batch_size=16, seed=3), meta=meta)


def _config(cls: type[Config]) -> Config:
    return cls(**OVERRIDES.get(cls.kind, {}))


# a handler registered for a config without a kind (a test's own) has no name in YAML: not a recipe step
@pytest.mark.parametrize("cls", sorted((c for c in registered() if c.kind), key=lambda c: c.kind), ids=lambda c: c.kind)
def test_every_registered_config_round_trips_and_applies(cls):
    cfg = _config(cls)
    assert Config.from_dict(cfg.to_dict()) == cfg
    assert Config.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict()))) == cfg
    assert cls.from_yaml(cfg.to_yaml()) == cfg
    data = _data()
    x = next(iter(data.test))[0]
    for name in MODELS.get(cls.kind, tuple(TOY_MODELS)):
        torch.manual_seed(0)
        model = TOY_MODELS[name]().eval()
        with torch.no_grad():
            before = model(x)
        ctx = Context(data=data, teacher=copy.deepcopy(model), input_shape=(1, 8, 8), progress=False)
        out, details = run(model, cfg, ctx)
        with torch.no_grad():
            after = out.eval()(x)
        assert after.shape == before.shape, (cls.kind, name)
        assert torch.isfinite(after).all(), (cls.kind, name)
        assert isinstance(details, dict)
        if cls.final and _exports(cfg):
            assert out.edgeslim_config == cfg  # a deployable format records the config that chooses its exporter


def _exports(cfg: Config) -> bool:
    try:
        export_for(cfg)
    except UsageError:
        return False
    return True
