import numpy as np
import pytest
import torch
from torch import nn

from edgeslim.core.errors import UsageError
from edgeslim.lowrank import cp_conv, svd_linear, tucker_conv
from edgeslim.lowrank import rank as R


def _err(a, b, x):
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def test_svd_full_rank_exact_and_error_falls():
    torch.manual_seed(0)
    layer = nn.Linear(24, 16)
    x = torch.randn(8, 24)
    assert _err(svd_linear(layer, 16), layer, x) < 1e-5
    errs = [_err(svd_linear(layer, r), layer, x) for r in (1, 4, 8, 12, 16)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    seq = svd_linear(layer, 4)
    assert [m.weight.shape for m in seq] == [torch.Size([4, 24]), torch.Size([16, 4])]
    assert seq[0].bias is None and seq[1].bias is not None


@pytest.mark.parametrize("kw", [dict(stride=1, padding=1), dict(stride=2, padding=1, bias=False),
                                dict(stride=1, padding=(0, 2), kernel_size=(3, 5), dilation=2)])
def test_tucker_full_rank_exact_and_error_falls(kw):
    torch.manual_seed(0)
    kw = dict(kw)
    k = kw.pop("kernel_size", 3)
    layer = nn.Conv2d(8, 12, k, **kw)
    x = torch.randn(2, 8, 11, 11)
    full = tucker_conv(layer, (12, 8))
    assert [type(m) for m in full] == [nn.Conv2d] * 3
    assert _err(full, layer, x) < 1e-5
    errs = [_err(tucker_conv(layer, (r, r)), layer, x) for r in (1, 3, 6, 8)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs


def test_cp_four_convs_error_falls():
    torch.manual_seed(0)
    layer = nn.Conv2d(6, 8, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 9)
    seq = cp_conv(layer, 4)
    assert len(seq) == 4 and seq[1].groups == 4 and seq[1].kernel_size == (3, 1) and seq[2].kernel_size == (1, 3)
    assert seq(x).shape == layer(x).shape
    errs = [_err(cp_conv(layer, r, n_iter_max=50), layer, x) for r in (1, 8, 48)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-2  # high rank: near exact


@pytest.mark.parametrize("fn,arg", [
    (lambda r: svd_linear(nn.Linear(10, 6), r), 7),
    (lambda r: svd_linear(nn.Linear(10, 6), r), 0),
    (lambda r: tucker_conv(nn.Conv2d(4, 8, 3), (r, 2)), 9),
    (lambda r: tucker_conv(nn.Conv2d(4, 8, 3), (2, r)), 5),
    (lambda r: tucker_conv(nn.Conv2d(4, 8, 3), (r, 2)), 0),
    (lambda r: cp_conv(nn.Conv2d(4, 8, 3), r), 0),
    (lambda r: cp_conv(nn.Conv2d(4, 8, 3), r), 10_000),
])
def test_bad_rank(fn, arg):
    with pytest.raises(UsageError, match="rank"):
        fn(arg)


def test_unsupported_layers():
    with pytest.raises(UsageError, match="depthwise"):
        tucker_conv(nn.Conv2d(4, 4, 3, groups=4), (2, 2))
    with pytest.raises(UsageError, match="Linear"):
        svd_linear(nn.Conv2d(4, 4, 3), 2)


def test_rank_rules():
    assert R.energy_rank(np.array([3.0, 2.0, 1.0]), 0.9) == 2
    assert R.energy_rank(np.array([3.0, 2.0, 1.0]), 1.0) == 3
    rng = np.random.default_rng(0)
    low = rng.standard_normal((60, 6)) @ rng.standard_normal((6, 50)) + 0.05 * rng.standard_normal((60, 50))
    assert R.vbmf_rank(low) == 6
    conv = nn.Conv2d(32, 64, 3, padding=1)
    r_out, r_in = R.tucker_ranks_for_ratio(conv, 0.5, (8, 8), (8, 8))
    base = R.layer_cost(conv, (8, 8), (8, 8))[1]
    assert R.tucker_cost(conv, r_out, r_in, (8, 8), (8, 8))[1] <= 0.5 * base
    assert R.tucker_cost(conv, r_out + 2, r_in + 1, (8, 8), (8, 8))[1] > 0.5 * base
    lin = nn.Linear(100, 50)
    r = R.svd_rank_for_ratio(lin, 0.3)
    assert r * 150 <= 0.3 * 5000 < (r + 1) * 150


def test_gram_svd_matches_svd():
    from edgeslim.lowrank.tucker import gram_svd

    torch.manual_seed(0)
    for shape in ((6, 40), (40, 6)):
        m = torch.randn(*shape, dtype=torch.float64)
        u, s, vh = gram_svd(m, 4)
        s_ref = torch.linalg.svdvals(m)[:4]
        torch.testing.assert_close(s, s_ref)
        torch.testing.assert_close((u * s) @ vh, torch.linalg.svd(m, full_matrices=False)[0][:, :4] * s_ref
                                   @ torch.linalg.svd(m, full_matrices=False)[2][:4])


def test_tucker_large_kernel_is_fast_and_hooi_helps():
    import time

    from edgeslim.lowrank.tucker import tucker2

    torch.manual_seed(0)
    w = torch.randn(256, 256, 3, 3)
    t0 = time.perf_counter()
    errs = []
    for it in (0, 2):
        core, u_out, u_in = tucker2(w, (96, 96), n_iter_max=it)
        approx = torch.einsum("abkl,oa,ib->oikl", core, u_out, u_in)
        errs.append(float((approx - w.double()).norm() / w.norm()))
    assert time.perf_counter() - t0 < 10  # was minutes per layer with dense SVDs on shared cores
    assert errs[1] <= errs[0]
    assert torch.allclose(u_out.T @ u_out, torch.eye(96, dtype=torch.float64), atol=1e-8)
