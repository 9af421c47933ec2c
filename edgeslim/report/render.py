"""Rendering of a Report: Markdown and self-contained HTML, and the Pareto plot of a search.

The Markdown starts with ``Report.markdown()`` (baseline-versus-result table, per-layer table,
notes) and adds what a search has: the SLA, the winner's policy, the plot and the trial table.
The HTML holds the same content with the plot embedded (base64), so it can be mailed around.
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from ..core.io import atomic_write_text, save_png


def _size(v) -> str:
    if v is None:
        return "–"
    return f"{v / 1e6:.2f} MB" if v >= 1e6 else f"{v / 1e3:.1f} kB"


def _num(v, fmt="{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated for (cost: lower is better, accuracy: higher is better)."""
    front = []
    for i, (c, a) in enumerate(points):
        if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i):
            front.append(i)
    return front


def pareto_plot(rows: list[dict], path: str | os.PathLike, *, sla: float | None = None, best: int | None = None) -> Path:
    """Accuracy against latency and against size for every measured trial; the feasible Pareto
    front is drawn as a line, the winner circled, the SLA as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.get("val_accuracy") is not None and r.get("size_bytes") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for ax, key, label in ((axes[0], "latency_ms", "ONNX Runtime latency (ms, median)"),
                           (axes[1], "size_bytes", "artifact size (kB)")):
        scale = 1e-3 if key == "size_bytes" else 1.0
        inf = [r for r in done if not r.get("feasible")]
        fea = [r for r in done if r.get("feasible")]
        if inf:
            ax.scatter([r[key] * scale for r in inf], [r["val_accuracy"] for r in inf], c="#bbbbbb", s=22,
                       label="infeasible", zorder=2)
        if fea:
            ax.scatter([r[key] * scale for r in fea], [r["val_accuracy"] for r in fea], c="#1f77b4", s=26,
                       label="feasible", zorder=3)
            idx = pareto_front([(r[key], r["val_accuracy"]) for r in fea])
            front = sorted((fea[i][key] * scale, fea[i]["val_accuracy"]) for i in idx)
            ax.plot([p[0] for p in front], [p[1] for p in front], "-o", c="#d62728", ms=5, lw=1.5,
                    label="feasible front", zorder=4)
        if best is not None:
            b = [r for r in done if r["trial"] == best]
            if b:
                ax.scatter([b[0][key] * scale], [b[0]["val_accuracy"]], s=160, facecolors="none", edgecolors="k",
                           linewidths=1.5, label=f"winner (trial {best})", zorder=5)
        if sla is not None:
            ax.axhline(sla, ls="--", c="#2ca02c", lw=1, label=f"SLA {sla:.2f}%")
        ax.set_xlabel(label)
        ax.set_ylabel("validation top-1 (%)")
        ax.grid(alpha=0.3)
    if done:
        accs = [r["val_accuracy"] for r in done] + ([sla] if sla is not None else [])
        lo = max(min(accs) - 1, (sla - 10) if sla is not None else min(accs) - 1)
        for ax in axes:
            ax.set_ylim(lo, max(accs) + 0.5)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("edgeslim auto: every measured trial")
    fig.tight_layout()
    return save_png(fig, path)


def _metric(sla: dict) -> str:
    """The SLA's metric as the report names it: 'top-1' (the default), else its name."""
    name = sla.get("metric") or "top1"
    return {"top1": "top-1", "top5": "top-5"}.get(name, name)


def _unit(sla: dict) -> str:
    return "%" if (sla.get("metric") or "top1") in ("top1", "top5") else ""


def _bound_text(sla: dict) -> str:
    text = sla.get("rule")  # the search words its own feasibility rule (report sits below search)
    return f", {text}" if text else ""


def search_markdown(report) -> str:
    """Extra sections for a search report (empty for other reports)."""
    d = report.details
    out = []
    sla = d.get("sla") or {}
    if sla:
        out += ["## SLA and search", "",
                f"- SLA: validation {_metric(sla)} >= {sla.get('min_val_accuracy', 0):.2f}{_unit(sla)} "
                f"(baseline {sla.get('baseline_val_accuracy', 0):.2f}{_unit(sla)} on the validation split)"
                + _bound_text(sla),
                f"- objective: {d.get('objective')}; strategy: {d.get('strategy')}; budget {d.get('budget')}, "
                f"{d.get('search_seconds')} s; storage {d.get('storage')}",
                "- search figures come from the validation split; the table above is the test split, measured "
                "again for baseline and winner side by side", ""]
    if d.get("policy_text"):
        out += [f"**Winner:** trial {d.get('best_trial')}: {d['policy_text']} "
                f"(validation {d.get('val_accuracy', 0):.2f}{_unit(sla)}). Replay with "
                f"`edgeslim compress MODEL --recipe winner.yaml --data D --out DIR`.", ""]
    if d.get("pareto_plot"):
        out += [f"![accuracy vs latency and size]({d['pareto_plot']})", ""]
    trials = d.get("trials") or []
    if trials:
        out += ["## Trials", "", f"| trial | state | origin | policy | val {_metric(sla)} | lower bound | size | latency (ms) | "
                "MACs | feasible | why |", "|---:|---|---|---|---:|---:|---:|---:|---:|---|---|"]
        for r in trials:
            lb = (r["val_accuracy"] - r["val_margin"] if r.get("val_accuracy") is not None
                  and r.get("val_margin") is not None else None)
            out.append(f"| {r['trial']} | {r['state']} | {r.get('origin') or ''} | {r.get('policy') or ''} | "
                       f"{_num(r.get('val_accuracy'))} | {_num(lb)} | {_size(r.get('size_bytes'))} | "
                       f"{_num(r.get('latency_ms'), '{:.3f}')} | {_num(r.get('macs'), '{:,.0f}')} | "
                       f"{'yes' if r.get('feasible') else ('' if r.get('feasible') is None else 'no')} | "
                       f"{_why(r)} |")
        out.append("")
    return "\n".join(out)


def _why(row: dict) -> str:
    """Why a trial was not measured to the end: diverged, unfinished, stopped early, failed."""
    text = row.get("reason") or row.get("error") or ""
    tag = "diverged: " if row.get("diverged") else "unfinished: " if row.get("unfinished") else ""
    return (tag + text).replace("|", "/")[:160]


def write_markdown(report, path: str | os.PathLike) -> Path:
    text = report.markdown().rstrip() + "\n\n" + search_markdown(report)
    return atomic_write_text(path, text.rstrip() + "\n")


def _md_table_to_html(md: str) -> str:
    lines = [l for l in md.strip().splitlines() if l.startswith("|")]
    if len(lines) < 2:
        return ""
    cells = lambda l: [c.strip() for c in l.strip().strip("|").split("|")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(l)) + "</tr>" for l in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;"
        "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
        "img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}")


def write_html(report, path: str | os.PathLike) -> Path:
    """A self-contained HTML page: comparison table, per-layer policy, Pareto plot, trials, notes."""
    path = Path(path)
    d = report.to_dict()
    det = report.details
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgeslim {html.escape(report.command)}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>edgeslim {html.escape(report.command)}</h1>",
             f"<p>model <code>{html.escape(str(report.model))}</code>, data <code>{html.escape(str(report.data))}</code>; "
             f"measured with {html.escape(str(d['machine'].get('runtime')))}, {report.result.get('threads')} threads, "
             f"batch {report.result.get('batch')} on {html.escape(str(d['machine'].get('cpu')))}</p>",
             "<h2>Baseline versus result</h2>",
             f"<p>accuracy on the {html.escape(str(det.get('split') or 'evaluation'))} split</p>",
             _md_table_to_html(report.table())]
    if det.get("sla"):
        s = det["sla"]
        parts.append(f"<p>SLA: validation {html.escape(_metric(s))} &ge; {s.get('min_val_accuracy', 0):.2f}{_unit(s)} "
                     f"(baseline {s.get('baseline_val_accuracy', 0):.2f}{_unit(s)}){html.escape(_bound_text(s))}. Objective: {html.escape(str(det.get('objective')))}; "
                     f"strategy {html.escape(str(det.get('strategy')))}.</p>")
    if det.get("policy_text"):
        parts.append(f"<p><b>Winner</b>: trial {det.get('best_trial')}: {html.escape(det['policy_text'])}. "
                     f"Replay: <code>edgeslim compress MODEL --recipe winner.yaml --data D --out DIR</code></p>")
    png = det.get("pareto_plot")
    if png and (path.parent / png).is_file():
        b64 = base64.b64encode((path.parent / png).read_bytes()).decode()
        parts += ["<h2>Pareto plot</h2>", f"<img alt='accuracy vs latency and size' src='data:image/png;base64,{b64}'>"]
    layers = det.get("layers")
    if isinstance(layers, list) and layers and isinstance(layers[0], dict):
        cols = list(layers[0].keys())
        parts.append("<h2>Per-layer policy</h2><table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols)
                     + "</tr></thead><tbody>")
        for r in layers:
            parts.append("<tr>" + "".join(f"<td>{html.escape('–' if r.get(c) is None else str(r.get(c)))}</td>"
                                          for c in cols) + "</tr>")
        parts.append("</tbody></table>")
    sm = search_markdown(report)
    if "## Trials" in sm:
        parts += ["<h2>Trials</h2>", _md_table_to_html(sm.split("## Trials", 1)[1])]
    notes = det.get("notes") or []
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(str(n))}</li>" for n in notes) + "</ul>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))
