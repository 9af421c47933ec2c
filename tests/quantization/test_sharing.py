import pytest
import torch
from torch import nn

from edgeslim.quantization import sharing
from edgeslim.core.errors import UsageError


@pytest.mark.parametrize("init", sharing.INITS)
def test_kmeans_reduces_error_and_is_sorted(init):
    torch.manual_seed(0)
    w = torch.randn(4000)
    cb, idx = sharing.kmeans(w, 16, init=init)
    assert cb.dtype == torch.float32 and cb.shape == (16,)
    assert torch.all(cb[1:] >= cb[:-1])
    err = (cb[idx] - w).pow(2).mean()
    assert err < 0.02  # 16 levels on a unit gaussian: Lloyd-Max MSE ~0.0095
    # every weight sits on its nearest centroid
    nearest = (w[:, None] - cb[None, :]).abs().argmin(dim=1)
    assert torch.equal(cb[nearest], cb[idx])


def test_linear_init_spans_range():
    w = torch.tensor([-3.0, 0.0, 0.1, 0.2, 5.0])
    c = sharing.init_centroids(w, 4, "linear")
    assert c[0] == -3.0 and c[-1] == 5.0


def test_fewer_weights_than_centroids():
    with pytest.raises(UsageError, match="fewer than its 32 centroids"):
        sharing.kmeans(torch.randn(10), 32)


def test_codebook_too_large():
    with pytest.raises(UsageError, match="larger than 256"):
        sharing.kmeans(torch.randn(1000), 300)


@pytest.mark.parametrize("bits", [0, 9, -1, 3.0, True])
def test_bits_out_of_range(bits):
    with pytest.raises(UsageError, match="1..8"):
        sharing.check_bits(bits)


def test_shared_weight_pools_gradients_per_centroid():
    torch.manual_seed(0)
    lin = nn.Linear(20, 10)
    mask = torch.rand_like(lin.weight) > 0.5
    p = sharing.share(lin, 3, mask=mask)
    assert torch.equal(lin.weight, torch.where(mask, p.codebook[p.index], torch.zeros(())))
    x = torch.randn(8, 20)
    # expected codebook gradient: sum of the weight gradients of its members (pruned excluded)
    lin.zero_grad()
    lin(x).pow(2).sum().backward()
    dense_grad = (2 * lin(x).detach()).t() @ x  # dL/dW for L = sum(y^2)
    expected = torch.zeros(8).index_add_(0, p.index[mask], dense_grad[mask])
    assert torch.allclose(p.codebook.grad, expected, atol=1e-4)
    # one optimiser step moves centroids only; weights stay tied and pruned ones stay zero
    opt = torch.optim.SGD(lin.parameters(), lr=0.01)
    opt.step()
    assert torch.equal(lin.weight[~mask], torch.zeros(int((~mask).sum())))
    assert torch.equal(lin.weight, torch.where(mask, p.codebook[p.index], torch.zeros(())))
    baked = sharing.bake(lin)
    assert set(baked) == {""}
    assert type(lin.weight) is nn.Parameter and not hasattr(lin, "parametrizations")
    cb = baked[""]
    assert torch.equal(lin.weight.detach(), torch.where(cb["mask"], cb["codebook"][cb["index"]], torch.zeros(())))
