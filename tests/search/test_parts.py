"""The parts of the search through their public interfaces: AutoConfig, the study state, the
constraints and the closest miss."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from edgeslim.core.config import Config
from edgeslim.core.errors import EdgeslimError, UsageError
from edgeslim.search.config import AutoConfig, auto_config
from edgeslim.search.constraints import AccuracySLA, LatencyLimit, constraints_of, excesses, feasible
from edgeslim.search.evaluator import Measurement
from edgeslim.search.store import StudyState


def test_auto_config_round_trips_through_yaml():
    cfg = AutoConfig(max_drop=1.0, objective="latency", max_latency="3x", trials=7, input_shape=(1, 28, 28),
                     space={"prune_ratio": [0.0, 0.5]}, budget="90s")
    back = Config.from_yaml(yaml.safe_dump(cfg.to_dict()))
    assert back == cfg and isinstance(back, AutoConfig)
    assert cfg.budget_s == 90 and cfg.drop == 1.0 and AutoConfig().drop == 0.5
    assert AutoConfig(min_accuracy=80).drop is None


@pytest.mark.parametrize("kw, match", [
    ({"objective": "speed"}, "objective"), ({"max_drop": 1, "min_accuracy": 2}, "not both"),
    ({"max_drop": -1}, "max_drop must be >= 0"), ({"trials": 0}, "trials must be >= 1"),
    ({"budget": "soon"}, "cannot read budget"), ({"max_latency": "fast"}, "latency limit"),
    ({"threads": 0}, "threads must be a positive integer"), ({"prune_margin": 9, "epoch_prune_margin": 1}, "margins"),
])
def test_auto_config_refuses_bad_options(kw, match):
    with pytest.raises(UsageError, match=match):
        AutoConfig(**kw)


def test_an_unknown_auto_option_names_the_valid_ones():
    with pytest.raises(UsageError, match="unknown auto option 'max_dorp'") as e:
        auto_config(None, {"max_dorp": 1.0})
    assert "max_drop" in e.value.hint


def test_study_state_is_one_record_with_a_version():
    st = StudyState(sla=80.0, baseline={"val_accuracy": 81.0}, baseline_correct=None, objective="size", pareto=False,
                    space={"type": "search_space"}, block_order=("b1",), max_latency="3x")
    d = st.to_dict()
    assert d["version"] == 1 and StudyState.from_dict(d) == st
    with pytest.raises(EdgeslimError, match="format version 0"):
        StudyState.from_dict({**d, "version": 0})


def m(score=90.0, margin=1.0, latency=2.0, ref=None):
    return Measurement(score, margin, 1000, latency, reference_latency_ms=ref)


def test_the_sla_judges_the_lower_bound():
    sla = AccuracySLA(88.5, confidence=0.9, max_drop=0.5)
    assert sla.excess(m(90.0, 1.0)) == pytest.approx(-0.5)  # 89.0 clears 88.5
    assert sla.excess(m(89.0, 1.0)) == pytest.approx(0.5)  # 88.0 does not
    assert sla.excess(Measurement(None, 0.0, 1, 1.0)) is None  # not measured: no verdict
    assert sla.precheck(lambda: pytest.fail("an SLA never measures an untrained architecture")) is None
    key, ok, note = sla.final({"accuracy": 90.6}, {"accuracy": 91.0})
    assert key == "test_within_sla" and ok and "within the SLA" in note
    assert not sla.final({"accuracy": 90.4}, {"accuracy": 91.0})[1]


def test_a_speedup_limit_is_checked_against_the_baseline_timed_alongside():
    lim = LatencyLimit("2x")
    assert lim.excess(m(latency=1.0, ref=3.0)) == pytest.approx(-0.5)  # 1.0 <= 3.0 / 2
    assert lim.excess(m(latency=2.0, ref=3.0)) == pytest.approx(0.5)
    assert LatencyLimit("0.5ms").excess(m(latency=0.4)) == pytest.approx(-0.1)
    calls = []

    def arch():
        calls.append(1)
        return m(latency=1.7, ref=3.0)

    check = lim.precheck(arch)
    assert calls and check.excess == pytest.approx(0.2) and check.stop  # 1.7 > 1.1 * 1.5: stops before training
    assert check.figures == {"latency_probe_ms": 1.7, "latency_limit_ms": 1.5}
    assert lim.precheck(lambda: m(latency=1.6, ref=3.0)).stop is None  # over, but within the slack: trained


def test_feasible_means_every_constraint_is_met():
    state = StudyState(sla=88.0, baseline={}, baseline_correct=None, objective="size", pareto=False, space={},
                       max_latency="1ms")
    cons = constraints_of(state)
    assert [c.name for c in cons] == ["accuracy_sla", "max_latency"]
    assert feasible(cons, m(90.0, 1.0, latency=0.9))
    assert not feasible(cons, m(90.0, 1.0, latency=1.1))  # accurate enough, too slow
    assert not feasible(cons, m(88.5, 1.0, latency=0.5))  # fast enough, not accurate enough
    assert excesses(cons, m(90.0, 1.0, latency=1.1)) == pytest.approx({"accuracy_sla": -1.0, "max_latency": 0.1})


def test_the_sampler_sees_each_excess_relative_to_its_limit():
    """A 0.03 ms miss of a 0.23 ms latency limit (13%) ranks behind a 3-point miss of a 92-point SLA
    (3.3%): the raw figures would have said the opposite, and TPE kept proposing the slow one."""
    from edgeslim.search.constraints import MemoryLimit
    from edgeslim.search.trial import TrialRecord, TrialRunner, constraint_values, read_record

    cons = [AccuracySLA(92.0), LatencyLimit("3x"), MemoryLimit("8MB")]
    saved = {}

    class Trial:
        user_attrs = saved

        def set_user_attr(self, k, v):
            saved[k] = v

        def set_constraint(self, k, v):
            saved.setdefault("native", {})[k] = v

    runner = TrialRunner.__new__(TrialRunner)
    runner.constraints = cons
    slow = TrialRecord(figures={"latency_limit_ms": 0.23})
    runner.record(Trial(), slow, max_latency=0.03)
    assert slow.excess["max_latency"] == 0.03 and slow.relative["max_latency"] == pytest.approx(0.03 / 0.23, abs=1e-6)
    values = constraint_values([c.name for c in cons])
    assert values(Trial())[1] == pytest.approx(0.1304, abs=1e-4) and read_record(Trial()).relative == slow.relative
    inaccurate = TrialRecord(figures={"latency_limit_ms": 0.23})
    runner.record(Trial(), inaccurate, accuracy_sla=3.0)
    assert values(Trial())[0] == pytest.approx(3.0 / 92.0, abs=1e-6) and values(Trial())[2] == 0.0
    assert sum(values(Trial())) < slow.relative["max_latency"]  # the sampler ranks it nearer feasibility
    assert cons[2].scale({}) == float(cons[2].bytes) and cons[0].scale({}) == 92.0


def test_the_closest_miss_ranks_by_the_sla_among_trials_within_the_other_limits():
    from edgeslim.search.outputs import closest_miss

    cons = [AccuracySLA(90.0), LatencyLimit("1ms")]

    def row(n, acc, lat):
        mm = m(acc, 0.0, latency=lat)
        return {"trial": n, "state": "complete", "policy": f"p{n}", "val_accuracy": acc, "val_margin": 0.0,
                "size_bytes": 10, "latency_ms": lat, "latency_limit_ms": 1.0, "excess": excesses(cons, mm)}

    rows = [row(0, 89.9, 2.0), row(1, 85.0, 0.5), row(2, 88.0, 0.9)]

    class Study:  # the closest miss reads the winner's recipe from its trial record
        trials = [type("T", (), {"user_attrs": {"record": {"recipe": {"steps": [n]}}}})() for n in range(3)]

    c = closest_miss(Study(), rows, cons)
    assert c["trial"] == 2 and c["points_under_sla"] == pytest.approx(2.0)  # trial 0 is nearer, but too slow
    assert c["recipe"] == {"steps": [2]}
    assert dataclasses.replace(cons[0], sla=80.0).excess(m(85.0, 0.0)) < 0


def test_a_memory_limit_is_one_more_constraint():
    from edgeslim.search.config import memory_spec
    from edgeslim.search.constraints import MemoryLimit

    assert memory_spec("8MB") == 8_000_000 and memory_spec("1KiB") == 1024 and memory_spec(512) == 512
    with pytest.raises(UsageError, match="memory limit"):
        memory_spec("lots")
    state = StudyState(sla=80.0, baseline={}, baseline_correct=None, objective="size", pareto=False, space={},
                       max_memory="1MB")
    cons = constraints_of(state)
    assert [c.name for c in cons] == ["accuracy_sla", "max_memory"]
    small, big = (dataclasses.replace(m(90.0, 1.0), peak_memory_bytes=b) for b in (900_000, 1_200_000))
    assert feasible(cons, small) and not feasible(cons, big)
    assert not feasible(cons, m(90.0, 1.0))  # memory not measured: no verdict, not feasible
    check = MemoryLimit("1MB").precheck(lambda: big)
    assert check.stop and check.excess == 200_000  # 1.2 MB > 1.1 x the limit: stopped before training
    with pytest.raises(UsageError, match="memory limit"):
        AutoConfig(max_memory="lots")


def test_peak_memory_is_measured_in_a_fresh_process(tmp_path):
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM is Linux's")
    from edgeslim.measure.memory import peak_memory
    from edgeslim.runtimes import export_onnx
    from edgeslim.testing.models import TinyConvNet

    export_onnx(TinyConvNet(), tmp_path / "m.onnx", input_shape=(1, 1, 8, 8))
    one = peak_memory(tmp_path / "m.onnx", (1, 1, 8, 8))
    many = peak_memory(tmp_path / "m.onnx", (256, 1, 8, 8))
    assert 0 < one["peak_memory_bytes"] < many["peak_memory_bytes"]  # a larger batch needs more activations
    assert one["runtime"].startswith("onnxruntime") and "VmHWM" in one["method"]


def test_the_space_keeps_the_formats_the_runtime_deploys():
    from edgeslim.search.setup import runtime_formats
    from edgeslim.search.space import SearchSpace

    said = []
    space = SearchSpace(bits=("float", 8, 4))
    assert runtime_formats(space, "onnxruntime", said.append).bits == ("float", 8, 4) and not said
    assert runtime_formats(space, "litert", said.append).bits == ("float", 8)
    assert said and "4-bit choice is dropped" in said[0]


def test_a_test_split_that_disagrees_is_said_in_plain_words():
    from types import SimpleNamespace

    from edgeslim.search.outputs import disagreement_text

    report = SimpleNamespace(metric="top1", result={"accuracy": 90.2}, baseline={"accuracy": 91.0},
                             details={"val_accuracy": 91.1, "sla": {"baseline_val_accuracy": 91.4, "max_drop": 0.5,
                                                                    "metric": "top1"}})
    text = disagreement_text(report)
    assert "test split disagrees" in text and "at most 0.5 points" in text
    assert "validation 91.10% vs baseline 91.40%, drop 0.30" in text and "drop 0.80 points" in text
    assert "--val-fraction" in text
