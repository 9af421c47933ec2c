"""bench / profile with an agent: each file goes to the agent in bench's shuffled order and rounds,
its figures say where they were timed, and what the agent cannot time is refused before any timing."""
from pathlib import Path

import pytest
from torch import nn

from edgeslim.core.errors import UsageError
from edgeslim.measure import bench
from edgeslim.measure.profile import profile


class FakeAgent:
    """Answers like edgeslim.agent.Agent.time, recording each call (no process, no network)."""

    url = "http://device:8765"

    def __init__(self):
        self.calls = []

    def time(self, path, input_shape, *, threads, warmup, runs, seed=0, **kw):
        self.calls.append((Path(path).name, tuple(input_shape), threads, warmup, runs, seed))
        ms = 1.0 if Path(path).name == "a.onnx" else 3.0
        return {"times_ms": [ms] * runs, "runtime": "onnxruntime 9.9", "threads": threads,
                "host": {"cpu": "device CPU", "cores": 4}}


@pytest.fixture
def files(tmp_path):
    for name in ("a.onnx", "b.onnx"):
        (tmp_path / name).write_bytes(b"not read here")
    return tmp_path / "a.onnx", tmp_path / "b.onnx"


def test_every_file_goes_to_the_agent_in_shuffled_rounds(files):
    fake = FakeAgent()
    a, b = bench(list(files), (1, 1, 8, 8), threads=3, warmup=2, runs=4, rounds=3, agent=fake)
    assert len(fake.calls) == 6 and {c[0] for c in fake.calls} == {"a.onnx", "b.onnx"}
    assert all(c[1:5] == ((1, 1, 8, 8), 3, 2, 4) for c in fake.calls)
    assert sorted(c[5] for c in fake.calls) == [0, 0, 1, 1, 2, 2]  # one seed per round
    assert (a["median_ms"], b["median_ms"]) == (1.0, 3.0) and a["per_round_ms"] == [1.0] * 3
    assert a["runtime"] == "onnxruntime 9.9 on agent http://device:8765" and a["runs"] == 12
    assert a["timed_on"] == {"agent": fake.url, "machine": {"cpu": "device CPU", "cores": 4}}


def test_a_module_is_refused_before_anything_is_sent(files):
    fake = FakeAgent()
    with pytest.raises(UsageError, match="the device agent times artifact files, not a PyTorch module"):
        bench([files[0], nn.Linear(4, 4)], (1, 4), agent=fake)
    with pytest.raises(UsageError, match="no such file"):
        bench([files[0], files[0].with_name("missing.onnx")], (1, 4), agent=fake)
    assert fake.calls == []


def test_profile_with_runtime_torch_is_refused_with_an_agent():
    with pytest.raises(UsageError, match="runtime torch runs the PyTorch module here"):
        profile(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 4), runtime="torch", agent=FakeAgent())


def test_profile_of_a_file_takes_the_agents_latency(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "a.onnx"))
    fake = FakeAgent()
    fig = profile(tmp_path / "a.onnx", (1, 4), runs=5, warmup=1, agent=fake)
    assert fig["latency_ms"] == 1.0 and fig["runtime"].endswith("on agent http://device:8765")
    assert fig["timed_on"]["agent"] == fake.url and fig["params"] == 8 and len(fake.calls) == 1
