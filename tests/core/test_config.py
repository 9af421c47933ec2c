import dataclasses

import pytest
from torch import nn

from edgeslim.core.config import Config, config_type
from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context, apply, register
from edgeslim.core.select import resolve_layer_map, select_layers
from edgeslim.testing.models import TinyConvNet


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Scale(Config):
    kind = "test_scale"
    factor: float = 2.0
    layers: tuple[str, ...] = ()

    def validate(self):
        if self.factor <= 0:
            raise UsageError("factor must be positive")


@register(_Scale)
def _apply_scale(model, config, ctx):
    for _, m in select_layers(model, include=config.layers or None):
        m.weight.data.mul_(config.factor)
    ctx.details["scaled"] = True
    return model


def test_round_trip_dict_and_yaml():
    c = _Scale(factor=3.0, layers=("conv1", "fc"))
    assert c.to_dict() == {"type": "test_scale", "factor": 3.0, "layers": ["conv1", "fc"]}
    assert Config.from_dict(c.to_dict()) == c
    assert Config.from_yaml(c.to_yaml()) == c
    assert hash(Config.from_yaml(c.to_yaml())) == hash(c)


def test_validation_and_unknown_keys():
    with pytest.raises(UsageError, match="factor"):
        _Scale(factor=-1)
    with pytest.raises(UsageError, match="unknown key 'facter'") as e:
        Config.from_dict({"type": "test_scale", "facter": 1})
    assert "factor" in e.value.hint
    with pytest.raises(UsageError, match="unknown config type"):
        config_type("test_scael")
    with pytest.raises(TypeError):
        _Scale(2.0)  # keyword-only


def test_registry_dispatch_and_context():
    m = TinyConvNet()
    w = m.conv1.weight.detach().clone()
    ctx = Context()
    apply(m, _Scale(factor=2.0, layers=("conv1",)), ctx)
    assert ctx.details["scaled"]
    assert (m.conv1.weight - 2 * w).abs().max() < 1e-7


def test_selector():
    m = TinyConvNet()
    assert [n for n, _ in select_layers(m)] == ["conv1", "conv2", "fc"]
    assert [n for n, _ in select_layers(m, types=(nn.Conv2d,), exclude=["conv1"])] == ["conv2"]
    assert [n for n, _ in select_layers(m, include=["conv.*"])] == ["conv1", "conv2"]
    with pytest.raises(UsageError, match="matches no layer") as e:
        select_layers(m, include=["conv3"])
    assert "conv1" in e.value.hint or "conv2" in e.value.hint
    assert resolve_layer_map(m, {"conv1": 4, "conv.*": 8, "fc": None}) == {"conv1": 4, "conv2": 8, "fc": None}
