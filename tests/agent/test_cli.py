"""`edgeslim bench|profile|auto --agent URL --token-file F` end to end, and the usage errors."""
import json
import shutil
import socket

import pytest


def one_error_line(p, rc: int, says: str):
    assert p.returncode == rc, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and says in lines[0], p.stderr
    assert all(l.startswith("  hint: ") for l in lines[1:]) and "Traceback" not in p.stderr


def test_bench_times_every_file_on_the_agent(cli, live_agent, token_file, onnx_file, tmp_path):
    url = live_agent[1]
    a, b = shutil.copy(onnx_file, tmp_path / "a.onnx"), shutil.copy(onnx_file, tmp_path / "b.onnx")
    p = cli("bench", a, b, "--agent", url, "--token-file", token_file, "--runs", "5", "--warmup", "1",
            "--rounds", "2", "--threads", "1", "--json", check_rc=0)
    out = json.loads(p.stdout)
    assert [r["model"] for r in out["results"]] == [str(a), str(b)]
    assert all(r["runtime"].startswith("onnxruntime ") and r["runtime"].endswith(f" on agent {url}")
               and r["median_ms"] > 0 for r in out["results"])
    assert out["timed_on"]["agent"] == url and out["timed_on"]["machine"]["cpu"]
    p = cli("bench", a, "--agent", url + "/", "--token-file", token_file, "--runs", "3", "--warmup", "0", check_rc=0)
    assert f"timed on: agent {url} (" in p.stdout


def test_profile_takes_its_latency_from_the_agent(cli, live_agent, token_file, onnx_file):
    p = cli("profile", onnx_file, "--agent", live_agent[1], "--token-file", token_file, "--runs", "5", "--warmup",
            "1", "--json", check_rc=0)
    fig = json.loads(p.stdout)
    assert fig["runtime"].endswith(f"on agent {live_agent[1]}") and fig["latency_ms"] > 0
    assert fig["timed_on"]["agent"] == live_agent[1] and fig["params"] == 64 * 64


@pytest.mark.parametrize("args, says", [
    (["--agent", "http://127.0.0.1:9"], "--agent needs --token-file"),
    (["--token-file", "token"], "--token-file is given without --agent"),
    (["--agent", "ftp://127.0.0.1:9", "--token-file", "token"], "must start with http://"),
    (["--agent", "http://127.0.0.1", "--token-file", "token"], "is not of the form http://HOST:PORT"),
    (["--agent", "http://127.0.0.1:9/x", "--token-file", "token"], "is not of the form http://HOST:PORT"),
    (["--agent", "http://127.0.0.1:9", "--token-file", "missing"], "token file missing does not exist"),
])
@pytest.mark.parametrize("command", ["bench", "profile"])
def test_agent_usage_errors_exit_2_with_one_line(cli, tmp_path, onnx_file, command, args, says):
    (tmp_path / "token").write_text("a-token-of-twenty-chars\n")
    one_error_line(cli(command, onnx_file, *args), 2, says)


def test_an_unreachable_agent_is_one_error_line(cli, tmp_path, onnx_file, token_file):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = cli("bench", onnx_file, "--agent", f"http://127.0.0.1:{port}", "--token-file", token_file, "--runs", "2")
    one_error_line(p, 1, f"cannot reach the agent at http://127.0.0.1:{port}: connection refused")


def test_bench_refuses_pytorch_models_timed_in_torch_on_the_agent(cli, live_agent, token_file):
    p = cli("bench", "lenet5", "--runtime", "torch", "--agent", live_agent[1], "--token-file", token_file)
    one_error_line(p, 2, "the device agent times artifact files")


def test_auto_checks_the_agent_before_any_work(cli, tmp_path, token_file):
    base = ["auto", "lenet5", "--data", "synthetic:1,28,28:64", "--out", tmp_path / "run", "--budget", "1m"]
    one_error_line(cli(*base, "--agent", "http://127.0.0.1:9"), 2, "--agent needs --token-file")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = cli(*base, "--agent", f"http://127.0.0.1:{port}", "--token-file", token_file)
    one_error_line(p, 1, "connection refused")
    assert not (tmp_path / "run" / "report.json").exists()


@pytest.mark.parametrize("content, mode, says", [
    (None, 0o600, "does not exist"),
    ("", 0o600, "is empty"),
    ("a-token-of-twenty-chars", 0o644, "open to group or others"),
    ("short", 0o600, "at least 16"),
])
def test_the_agent_refuses_a_bad_token_file(cli, tmp_path, content, mode, says):
    f = tmp_path / "token"
    if content is not None:
        f.write_text(content)
        f.chmod(mode)
    one_error_line(cli("agent", "--port", "0", "--token-file", f), 2, says)


def test_the_agent_needs_a_token_file_and_a_valid_port(cli):
    assert cli("agent").returncode == 2
    one_error_line(cli("agent", "--port", "70000", "--token-file", "t"), 2, "--port")
