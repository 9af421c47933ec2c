"""What ``nas`` leaves in DIR: the winner's file, checkpoint/ (a plain ``nasnet``), baseline file,
nas.yaml (the space, the architecture and how it was found), the report with the time split, the
lookup table's error on the finalists, every scored subnet, and search.png (the searched subnets'
score against latency, their Pareto front, the finalists as measured, the winner)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..core.outdir import OutDir
from .candidate import Candidate


def nas_yaml(run, arch: dict, winner: dict, stats: dict) -> str:
    import yaml

    cfg = run.cfg
    body = {"space": run.space.to_dict(), "arch": arch, "net": run.space.net(arch),
            "supernet": {"rule": stats["rule"], "epochs": stats["epochs_done"]},
            "finetune": {"epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr, "distill": cfg.distill},
            "strategy": cfg.strategy, "seed": cfg.seed}
    head = (f"# edgeslim nas winner: val {winner['val_score']:.2f} before fine-tuning, {winner['measured_ms']:.3f} ms "
            f"measured ({cfg.runtime}, {cfg.threads} thread(s))\n"
            "# the network: edgeslim.models.create('nasnet', num_classes=K, in_channels=C, **net); its trained "
            "weights: checkpoint/\n")
    return head + yaml.safe_dump(body, sort_keys=False)


def history_rows(history: list[Candidate]) -> list[dict]:
    return [{"arch": c.arch, "val_score": c.score, "latency_ms": c.latency_ms, "params": c.params,
             "feasible": c.feasible, "excess": c.excess, "strategy": c.strategy} for c in history]


def plot(history: list[Candidate], finals: list[dict], limit_ms: float | None, path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.io import save_png
    from ..report.render import pareto_front

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for ok, colour, label in ((False, "#bbbbbb", "outside the limits"), (True, "#1f77b4", "within the limits")):
        pts = [(c.latency_ms, c.score) for c in history if c.feasible == ok]
        if pts:
            ax.scatter(*zip(*pts), s=14, c=colour, label=f"searched, {label} ({len(pts)})", zorder=2)
    pts = [(c.latency_ms, c.score) for c in history]
    if pts:
        front = sorted(pts[i] for i in pareto_front(pts))
        ax.plot(*zip(*front), "-", c="#d62728", lw=1.2, label="Pareto front (predicted latency)", zorder=3)
    if finals:
        ax.scatter([f["measured_ms"] for f in finals], [f["val_score"] for f in finals], marker="D", s=30, c="#2ca02c",
                   label="finalists, measured whole", zorder=4)
        w = finals[0]
        ax.scatter([w["measured_ms"]], [w["val_score"]], s=160, facecolors="none", edgecolors="k", lw=1.5,
                   label="winner (before fine-tuning)", zorder=5)
    if limit_ms is not None:
        ax.axvline(limit_ms, ls="--", c="#2ca02c", lw=1, label=f"latency limit {limit_ms:.3f} ms")
    ax.set_xlabel("latency (ms): lookup table; finalists measured")
    ax.set_ylabel(f"validation {metric} on the supernet")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("edgeslim nas: every scored subnet")
    fig.tight_layout()
    return save_png(fig, path)


def _details(run, limits, winner, finals, history, table, stats, ref, val_after: float) -> dict:
    from . import latency

    check = latency.check(table, [(f["arch"], f["measured_ms"]) for f in finals])
    return {
        "split": "test", "search_split": "val", "space": run.space.name, "space_size": run.space.size(),
        "converted_from": type(run.model).__name__ if run.converted else None, "strategy": run.cfg.strategy,
        "arch": winner["arch"], "net": run.space.net(winner["arch"]), "limits": dataclasses.asdict(limits),
        "limits_text": limits.text(run.metric.name), "reference": ref and {k: v for k, v in ref.items()
                                                                                  if k != "path"},
        "supernet": stats, "time_s": dict(run.timings, total=round(time.monotonic() - run.t0, 1)),
        "latency_table": {"entries": len(table), "runtime": run.cfg.runtime, "threads": run.cfg.threads,
                          "timed_on": run.cfg.agent,
                          "finalists": check["finalists"], "median_abs_error": check["median_abs_rel_error"]},
        "finalists": [{k: v for k, v in f.items() if k != "model"} for f in finals],
        "winner_val_before_finetune": winner["val_score"], "winner_val_after_finetune": round(val_after, 4),
        "search": {"scored": len(history), "feasible": sum(c.feasible for c in history),
                   "rows": history_rows(history)},
        "notes": [],
    }


def write_outputs(run, model, winner, finals, history, table, scorer, stats, ref, teacher, limits):
    from ..output import Compressed, OutputOptions, write_result
    from ..report import write_html, write_markdown
    from .engine import CARRIED, NasResult

    cfg, sp = run.cfg, run.space
    val_after = scorer.score(model, None)
    build = {"num_classes": scorer.net.num_classes, "in_channels": scorer.net.in_channels, **sp.net(winner["arch"])}
    opts = OutputOptions(command="nas", spec="nasnet", build=build, model_name=f"nas:{sp.name}", threads=cfg.threads,
                         runs=cfg.final_runs, runtime=cfg.runtime, metric=run.metric, keep_baseline=True,
                         layer_table=False, agent=run.agent)
    details = _details(run, limits, winner, finals, history, table, stats, ref, val_after)
    original = run.model if run.model is not None else teacher
    details["notes"].append("baseline: " + ("the given model" if run.model is not None else
                                            "the largest subnet of the supernet (no model was given)"))
    with OutDir(run.out, carry=CARRIED) as stage:
        report = write_result(stage, original, Compressed(model, model, False, [], []), opts, data=run.data,
                              input_shape=run.shape, extra_details=details,
                              extras={"nas.yaml": nas_yaml(run, winner["arch"], winner, stats).encode()})
        feasible = verdict(report, limits, val_after, run.metric.name)
        try:
            report.details["pareto_plot"] = plot(history, finals, limits.latency_ms, stage / "search.png",
                                                 run.metric.name).name
        except Exception as e:  # noqa: BLE001 - a plot must not lose the result
            report.details["notes"].append(f"could not draw the search plot: {e}")
        report.write(stage)
        write_markdown(report, stage / "report.md")
        write_html(report, stage / "report.html")
    run.log(f"winner: {winner['arch']} -> {run.out}/{opts.artifact}")
    return NasResult(model, report, winner["arch"], feasible, run.out, history)


def verdict(report, limits, val_after: float, metric: str) -> bool:
    """Every limit checked on the final figures: the deployed file's latency and size as the final
    comparison measured them, the fine-tuned validation score."""
    res, notes = report.result, report.details["notes"]
    checks = [("latency", limits.latency_ms, res.get("latency_ms"), lambda v, lim: v <= lim, "ms"),
              ("size", limits.size_bytes, res.get("size_bytes"), lambda v, lim: v <= lim, "bytes"),
              (f"val {metric}", limits.min_score, val_after, lambda v, lim: v >= lim, "points")]
    ok = True
    for name, lim, value, good, unit in checks:
        if lim is None or value is None:
            continue
        met = good(value, lim)
        ok &= met
        notes.append(f"{name}: {value:.4g} against the limit {lim:.4g} {unit}: {'met' if met else 'NOT met'}")
    report.details["feasible"] = ok
    return ok
