import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgeslim.core.config import Config
from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context, run
from edgeslim.distillation import KD, Distiller, attention_map, distill, kd_loss, soft_hard_loss
from edgeslim.distillation.losses import kd_loss_fn, parse_pairs
from edgeslim.testing.bn import exact_bn_statistics
from edgeslim.testing.models import TinyConvNet, TinyResNet, toy_loader


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_kd_loss_hand_computed(T):
    s, t = [0.0, 0.0, 1.0], [math.log(3.0), 0.0, -1.0]
    expected = T * T * _kl(_softmax([x / T for x in t]), _softmax([x / T for x in s]))
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), T).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_kd_loss_known_value_and_zero():
    # p_t = (0.75, 0.25), p_s = (0.5, 0.5), T = 1: 0.75 ln 1.5 + 0.25 ln 0.5
    got = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]]), 1.0).item()
    assert got == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    x = torch.randn(5, 7)
    assert kd_loss(x, x.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    # batchmean: the mean over samples, not the sum
    two = kd_loss(torch.zeros(2, 2), torch.tensor([[math.log(3.0), 0.0]] * 2), 1.0).item()
    assert two == pytest.approx(got, rel=1e-6)


def test_soft_plus_hard_and_unlabelled():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])
    soft = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    ce = math.log(2.0)  # uniform student, any label
    got = soft_hard_loss(s, t, torch.tensor([1]), temperature=1.0, alpha=0.9).item()
    assert got == pytest.approx(0.9 * soft + 0.1 * ce, rel=1e-6)
    # unlabelled: the teacher's argmax is the hard label ...
    s2 = torch.tensor([[2.0, 0.0]])
    pseudo = soft_hard_loss(s2, t, torch.tensor([-1]), temperature=1.0, alpha=0.5).item()
    labelled0 = soft_hard_loss(s2, t, torch.tensor([0]), temperature=1.0, alpha=0.5).item()
    assert pseudo == pytest.approx(labelled0)
    # ... or only the soft term
    only_soft = soft_hard_loss(s2, t, torch.tensor([-1]), temperature=1.0, alpha=0.5, pseudo_labels=False).item()
    assert only_soft == pytest.approx(kd_loss(s2, t, 1.0).item())


def test_attention_map():
    f = torch.zeros(1, 2, 2, 2)
    f[0, :, 0, 0] = 2.0  # all energy in one pixel
    a = attention_map(f)
    torch.testing.assert_close(a, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert attention_map(torch.randn(3, 4, 5, 5)).norm(dim=1).allclose(torch.ones(3))


def test_parse_pairs_and_config_roundtrip():
    assert parse_pairs(["t.layer3:s.layer2", "a.b:c"]) == [("layer3", "layer2"), ("a.b", "c")]
    with pytest.raises(UsageError):
        parse_pairs(["layer3"])
    cfg = KD(temperature=2.0, features=("t.block1:s.conv2",))
    assert Config.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(UsageError):
        KD(alpha=1.5)
    with pytest.raises(UsageError):
        KD(temperature=0)


def test_bad_teacher_student_pairs():
    teacher, x = TinyResNet(num_classes=4), torch.randn(2, 1, 8, 8)
    with pytest.raises(UsageError, match="4 classes, the student 7"):
        Distiller(TinyConvNet(num_classes=7), teacher, x)
    with pytest.raises(UsageError, match="no layer named 'block3'") as e:
        Distiller(TinyConvNet(), teacher, x, features=("t.block3:s.conv2",))
    assert "block1" in e.value.hint or "block2" in e.value.hint
    with pytest.raises(UsageError, match="student has no layer named 'conv3'"):
        Distiller(TinyConvNet(), teacher, x, attention=("t.block2:s.conv3",))


def test_distill_trains_student_with_hints_and_attention():
    torch.manual_seed(0)
    loader = toy_loader(n=64, batch_size=16)
    teacher = TinyResNet(width=12)
    from edgeslim.train import fit

    fit(teacher, loader, epochs=1, lr=0.05, progress=False)
    t_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = TinyConvNet(width=4)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    cfg = KD(epochs=2, lr=0.05, features=("t.block2:s.conv2",), attention=("t.block1:s.relu1",))
    out, details = run(student, cfg, Context(data=loader, teacher=teacher, progress=False))
    assert details["adapters"] == {"hint0": "Conv2d"}  # 8 student channels -> 12 teacher channels
    assert any(not torch.equal(before[k], v) for k, v in out.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert set(out.state_dict()) == set(student.state_dict())  # no adapter leaks into the student
    # the caller's teacher is untouched (not trained, not frozen)
    assert all(torch.equal(t_before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.requires_grad for p in teacher.parameters())


def test_distill_unlabelled_data():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 8, 8)
    loader = DataLoader(TensorDataset(x, torch.full((32,), -1)), batch_size=32)
    teacher = TinyConvNet(width=8).eval()
    student = TinyConvNet(width=4)
    student.eval()
    out = distill(student, teacher, loader, KD(epochs=5, lr=0.05, alpha=1.0), progress=False)
    with torch.no_grad():
        gap = kd_loss(out(x), teacher(x)).item()
        # the student before distillation, with BatchNorm statistics valid for its weights (as fit leaves them)
        gap0 = kd_loss(exact_bn_statistics(student, loader)(x), teacher(x)).item()
    assert gap < gap0


def test_kd_loss_fn_for_fit():
    teacher = TinyConvNet().eval()
    fn = kd_loss_fn(teacher, temperature=2.0, alpha=0.5)
    x = torch.randn(4, 1, 8, 8)
    out = TinyConvNet()(x)
    assert fn(out, torch.tensor([0, 1, 2, 3]), x).item() > 0
