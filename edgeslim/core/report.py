"""The Report: one schema (report.json) for every command.

    {"command", "edgeslim_version", "model", "data",
     "baseline": FIGURES, "result": FIGURES,
     "ratios": {"size", "latency", "macs", "memory"},   # baseline / result
     "accuracy_drop": baseline.accuracy - result.accuracy,   # points
     "details": {...}, "machine": {"cpu", "threads", "runtime"}}
"""
from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path
from typing import Any

from .io import atomic_write_text, write_json

FIGURE_KEYS = (
    "params", "macs", "size_bytes", "latency_ms", "latency_p90_ms", "accuracy",
    "runtime", "threads", "batch", "input_shape", "artifact", "peak_memory_bytes",
)


def figures(**values: Any) -> dict[str, Any]:
    """A FIGURES dict with every key present (None where not measured)."""
    unknown = set(values) - set(FIGURE_KEYS)
    if unknown:
        raise KeyError(f"not a FIGURES key: {sorted(unknown)}")
    return {k: values.get(k) for k in FIGURE_KEYS}


def machine_info(threads: int | None = None, runtime: str | None = None) -> dict[str, Any]:
    """The machine figures were measured on; ``runtime``: the name and version of the runtime that
    measured them (the figures' own ``runtime``; ONNX Runtime's installed version by default)."""
    import importlib.metadata

    import torch

    if runtime is None:
        try:
            runtime = f"onnxruntime {importlib.metadata.version('onnxruntime')}"
        except importlib.metadata.PackageNotFoundError:
            runtime = None

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "runtime": runtime,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


@dataclasses.dataclass
class Report:
    command: str
    model: str | None = None
    data: str | None = None
    baseline: dict[str, Any] | None = None
    result: dict[str, Any] = dataclasses.field(default_factory=figures)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    machine: dict[str, Any] | None = None

    @property
    def ratios(self) -> dict[str, float | None]:
        b, r = self.baseline or {}, self.result or {}
        return {
            "size": _ratio(b.get("size_bytes"), r.get("size_bytes")),
            "latency": _ratio(b.get("latency_ms"), r.get("latency_ms")),
            "macs": _ratio(b.get("macs"), r.get("macs")),
            "memory": _ratio(b.get("peak_memory_bytes"), r.get("peak_memory_bytes")),
        }

    @property
    def accuracy_drop(self) -> float | None:
        b, r = (self.baseline or {}).get("accuracy"), (self.result or {}).get("accuracy")
        if b is None or r is None:
            return None
        return b - r

    def to_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "command": self.command,
            "edgeslim_version": __version__,
            "model": self.model,
            "data": self.data,
            "baseline": self.baseline,
            "result": self.result,
            "ratios": self.ratios,
            "accuracy_drop": self.accuracy_drop,
            "details": self.details,
            "machine": self.machine or machine_info((self.result or {}).get("threads"), (self.result or {}).get("runtime")),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Report":
        return cls(
            command=d["command"], model=d.get("model"), data=d.get("data"),
            baseline=d.get("baseline"), result=d.get("result") or figures(),
            details=d.get("details") or {}, machine=d.get("machine"),
        )

    # -- rendering ----------------------------------------------------------
    @property
    def metric(self) -> str:
        """The metric ``accuracy`` holds (details["metric"]["name"]; top1 when the details name none)."""
        m = self.details.get("metric") if isinstance(self.details, dict) else None
        return str(m.get("name") or "top1") if isinstance(m, dict) else "top1"

    def metric_label(self) -> str:
        """The table's row label of ``accuracy``: 'accuracy (top-1 %)', 'accuracy (top-5 %)', 'map (points)'."""
        name = self.metric
        return {"top1": "accuracy (top-1 %)", "top5": "accuracy (top-5 %)"}.get(name, f"{name} (points)")

    def table(self) -> str:
        """Baseline-versus-result table in Markdown."""
        rows = [
            ("params", "params", _fmt_int),
            ("MACs", "macs", _fmt_int),
            ("size (bytes)", "size_bytes", _fmt_int),
            ("latency median (ms)", "latency_ms", _fmt_float),
            ("latency p90 (ms)", "latency_p90_ms", _fmt_float),
            ("peak memory (bytes)", "peak_memory_bytes", _fmt_int),
            (self.metric_label(), "accuracy", _fmt_float),
        ]
        b, r = self.baseline, self.result or {}
        head = "| figure | baseline | result | ratio |\n|---|---:|---:|---:|" if b else "| figure | value |\n|---|---:|"
        lines = [head]
        ratios = self.ratios
        ratio_key = {"size_bytes": "size", "latency_ms": "latency", "macs": "macs", "peak_memory_bytes": "memory"}
        for label, key, fmt in rows:
            if b:
                rk = ratio_key.get(key)
                ratio = ratios.get(rk) if rk else None
                lines.append(f"| {label} | {fmt(b.get(key))} | {fmt(r.get(key))} | {_fmt_ratio(ratio)} |")
            else:
                lines.append(f"| {label} | {fmt(r.get(key))} |")
        return "\n".join(lines)

    def markdown(self) -> str:
        d = self.to_dict()
        r = self.result or {}
        out = [f"# edgeslim {self.command}", ""]
        out.append(f"- model: `{self.model}`")
        if self.data:
            out.append(f"- data: `{self.data}`")
        m = d["machine"]
        if r.get("latency_ms") is not None:
            out.append(
                f"- measured with {r.get('runtime') or m.get('runtime')}, threads {r.get('threads')}, "
                f"batch {r.get('batch')}, input {r.get('input_shape')} on {m.get('cpu')}"
            )
        if self.accuracy_drop is not None:
            what = "accuracy" if self.metric in ("top1", "top5") else self.metric
            out.append(f"- {what} drop: {self.accuracy_drop:.2f} points")
        out += ["", self.table(), ""]
        layers = self.details.get("layers")
        if isinstance(layers, list) and layers and isinstance(layers[0], dict):
            cols = list(layers[0].keys())
            out += ["## Per layer", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            for row in layers:
                out.append("| " + " | ".join(_cell(row.get(c)) for c in cols) + " |")
            out.append("")
        notes = self.details.get("notes")
        if notes:
            out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
        return "\n".join(out)

    def write(self, out_dir: str | os.PathLike) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "report.json", self.to_dict())
        atomic_write_text(out / "report.md", self.markdown())
        return out / "report.json"


def _fmt_int(v: Any) -> str:
    return "–" if v is None else f"{int(v):,}"


def _fmt_float(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"


def _fmt_ratio(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return "–" if v is None else str(v)
