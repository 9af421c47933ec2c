"""AGP follows Zhu & Gupta's cubic formula; the prune-step fractions follow their schedules."""
import pytest

from edgeslim.pruning.schedule import AGPMasks, agp_sparsity, step_fractions


def test_agp_formula():
    s_i, s_f, t0, n, dt = 0.1, 0.9, 5, 4, 10
    for t in range(0, 70):
        got = agp_sparsity(t, final=s_f, initial=s_i, start=t0, n_events=n, frequency=dt)
        if t < t0:
            want = s_i
        elif t >= t0 + n * dt:
            want = s_f
        else:
            k = (t - t0) // dt  # the sparsity changes only at pruning events
            want = s_f + (s_i - s_f) * (1 - k * dt / (n * dt)) ** 3
        assert got == pytest.approx(want), t
    assert agp_sparsity(t0 + 2 * dt, final=0.8, initial=0.0, start=t0, n_events=4, frequency=dt) == \
        pytest.approx(0.8 * (1 - 0.5 ** 3))


def test_agp_is_monotone_and_front_loaded():
    vals = [agp_sparsity(t, final=0.9, n_events=10, frequency=1) for t in range(12)]
    assert vals == sorted(vals) and vals[-1] == 0.9
    steps = [b - a for a, b in zip(vals, vals[1:11])]
    assert steps == sorted(steps, reverse=True)  # big steps first


def test_step_fractions():
    assert step_fractions("oneshot", 5) == [1.0]
    assert step_fractions("iterative", 4) == [0.25, 0.5, 0.75, 1.0]
    agp = step_fractions("agp", 3)
    assert agp[-1] == 1.0 and agp[0] == pytest.approx(1 - (2 / 3) ** 3)


def test_agp_mask_callback_calls_update_on_events():
    seen = []
    cb = AGPMasks(lambda s: seen.append(s), lambda: None, final=0.5, total_steps=100, n_events=5)
    for t in range(100):
        cb(t, None)
    assert seen[-1] == 0.5 and seen == sorted(seen) and len(seen) == 6
