"""The client's failures: each one EdgeslimError line naming the agent and what happened."""
import signal
import socket
import threading
import time

import pytest

from edgeslim.agent import Agent
from edgeslim.core.errors import EdgeslimError, UsageError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line(e: BaseException) -> str:
    text = str(e)
    assert "\n" not in text and text
    return text


def test_nothing_listening_is_connection_refused(onnx_file):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EdgeslimError, match=f"cannot reach the agent at {url}: connection refused") as e:
        Agent(url, "t" * 20).time(onnx_file, (1, 64), runs=2)
    one_line(e.value)
    assert "edgeslim agent" in e.value.hint


def test_an_agent_that_never_answers_is_a_timeout():
    with socket.socket() as s:  # listens, never accepts: the connection waits in the backlog
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(EdgeslimError, match=f"the agent at {url} did not answer within 0.5s") as e:
            Agent(url, "t" * 20, timeout=0.5).info()
    one_line(e.value)


def test_an_agent_killed_mid_request_is_one_error_line(spawn_agent, make_onnx, tmp_path):
    proc, url = spawn_agent()
    agent = Agent.from_token_file(url, tmp_path / "token", timeout=60)
    path = make_onnx(tmp_path / "wide.onnx", n=256, batch=64)
    agent.time(path, (64, 256), threads=1, warmup=1, runs=2)  # the runtime is warm: the next one is timed at once
    killer = threading.Timer(1.0, proc.send_signal, (signal.SIGKILL,))
    killer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(EdgeslimError, match=f"the agent at {url} dropped the connection during the request "
                                                f"to time wide.onnx \\(it died or was stopped\\)") as e:
            agent.time(path, (64, 256), threads=1, warmup=0, runs=100_000)  # minutes, unless killed
    finally:
        killer.cancel()
    one_line(e.value)
    assert time.monotonic() - t0 < 30 and proc.wait(10) == -signal.SIGKILL
    with pytest.raises(EdgeslimError, match="connection refused"):  # and nothing answers there any more
        agent.info()


@pytest.mark.parametrize("url, says", [
    ("https://h:1", "must start with http://"),
    ("h:8765", "must start with http://"),
    ("http://h", "is not of the form http://HOST:PORT"),
    ("http://h:0", "is not of the form"),
    ("http://h:99999", "is not of the form"),
    ("http://h:1/time", "is not of the form"),
    ("http://u:p@h:1", "is not of the form"),
    ("http://:1", "is not of the form"),
])
def test_a_bad_url_is_a_usage_error(url, says):
    with pytest.raises(UsageError, match=says):
        Agent(url, "t" * 20)


def test_urls_are_normalized_and_the_token_never_shows():
    a = Agent("http://127.0.0.1:8765/", "secret-token-value-123")
    assert a.url == "http://127.0.0.1:8765" and (a.host, a.port) == ("127.0.0.1", 8765)
    assert "secret" not in repr(a)
    assert Agent("http://[::1]:9/", "t").url == "http://[::1]:9"


def test_files_are_checked_before_anything_is_sent(tmp_path):
    a = Agent(f"http://127.0.0.1:{free_port()}", "t" * 20)
    with pytest.raises(UsageError, match="does not exist"):
        a.time(tmp_path / "missing.onnx", (1, 64))
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(UsageError, match=r"m\.bin does not exist"):  # an IR without its weights
        a.time(tmp_path / "m.xml", (1, 64))
    (tmp_path / "m.weights").write_text("x")
    with pytest.raises(UsageError, match="no runtime takes .weights files"):
        a.time(tmp_path / "m.weights", (1, 64))
    (tmp_path / "m.onnx").write_text("x")
    with pytest.raises(UsageError, match=r"in openvino on the agent: its artifacts are \.xml \+ \.bin files"):
        a.time(tmp_path / "m.onnx", (1, 64), runtime="openvino")
