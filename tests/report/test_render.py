"""Report rendering: the Pareto front, the plot, Markdown and self-contained HTML."""
from __future__ import annotations

from edgeslim.core.report import Report, figures
from edgeslim.report import pareto_front, pareto_plot, search_markdown, write_html, write_markdown

ROWS = [
    {"trial": 0, "state": "complete", "origin": "greedy", "policy": "int8", "val_accuracy": 91.0, "size_bytes": 70_000,
     "latency_ms": 0.50, "macs": 40e6, "feasible": True},
    {"trial": 1, "state": "complete", "origin": "search", "policy": "prune 0.5 · int8", "val_accuracy": 90.6,
     "size_bytes": 25_000, "latency_ms": 0.30, "macs": 12e6, "feasible": True},
    {"trial": 2, "state": "complete", "origin": "search", "policy": "prune 0.7 · int8", "val_accuracy": 88.0,
     "size_bytes": 12_000, "latency_ms": 0.20, "macs": 5e6, "feasible": False},
    {"trial": 3, "state": "complete", "origin": "search", "policy": "prune 0.3 · fp32", "val_accuracy": 90.5,
     "size_bytes": 150_000, "latency_ms": 0.90, "macs": 25e6, "feasible": True},  # dominated by trial 0
    {"trial": 4, "state": "pruned", "origin": "search", "policy": "prune 0.7", "val_accuracy": None,
     "size_bytes": None, "latency_ms": None, "macs": None, "feasible": None},
]


def test_pareto_front_keeps_only_non_dominated_points():
    pts = [(r["size_bytes"], r["val_accuracy"]) for r in ROWS[:4]]
    assert sorted(pareto_front(pts)) == [0, 1, 2]
    assert pareto_front([(1, 90.0), (1, 90.0)]) == [0, 1]  # ties dominate nobody


def _report() -> Report:
    b = figures(params=1000, macs=40e6, size_bytes=280_000, latency_ms=1.0, accuracy=91.5, threads=2, batch=1)
    r = figures(params=300, macs=12e6, size_bytes=25_000, latency_ms=0.3, accuracy=91.1, threads=2, batch=1)
    return Report(command="auto", model="resnet20", data="fashion-mnist", baseline=b, result=r,
                  details={"split": "test", "sla": {"min_val_accuracy": 90.5, "baseline_val_accuracy": 91.0},
                           "objective": "size", "strategy": "greedy + TPE", "trials": ROWS, "best_trial": 1,
                           "policy_text": "prune 0.5 · int8", "val_accuracy": 90.6,
                           "layers": [{"layer": "conv1", "out": 16, "out_after": 8, "weight_bits": 8}],
                           "notes": ["a note"]})


def test_plot_markdown_and_html(tmp_path):
    rep = _report()
    png = pareto_plot(ROWS, tmp_path / "pareto.png", sla=90.5, best=1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rep.details["pareto_plot"] = png.name
    md = write_markdown(rep, tmp_path / "report.md").read_text()
    assert "| size (bytes) | 280,000 | 25,000 | 11.20x |" in md
    assert "![accuracy vs latency and size](pareto.png)" in md and "| 4 | pruned |" in md
    html = write_html(rep, tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "<h2>Per-layer policy</h2>" in html
    assert "prune 0.5 · int8" in html and "<li>a note</li>" in html


def test_search_sections_are_empty_for_other_reports():
    assert search_markdown(Report(command="prune")) == ""
