"""The greedy pass: which policies it queues, in which order, from fake probe accuracies."""
from __future__ import annotations

from edgeslim.search.space import SearchSpace
from edgeslim.search.strategies import RECOVERY_POINTS, greedy_seeds
from edgeslim.testing.models import TinyConvNet


def _seeds(accs: dict[float, float], sla: float, depth: dict[float, float] | None = None, fast_enough=None, **space):
    asked = []

    def probe(params):
        asked.append(params)
        return depth[params["block_ratio"]] if params.get("block_ratio") else accs[params["prune_ratio"]]

    space.setdefault("block_ratio", (0.0,))
    sp = SearchSpace(prune_ratio=(0.0, 0.3, 0.5, 0.7), allocation=("uniform",), lowrank=(False,), **space)
    return greedy_seeds(TinyConvNet(), sp, sla=sla, batches=[], run_proxy=probe, log=lambda s: None,
                        fast_enough=fast_enough), asked


def test_greedy_queues_anchor_then_most_aggressive_in_reach():
    seeds, asked = _seeds({0.3: 90.0, 0.5: 89.0 - RECOVERY_POINTS + 0.5, 0.7: 60.0}, sla=89.0)
    ratios = [(s["prune_ratio"], s["bits"]) for s in seeds]
    # int8 alone; in 4 bits the largest ratio whose probe clears the SLA; 4-bit alone; then in 4 bits:
    # best in reach, one step up (one step down is the first 4-bit one)
    assert ratios == [(0.0, "8"), (0.3, "4"), (0.0, "4"), (0.5, "4"), (0.7, "4")]
    ep = max(SearchSpace().finetune_epochs)
    assert [s["finetune_epochs"] for s in seeds] == [0, ep, 0, ep, ep]
    assert [a["prune_ratio"] for a in asked] == [0.3, 0.5, 0.7]  # stops at the first ratio out of reach
    assert all(a["finetune_epochs"] == 1 and a["bits"] == "8" for a in asked)  # the probe: brief fine-tune, int8
    first, last = "conv1", "fc"
    assert all(s[f"bits:{first}"] == s[f"bits:{last}"] == "8" for s in seeds)  # first / last layers stay 8-bit


def test_greedy_queues_the_two_largest_ratios_that_clear_the_sla_right_after_int8():
    seeds, _ = _seeds({0.3: 90.0, 0.5: 89.5, 0.7: 87.0}, sla=89.0)
    assert [(s["prune_ratio"], s["bits"]) for s in seeds] == [(0.0, "8"), (0.3, "4"), (0.5, "4"), (0.0, "4"), (0.7, "4")]


def test_greedy_without_reach_keeps_only_the_anchor():
    seeds, asked = _seeds({0.3: 10.0, 0.5: 10.0, 0.7: 10.0}, sla=89.0)
    assert [s["prune_ratio"] for s in seeds] == [0.0, 0.0]  # int8 alone and 4-bit alone
    assert len(asked) == 1


def test_greedy_seeds_in_int8_when_the_space_has_no_4_bits():
    seeds, _ = _seeds({0.3: 90.0, 0.5: 10.0, 0.7: 10.0}, sla=89.0, bits=("float", 8))
    assert [(s["prune_ratio"], s["bits"]) for s in seeds] == [(0.0, "8"), (0.3, "8"), (0.5, "8")]


def test_greedy_probe_without_finetuning_when_the_space_has_none():
    seeds, asked = _seeds({0.3: 85.0, 0.5: 70.0, 0.7: 10.0}, sla=89.0, finetune_epochs=(0,))
    assert all(a["finetune_epochs"] == 0 for a in asked)
    assert [s["prune_ratio"] for s in seeds] == [0.0, 0.0, 0.3, 0.5]  # 85 is within 10 points without fine-tuning


def test_greedy_walks_depth_too_and_queues_the_deepest_cut_in_reach():
    seeds, asked = _seeds({0.3: 90.0, 0.5: 10.0, 0.7: 10.0}, sla=89.0, depth={0.5: 89.5, 1.0: 40.0},
                          block_ratio=(0.0, 0.5, 1.0))
    assert [a["block_ratio"] for a in asked if a.get("block_ratio")] == [0.5, 1.0]  # stops at the first out of reach
    assert all(a["prune_ratio"] == 0.0 for a in asked if a.get("block_ratio"))
    assert [(s["block_ratio"], s["prune_ratio"], s["bits"]) for s in seeds] == [
        (0.0, 0.0, "8"), (0.0, 0.3, "4"), (0.0, 0.0, "4"), (0.0, 0.5, "4"), (0.5, 0.0, "4")]
    assert seeds[-1]["finetune_epochs"] == max(SearchSpace().finetune_epochs)


def test_under_a_latency_limit_depth_seeds_come_first_from_timed_architectures():
    timed = []

    def fast_enough(params):
        timed.append(params["block_ratio"])
        return params["block_ratio"] >= 0.5

    seeds, asked = _seeds({0.3: 90.0, 0.5: 10.0, 0.7: 10.0}, sla=89.0, fast_enough=fast_enough,
                          block_ratio=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert timed == [0.25, 0.5]  # upwards until the first fast enough
    assert not any(a.get("block_ratio") for a in asked)  # no accuracy probes of depth
    ep = max(SearchSpace().finetune_epochs)
    assert [(s["block_ratio"], s["prune_ratio"], s["finetune_epochs"]) for s in seeds[:2]] == [(0.5, 0.0, ep), (0.75, 0.0, ep)]
    assert seeds[0]["bits"] == "4" and seeds[0]["bits:conv1"] == "8"
    assert [s["prune_ratio"] for s in seeds[2:]] == [0.0, 0.3, 0.0, 0.5]  # then the usual ones


def test_under_a_latency_limit_the_deepest_cut_adds_channel_pruning_when_depth_alone_is_too_slow():
    timed = []

    def fast_enough(params):
        timed.append((params["block_ratio"], params["prune_ratio"]))
        return params["block_ratio"] == 1.0 and params["prune_ratio"] >= 0.5

    seeds, _ = _seeds({0.3: 90.0, 0.5: 10.0, 0.7: 10.0}, sla=89.0, fast_enough=fast_enough,
                      block_ratio=(0.0, 0.5, 1.0))
    # depth alone upwards, then the deepest cut with prune ratios upwards until the first fast enough
    assert timed == [(0.5, 0.0), (1.0, 0.0), (1.0, 0.3), (1.0, 0.5)]
    ep = max(SearchSpace().finetune_epochs)
    assert [(s["block_ratio"], s["prune_ratio"], s["finetune_epochs"], s["bits"]) for s in seeds[:2]] == \
        [(1.0, 0.5, ep, "4"), (1.0, 0.7, ep, "4")]
    assert [(s["block_ratio"], s["prune_ratio"]) for s in seeds[2:]] == [(0.0, 0.0), (0.0, 0.3), (0.0, 0.0), (0.0, 0.5)]


def test_under_a_latency_limit_nothing_fast_enough_queues_no_depth_seed():
    seeds, _ = _seeds({0.3: 90.0, 0.5: 10.0, 0.7: 10.0}, sla=89.0, fast_enough=lambda p: False,
                      block_ratio=(0.0, 1.0))
    assert not any(s["block_ratio"] for s in seeds)


def test_a_probe_whose_fine_tuning_diverges_scores_zero(toy_model, toy_data):
    from edgeslim.search.strategies import first_batches, proxy_runner

    space = SearchSpace(prune_ratio=(0.0,), bits=(8,), block_ratio=(0.0,), lowrank=(False,), distill=(False,),
                        finetune_lr=1e12)
    run = proxy_runner(toy_model, space, data=toy_data, input_shape=(1, 8, 8), batches=first_batches(toy_data.val, 1),
                       layer_ratios_for=lambda p: None)
    assert run({"prune_ratio": 0.0, "bits": "8", "finetune_epochs": 1}) == 0.0


def test_greedy_past_its_deadline_probes_nothing_and_queues_the_anchors():
    import time

    asked = []
    sp = SearchSpace(prune_ratio=(0.0, 0.3, 0.5), allocation=("uniform",), lowrank=(False,), block_ratio=(0.0, 0.5))
    seeds = greedy_seeds(TinyConvNet(), sp, sla=89.0, batches=[], run_proxy=lambda p: asked.append(p) or 99.0,
                         log=lambda s: None, deadline=time.monotonic() - 1)
    assert asked == [] and [(s["prune_ratio"], s["bits"]) for s in seeds] == [(0.0, "8"), (0.0, "4")]
