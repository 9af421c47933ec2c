"""Architecture search through the agent: the lookup table and the finalists are timed there, the
report's machine is the agent's, and the config keeps the token file, never the token."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from edgeslim.nas import NasConfig, nas

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "nas"))
from nas_toys import TINY_RES, toy_bundle  # noqa: E402


def test_nas_times_its_table_and_finalists_on_the_agent(live_agent, token_file, tmp_path):
    _, url = live_agent
    lines = []
    res = nas(toy_bundle(), space=TINY_RES, supernet_epochs=1, supernet_batches=2, finetune_epochs=0, evaluations=3,
              finalists=1, calib_batches=1, val_batches=1, latency_runs=3, final_runs=3, budget="10m",
              max_latency="100ms", agent=url, agent_token_file=str(token_file), out=tmp_path / "out",
              log=lines.append)
    table = json.loads((tmp_path / "out" / ".work" / "latency.json").read_text())
    assert table["timed_on"] == res.report.details["latency_table"]["timed_on"] == url.rstrip("/")
    assert res.report.machine["agent"] == url.rstrip("/")  # the final comparison was timed there too
    cfg = NasConfig(agent=url, agent_token_file=str(token_file))
    assert Path(token_file).read_text().strip() not in json.dumps(cfg.to_dict())
