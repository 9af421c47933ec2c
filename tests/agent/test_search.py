"""The search through the agent: the Evaluator times candidates (and the reference) there, and the
config keeps the agent's URL and token file, never the token."""
import dataclasses
import json
from pathlib import Path

import pytest

from edgeslim.core.errors import UsageError
from edgeslim.search.config import AutoConfig
from edgeslim.search.evaluator import Evaluator, Measurement


def test_the_evaluator_times_candidates_and_the_reference_on_the_agent(agent, onnx_file):
    ev = Evaluator(None, (64,), threads=1, latency_runs=5, agent=agent)
    lat, ref = ev.time(onnx_file)
    assert lat > 0 and ref is None
    lat, ref = dataclasses.replace(ev, reference=onnx_file).time(onnx_file)
    assert lat > 0 and ref > 0


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is measured on Linux")
def test_a_measurement_says_it_was_taken_on_the_agent(agent, onnx_file):
    m = Evaluator(None, (64,), threads=1, latency_runs=3, agent=agent, memory=True).architecture(onnx_file)
    assert m.timed_on == agent.url and m.latency_ms > 0 and m.peak_memory_bytes > 0
    assert Measurement.from_dict(m.to_dict()) == m
    assert Measurement.from_dict({k: v for k, v in m.to_dict().items() if k != "timed_on"}).timed_on is None
    local = Evaluator(None, (64,), threads=1, latency_runs=3).architecture(onnx_file)
    assert local.timed_on is None


def test_the_config_keeps_the_url_and_the_token_file_not_the_token(tmp_path):
    token = tmp_path / "token"
    token.write_text("the-secret-token-value\n")
    cfg = AutoConfig(agent="http://127.0.0.1:8765/", agent_token_file=str(token))
    assert cfg.agent == "http://127.0.0.1:8765"
    assert "the-secret-token-value" not in json.dumps(cfg.to_dict())
    assert AutoConfig.from_dict(cfg.to_dict()) == cfg
    client = cfg.agent_client()
    assert client.url == cfg.agent and client._token == "the-secret-token-value"
    assert AutoConfig().agent_client() is None


@pytest.mark.parametrize("options, says", [
    ({"agent": "http://127.0.0.1:8765"}, "agent needs agent_token_file"),
    ({"agent_token_file": "t"}, "agent_token_file is given without agent"),
    ({"agent": "127.0.0.1:8765", "agent_token_file": "t"}, "must start with http://"),
])
def test_bad_agent_options_are_usage_errors(options, says):
    with pytest.raises(UsageError, match=says):
        AutoConfig(**options)


def test_an_unreadable_token_file_is_a_usage_error(tmp_path):
    cfg = AutoConfig(agent="http://127.0.0.1:8765", agent_token_file=str(tmp_path / "none"))
    with pytest.raises(UsageError, match="does not exist"):
        cfg.agent_client()


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is measured on Linux")
def test_a_reports_side_by_side_figures_come_from_the_agent(agent, tmp_path):
    """The writer's final comparison (every command's report, auto's too) times both files and
    measures their memory on the agent, and the report's machine is the agent's."""
    from edgeslim.output import Compressed, OutputOptions, write_result
    from edgeslim.testing.models import TinyConvNet

    model = TinyConvNet().eval()
    opts = OutputOptions(command="test", runs=3, warmup=1, threads=1, agent=agent)
    report = write_result(tmp_path, model, Compressed(model, model, False, [], []), opts, data=None,
                          input_shape=(1, 8, 8))
    for fig in (report.baseline, report.result):
        assert fig["runtime"].endswith(f"on agent {agent.url}") and fig["latency_ms"] > 0
        assert fig["peak_memory_bytes"] > 0
    assert report.to_dict()["machine"]["agent"] == agent.url
