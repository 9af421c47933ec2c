"""Supernet training: both rules learn, the run resumes at its last epoch, other settings start afresh."""
from __future__ import annotations

import pytest
import torch

from edgeslim.core.errors import UsageError
from edgeslim.nas import space as S
from edgeslim.nas.supernet import Supernet, recalibrate
from edgeslim.nas.train import SupernetTraining, train_supernet
from edgeslim.train import task_score
from nas_toys import TINY_MB, toy_bundle


def _net():
    torch.manual_seed(0)
    return Supernet(S.from_dict(TINY_MB), num_classes=4)


def _score(net, arch, data):
    net.set_arch(arch)
    recalibrate(net, [x for x, _ in data.train])
    return task_score(net, data.val)


@pytest.mark.parametrize("rule", ["sandwich", "spos"])
def test_both_rules_train_every_subnet(tmp_path, rule):
    data = toy_bundle()
    net = _net()
    sp = net.space
    before = [_score(net, a, data) for a in (sp.largest(), sp.smallest())]
    stats = train_supernet(net, data, SupernetTraining(epochs=12, rule=rule, lr=0.1), work=tmp_path, log=lambda s: None)
    after = [_score(net, a, data) for a in (sp.largest(), sp.smallest())]
    assert stats["epochs_done"] == 12 and stats["rule"] == rule
    assert all(a > max(b, 60.0) for a, b in zip(after, before)), (before, after)


def test_a_killed_run_resumes_after_its_last_epoch(tmp_path):
    data = toy_bundle()
    cfg = SupernetTraining(epochs=2, lr=0.1, max_batches=2)
    whole = _net()
    train_supernet(whole, data, cfg, work=tmp_path / "a", log=lambda s: None)
    part = _net()
    train_supernet(part, data, SupernetTraining(epochs=2, lr=0.1, max_batches=2), work=tmp_path / "b",
                   log=lambda s: None, deadline=0.0)  # stops before its first epoch: nothing saved
    assert not (tmp_path / "b" / "supernet" / "state.json").exists()
    # one epoch in a first process, the second after a "restart" with a fresh net
    first = _net()
    import time

    lines = []
    deadline = [None]

    def log(s):
        lines.append(s)
        if s.startswith("supernet epoch 1/"):
            deadline[0] = 0

    from edgeslim.nas import train as T

    orig = T.time.monotonic
    try:
        T.time.monotonic = lambda: orig() + (1e9 if deadline[0] == 0 else 0)
        train_supernet(first, data, cfg, work=tmp_path / "c", log=log, deadline=time.monotonic() + 1e6)
    finally:
        T.time.monotonic = orig
    assert any("ran out after epoch 1" in s for s in lines)
    resumed = _net()
    msgs = []
    stats = train_supernet(resumed, data, cfg, work=tmp_path / "c", log=msgs.append)
    assert any("resuming after epoch 1" in s for s in msgs) and stats["epochs_done"] == 2
    for (n, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=n)
    other = _net()
    msgs = []
    train_supernet(other, data, SupernetTraining(epochs=2, lr=0.05, max_batches=2), work=tmp_path / "c",
                   log=msgs.append)
    assert any("other settings" in s for s in msgs)


def test_bad_settings_are_one_clear_error():
    with pytest.raises(UsageError, match="rule"):
        SupernetTraining(rule="ofa")
    with pytest.raises(UsageError, match="epochs"):
        SupernetTraining(epochs=0)
