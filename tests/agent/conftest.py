"""A real `edgeslim agent` process on loopback, tiny ONNX files and a token for the agent tests."""
import os
import secrets
import select
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeslim.testing import cli_command

MAX_MB = 0.5  # the shared agent's size limit: the tiny files fit, a 600 kB one does not


def tiny_onnx(path: Path, n: int = 64, batch: int = 1) -> Path:
    """x (batch, n) -> relu(x @ W): a valid ONNX file built without torch, in milliseconds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_token(path: Path, token: str | None = None) -> Path:
    path.write_text((token or secrets.token_urlsafe(24)) + "\n")
    os.chmod(path, 0o600)
    return path


def start_agent(folder: Path, token_file: Path, *extra: str, wait: float = 120.0):
    """(process, URL) of a fresh agent; its stderr goes to folder/agent.log."""
    log = open(folder / "agent.log", "w")
    proc = subprocess.Popen(cli_command() + ["agent", "--port", "0", "--token-file", str(token_file), *extra],
                            stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "TMPDIR": str(folder)})
    log.close()
    ready = select.select([proc.stdout], [], [], wait)[0]
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("agent listening on http://127.0.0.1:"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the agent did not start: {line!r}\n{(folder / 'agent.log').read_text()}")
    return proc, line.split()[-1]


def stop_agent(proc) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


@pytest.fixture(scope="session")
def make_onnx():
    """``make_onnx(path, n=64, batch=1)``: a tiny valid ONNX file (x @ W, relu)."""
    return tiny_onnx


@pytest.fixture
def spawn_agent(tmp_path):
    """``spawn_agent(*extra_args)``: (process, URL) of one more agent (its own token: tmp_path/token),
    stopped at the end of the test."""
    procs = []

    def spawn(*extra):
        proc, url = start_agent(tmp_path, write_token(tmp_path / "token"), *extra)
        procs.append(proc)
        return proc, url

    yield spawn
    for proc in procs:
        stop_agent(proc)


@pytest.fixture(scope="session")
def agent_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("agent")


@pytest.fixture(scope="session")
def token_file(agent_dir):
    return write_token(agent_dir / "token")


@pytest.fixture(scope="session")
def onnx_file(agent_dir):
    return tiny_onnx(agent_dir / "tiny.onnx")


@pytest.fixture(scope="session")
def live_agent(agent_dir, token_file):
    """A real agent process on loopback, shared by the agent tests: (process, URL)."""
    proc, url = start_agent(agent_dir, token_file, "--max-mb", str(MAX_MB))
    yield proc, url
    stop_agent(proc)


@pytest.fixture(scope="session")
def agent(live_agent, token_file):
    from edgeslim.agent import Agent

    return Agent.from_token_file(live_agent[1], token_file, timeout=60)
