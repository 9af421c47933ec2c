"""The greedy pass: which policies it queues, in which order, from fake probe accuracies."""
from __future__ import annotations

from edgeslim.search.space import SearchSpace
from edgeslim.search.strategies import RECOVERY_POINTS, greedy_seeds
from edgeslim.testing.models import TinyConvNet


def _seeds(accs: dict[float, float], sla: float, **space):
    asked = []

    def probe(params):
        asked.append(params)
        return accs[params["prune_ratio"]]

    sp = SearchSpace(prune_ratio=(0.0, 0.3, 0.5, 0.7), allocation=("uniform",), lowrank=(False,), **space)
    return greedy_seeds(TinyConvNet(), sp, sla=sla, batches=[], run_proxy=probe, log=lambda s: None), asked


def test_greedy_queues_anchor_then_most_aggressive_in_reach():
    seeds, asked = _seeds({0.3: 90.0, 0.5: 89.0 - RECOVERY_POINTS + 0.5, 0.7: 60.0}, sla=89.0)
    ratios = [s["prune_ratio"] for s in seeds]
    assert ratios == [0.0, 0.5, 0.7, 0.3]  # int8 alone, best in reach, one step up, one step down
    assert seeds[0]["finetune_epochs"] == 0 and all(s["finetune_epochs"] == 2 for s in seeds[1:])
    assert [a["prune_ratio"] for a in asked] == [0.3, 0.5, 0.7]  # stops at the first ratio out of reach
    assert all(a["finetune_epochs"] == 1 for a in asked)  # the probe fine-tunes briefly


def test_greedy_without_reach_keeps_only_the_anchor():
    seeds, asked = _seeds({0.3: 10.0, 0.5: 10.0, 0.7: 10.0}, sla=89.0)
    assert [s["prune_ratio"] for s in seeds] == [0.0]
    assert len(asked) == 1


def test_greedy_probe_without_finetuning_when_the_space_has_none():
    seeds, asked = _seeds({0.3: 85.0, 0.5: 70.0, 0.7: 10.0}, sla=89.0, finetune_epochs=(0,))
    assert all(a["finetune_epochs"] == 0 for a in asked)
    assert [s["prune_ratio"] for s in seeds] == [0.0, 0.3, 0.5]  # 85 is within 10 points without fine-tuning
