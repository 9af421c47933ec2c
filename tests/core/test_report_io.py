import json

import pytest

from edgeslim.core.io import atomic_write_text, write_json
from edgeslim.core.report import FIGURE_KEYS, Report, figures


def test_report_schema_and_ratios(tmp_path):
    b = figures(params=100, macs=1000, size_bytes=400, latency_ms=2.0, accuracy=91.0, peak_memory_bytes=3000)
    r = figures(params=50, macs=250, size_bytes=100, latency_ms=0.5, accuracy=90.5, peak_memory_bytes=1000)
    rep = Report(command="quantize", model="lenet5", data="fashion-mnist", baseline=b, result=r,
                 details={"notes": ["hello"], "layers": [{"name": "conv1", "bits": 8}]})
    d = rep.to_dict()
    for k in ("command", "edgeslim_version", "model", "data", "baseline", "result", "ratios", "accuracy_drop",
              "details", "machine"):
        assert k in d
    assert set(d["result"]) == set(FIGURE_KEYS)
    assert d["ratios"] == {"size": 4.0, "latency": 4.0, "macs": 4.0, "memory": 3.0}
    assert d["accuracy_drop"] == pytest.approx(0.5)
    assert {"cpu", "threads", "runtime"} <= set(d["machine"])
    rep.write(tmp_path)
    again = json.loads((tmp_path / "report.json").read_text())
    assert again["ratios"]["size"] == 4.0
    md = (tmp_path / "report.md").read_text()
    assert "| size (bytes) | 400 | 100 | 4.00x |" in md and "| peak memory (bytes) | 3,000 | 1,000 | 3.00x |" in md and "conv1" in md and "hello" in md


def test_unknown_figure_key():
    with pytest.raises(KeyError):
        figures(speed=1)


def test_accuracy_null_without_labels():
    rep = Report(command="profile", baseline=figures(accuracy=None), result=figures(accuracy=None))
    assert rep.accuracy_drop is None


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "a.json"
    write_json(p, {"v": 1})
    with pytest.raises(TypeError):
        write_json(p, {"v": object()})
    assert json.loads(p.read_text()) == {"v": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    atomic_write_text(p, "x")
    assert p.read_text() == "x"


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    p = tmp_path / "b.txt"
    atomic_write_text(p, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == 0o666 & ~mask
