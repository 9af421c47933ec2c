"""The Decomposition seam: every method implements it the same way, and the engine needs nothing else."""
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context, run
from edgeslim.lowrank import CP, SVD, Tucker
from edgeslim.lowrank.decomposition import Decomposition, Geometry
from edgeslim.measure import count_macs


def _geometry(layer: nn.Module, shape) -> Geometry:
    x = torch.zeros(1, *shape)
    with torch.no_grad():
        y = layer(x)
    hw = dict(in_hw=tuple(x.shape[2:]), out_hw=tuple(y.shape[2:])) if x.dim() == 4 else {}
    return Geometry(tuple(x.shape), tuple(y.shape), **hw)


def _weights(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))


# (config, layer factory, input shape (C, H, W) or (F,), full ranks, atol of the full-rank factorization)
CASES = {
    "svd": (SVD(), lambda: nn.Linear(24, 16), (24,), 16, 1e-5),
    "tucker": (Tucker(), lambda: nn.Conv2d(8, 12, 3, stride=2, padding=1), (8, 9, 9), (12, 8), 1e-5),
    # ALS is not exact at any rank; at the largest CP rank it gets close
    "cp": (CP(n_iter_max=50), lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 9, 9), 27, 1e-2),
}


@pytest.fixture(params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    cfg, make, shape, full, atol = CASES[request.param]
    layer = make().eval()
    return cfg.decomposition(), layer, shape, full, atol


def test_implements_the_protocol(case):
    dec, layer, *_ = case
    assert isinstance(dec, Decomposition)
    assert isinstance(layer, dec.layer_type) and dec.unsupported(layer) is None
    assert dec.unsupported(nn.ReLU()) is not None


def test_full_rank_equals_the_layer(case):
    dec, layer, shape, full, atol = case
    fact = dec.build(layer, full, name="l", seed=0).eval()
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(fact(x), layer(x), atol=atol, rtol=0)


def test_cost_is_what_the_built_module_counts(case):
    # the engine allocates ranks from cost(); it must be the params and MACs the layer will really have
    dec, layer, shape, full, _ = case
    geo = _geometry(layer, shape)
    ranks = dec.energy_ranks(dec.spectra(layer), 0.6)
    fact = dec.build(layer, ranks, name="l", seed=0)
    params, macs = dec.cost(layer, ranks, geo)
    assert params == _weights(fact)
    assert macs == count_macs(fact, (1, *shape))[0]


def test_rank_rules_stay_in_range_and_under_budget(case):
    dec, layer, shape, full, _ = case
    geo = _geometry(layer, shape)
    spectra = dec.spectra(layer)
    assert all(np.all(np.diff(s) <= 1e-9) for s in spectra)  # descending
    low, high = dec.energy_ranks(spectra, 0.3), dec.energy_ranks(spectra, 1.0)
    as_tuple = lambda r: r if isinstance(r, tuple) else (r,)  # noqa: E731
    assert all(a <= b for a, b in zip(as_tuple(low), as_tuple(high)))
    assert all(1 <= r <= f for r, f in zip(as_tuple(dec.vbmf_ranks(layer)), as_tuple(full)))
    base = _weights(layer)
    for ratio in (0.2, 0.5):
        ranks = dec.ratio_ranks(layer, ratio, geo, "params")
        assert dec.cost(layer, ranks, geo)[0] <= ratio * base
    with pytest.raises(UsageError, match="larger than l"):
        dec.fixed_ranks(layer, 10_000, "l")


def test_engine_talks_only_to_the_protocol():
    # a config whose decomposition() is a new method: the engine runs it with no change of its own
    calls = []

    class Wrapped:
        layer_type = nn.Linear

        def __init__(self):
            self.inner = SVD().decomposition()

        def __getattr__(self, name):
            calls.append(name)
            return getattr(self.inner, name)

        def build(self, layer, ranks, *, name, seed):
            return nn.Sequential(nn.Identity(), self.inner.build(layer, ranks, name=name, seed=seed))

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class WrappedSVD(SVD):  # no kind of its own: stays out of the config registry
        def decomposition(self):
            return Wrapped()

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval()
    out, det = run(model, WrappedSVD(target_params=0.6, check_latency=False, min_channels=1),
                   Context(input_shape=(16,)))
    assert isinstance(out[0], nn.Sequential) and isinstance(out[0][0], nn.Identity)
    assert {"unsupported", "ratio_ranks", "spectra", "energy_ranks", "cost"} <= set(calls)
    assert det["macs_after"] < det["macs_before"]
