"""The agent process on loopback: a good artifact timed, every refusal with its status and a JSON
reason, and a good request still served after each refusal."""
import http.client
import json
import threading
from pathlib import Path

import pytest

from edgeslim.agent.wire import CONTENT_TYPE, Job
from edgeslim.core.errors import EdgeslimError

MAX_MB = 0.5  # the shared agent's --max-mb (conftest.py)


def still_serves(agent, onnx_file):
    res = agent.time(onnx_file, (1, 64), threads=1, warmup=1, runs=5)
    assert len(res["times_ms"]) == 5 and all(t > 0 for t in res["times_ms"])


def raw(url, method, route, *, body=b"", token=None, headers=None):
    """(status, JSON answer) of a hand-made request."""
    host, port = url[len("http://"):].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    h = {"Content-Type": CONTENT_TYPE, **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    try:
        conn.request(method, route, body=body if method == "POST" else None, headers=h)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def body_of(path: Path, **job) -> bytes:
    data = path.read_bytes()
    spec = {"runtime": "onnxruntime", "threads": 1, "warmup": 1, "runs": 3, "input_shape": (1, 64),
            "files": ((path.suffix, len(data)),), **job}
    return Job(**spec).header() + data


def test_a_good_onnx_artifact_is_timed(agent, onnx_file):
    res = agent.time(onnx_file, (1, 64), threads=1, warmup=2, runs=10)
    assert len(res["times_ms"]) == 10 and all(0 < t < 1000 for t in res["times_ms"])
    assert res["runtime"].startswith("onnxruntime ") and res["threads"] == 1 and res["input_shape"] == [1, 64]
    assert res["host"]["cpu"] and res["host"]["cores"] >= 1
    assert res["round_trip_ms"] >= sum(res["times_ms"])
    assert "peak_memory_bytes" not in res


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is measured on Linux")
def test_the_peak_memory_is_measured_on_the_agent_when_asked(agent, onnx_file):
    res = agent.time(onnx_file, (1, 64), threads=1, warmup=0, runs=1, memory=True)
    assert isinstance(res["peak_memory_bytes"], int) and res["peak_memory_bytes"] > 0
    assert "VmHWM" in res["memory_method"]


def test_info_names_the_runtimes_the_limit_and_the_machine(agent):
    info = agent.info()
    assert info["runtimes"]["onnxruntime"].startswith("onnxruntime ")
    assert "torch" not in info["runtimes"]  # it runs no file
    assert info["max_bytes"] == int(MAX_MB * 1e6) and info["machine"]["cpu"]


def test_no_token_and_a_wrong_token_are_401(live_agent, agent, onnx_file):
    url = live_agent[1]
    for token in (None, "not-the-token-of-this-agent"):
        status, answer = raw(url, "POST", "/time", body=body_of(onnx_file), token=token)
        assert status == 401 and "token" in answer["error"]
        still_serves(agent, onnx_file)
    assert raw(url, "GET", "/info")[0] == 401
    from edgeslim.agent import Agent

    with pytest.raises(EdgeslimError, match=r"\(401 Unauthorized\): missing or wrong token") as e:
        Agent(url, "x" * 20).time(onnx_file, (1, 64), runs=2)
    assert "--token-file" in e.value.hint
    still_serves(agent, onnx_file)


def test_an_artifact_over_the_limit_is_413_before_its_body_is_read(live_agent, agent, tmp_path, onnx_file):
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * 600_000)
    with pytest.raises(EdgeslimError, match=r"413 .*0\.60 MB; this agent takes at most 0\.5 MB") as e:
        agent.time(big, (1, 64), runs=2)
    assert "--max-mb" in e.value.hint
    still_serves(agent, onnx_file)
    # a client that sends the body without waiting for 100 Continue still reads the refusal
    status, answer = raw(live_agent[1], "POST", "/time", body=body_of(big), token=agent._token)
    assert status == 413 and "at most" in answer["error"]
    still_serves(agent, onnx_file)


def test_an_unknown_runtime_is_400_naming_the_valid_ones(agent, onnx_file):
    says = r"400 Bad Request\): unknown runtime 'tvm'; the agent times: .*onnxruntime"
    with pytest.raises(EdgeslimError, match=says):
        agent.time(onnx_file, (1, 64), runtime="tvm", runs=2)
    still_serves(agent, onnx_file)


def test_a_file_that_does_not_load_is_422_with_the_runtimes_reason(agent, tmp_path, onnx_file):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"this is not a model" * 50)
    with pytest.raises(EdgeslimError, match=r"422 .*does not load in onnxruntime .*(INVALID_PROTOBUF|parsing)") as e:
        agent.time(bad, (1, 64), runs=2)
    assert "\n" not in str(e.value) and "edgeslim-agent-" not in str(e.value)  # one line, no private path
    still_serves(agent, onnx_file)
    with pytest.raises(EdgeslimError, match=r"422 .*does not run on input \[1, 3, 8, 8\]"):
        agent.time(onnx_file, (1, 3, 8, 8), runs=2)
    still_serves(agent, onnx_file)


def test_an_onnx_file_naming_external_data_is_refused(agent, tmp_path, onnx_file):
    import onnx
    from onnx.external_data_helper import set_external_data

    m = onnx.load(str(onnx_file))
    w = m.graph.initializer[0]
    set_external_data(w, location="../../../etc/hostname", offset=0, length=64)
    w.ClearField("raw_data")
    w.data_location = onnx.TensorProto.EXTERNAL
    evil = tmp_path / "evil.onnx"
    evil.write_bytes(m.SerializeToString())
    with pytest.raises(EdgeslimError, match="422 .*external data"):
        agent.time(evil, (1, 64), runs=2)
    still_serves(agent, onnx_file)


@pytest.mark.parametrize("body, status, says", [
    (b'{"version": 1, "runtime": "onnxruntime"', 400, "one JSON header line"),
    (b"not json\n", 400, "one line of JSON"),
    (b'{"version": 9}\n', 400, "version 9"),
    (None, 400, "lists"),  # lengths that do not add up: built below
    (Job("onnxruntime", 0, 1, 3, (1, 64), ((".onnx", 0),)).header(), 400, "'threads' must be an integer"),
    (Job("onnxruntime", 1, 1, 3, (1, 64), ((".tflite", 0),)).header(), 400, "files .onnx in that order"),
])
def test_a_malformed_request_is_400(live_agent, agent, onnx_file, body, status, says):
    if body is None:
        body = body_of(onnx_file)[:-10]
    got, answer = raw(live_agent[1], "POST", "/time", body=body, token=agent._token)
    assert got == status and says in answer["error"]
    still_serves(agent, onnx_file)


def test_unknown_routes_and_methods_answer_json(live_agent, agent, onnx_file):
    url, token = live_agent[1], agent._token
    assert raw(url, "GET", "/nothing", token=token)[0] == 404
    assert raw(url, "GET", "/time", token=token)[0] == 405
    status, answer = raw(url, "DELETE", "/time", token=token)
    assert status == 501 and answer["error"]
    status, answer = raw(url, "POST", "/time", token=token, headers={"Content-Type": "text/plain"})
    assert status == 400 and CONTENT_TYPE in answer["error"]
    still_serves(agent, onnx_file)


def test_timings_wait_for_each_other(agent, tmp_path, make_onnx):
    """Three requests at once: they are timed one after another (the later ones wait for the lock)."""
    path = make_onnx(tmp_path / "wide.onnx", n=256, batch=64)
    barrier, results, errors = threading.Barrier(3), [], []

    def one():
        barrier.wait()
        try:
            results.append(agent.time(path, (64, 256), threads=1, warmup=2, runs=300))  # long enough to overlap
        except EdgeslimError as e:
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(results) == 3
    shortest = min(sum(r["times_ms"]) for r in results)
    assert max(r["wait_ms"] for r in results) > 0.5 * shortest


def test_an_openvino_ir_travels_as_its_two_files(agent, live_agent, onnx_file, tmp_path):
    ov = pytest.importorskip("openvino")
    if "openvino" not in agent.info()["runtimes"]:
        pytest.skip("the agent has no OpenVINO")
    xml = tmp_path / "model.xml"
    ov.save_model(ov.convert_model(str(onnx_file)), str(xml), compress_to_fp16=False)
    res = agent.time(xml, (1, 64), threads=1, warmup=1, runs=5)
    assert res["runtime"].startswith("openvino ") and len(res["times_ms"]) == 5
    data = xml.read_bytes()
    alone = Job("openvino", 1, 1, 3, (1, 64), ((".xml", len(data)),)).header() + data
    status, answer = raw(live_agent[1], "POST", "/time", body=alone, token=agent._token)
    assert status == 400 and ".xml, .bin" in answer["error"]
    still_serves(agent, onnx_file)


def test_a_killed_agents_private_folder_is_removed_by_the_next_one(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import tempfile

    from edgeslim.agent.server import _remove_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone, kept = tmp_path / f"edgeslim-agent-{dead.stdout.strip()}-abc", tmp_path / f"edgeslim-agent-{os.getpid()}-x"
    for d in (gone, kept, tmp_path / "edgeslim-agent-other"):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "artifact.onnx").write_bytes(b"x")
    _remove_stale()
    assert not gone.exists() and kept.exists() and (tmp_path / "edgeslim-agent-other").exists()
