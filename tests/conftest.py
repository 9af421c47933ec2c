import os
import subprocess
from pathlib import Path

import pytest
import torch

from edgeslim.testing import cli_command

# The suite runs tiny models: one intra-op thread avoids thread-pool synchronisation, which on a busy
# shared machine costs more than the second core gives. Latency checks set their threads explicitly.
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cli(tmp_path):
    """Run the `edgeslim` command in this process, in ``tmp_path`` (edgeslim.cli.run_captured);
    ``cli_process`` runs the real console script in a fresh interpreter."""
    from edgeslim.cli import run_captured as run_cli

    def run(*args, check_rc=None, env=None, timeout=None):
        p = run_cli(*args, cwd=tmp_path, env=env)
        if check_rc is not None:
            assert p.returncode == check_rc, f"rc={p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}"
        return p
    return run


@pytest.fixture
def cli_process(tmp_path):
    """Run the real console script in a fresh interpreter; returns CompletedProcess (text)."""
    def run(*args, check_rc=None, env=None, timeout=600):
        e = dict(os.environ, **(env or {}))
        p = subprocess.run(cli_command() + [str(a) for a in args], capture_output=True, text=True, cwd=tmp_path,
                           env=e, timeout=timeout)
        if check_rc is not None:
            assert p.returncode == check_rc, f"rc={p.returncode}\nstdout:{p.stdout}\nstderr:{p.stderr}"
        return p
    return run


