"""`edgeslim reparam` as the console script runs it (in process)."""
import json

import torch
from edgeslim.cli import run_captured as run_cli


def test_reparam_cli(tmp_path):
    out = tmp_path / "rp"
    p = run_cli("reparam", "edgeslim.testing.models:TinyResNet", "--input-shape", "1,1,8,8",
                "--runs", "3", "--warmup", "1", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert "folded 0 RepVGG block(s), 0 switch_to_deploy module(s), 5 Conv+BN pair(s)" in p.stdout
    rep = json.loads((out / "report.json").read_text())
    assert rep["command"] == "reparam" and rep["baseline"]["latency_ms"] and rep["result"]["latency_ms"]
    assert sum(f["fold"] == "conv_bn" for f in rep["details"]["folds"]) == 5
    assert rep["details"]["max_abs_diff_folded_vs_original"] < 1e-5
    assert (out / "model.onnx").is_file()
    import edgeslim.models as M

    model, _ = M.load(out, spec="edgeslim.testing.models:TinyResNet")  # the caller names a factory spec
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
