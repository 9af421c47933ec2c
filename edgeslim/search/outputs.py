"""What the search leaves: the best-so-far on disk (DIR/.work/best), the trial table, the winner's
or the closest miss's recipe, and the final side-by-side comparison with its rendering."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from ..core.io import atomic_write_text, write_json
from ..output import Compressed
from .recipe import recipe_dict, recipe_yaml
from .scoring import named, value_text, what
from .trial import TrialRecord, read_record


def size_text(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


class BestTracker:
    """Keeps the best feasible trial of this process on disk at every moment, in DIR/.work/best (search
    state, not the result: DIR itself changes only when the search finishes, all at once)."""

    def __init__(self, out: Path, objective: str, checkpoint: Callable[[Path, Compressed], None],
                 artifact: str = "model.onnx", metric: str = "top1"):
        self.dir = out / ".work" / "best"
        self.artifact = self.dir / artifact  # the best trial's deployable file (the runtime's format)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.objective, self.checkpoint, self.metric = objective, checkpoint, metric
        self.best_trial: int | None = None
        self.best: dict | None = None  # the best trial's Measurement, as a dict
        self.result: Compressed | None = None
        bj = self.dir / "best.json"
        if bj.is_file():  # resumed: the artifact of the previous best is already there
            try:
                b = json.loads(bj.read_text())
                self.best_trial, self.best = b["trial"], b["measurement"]
            except (OSError, ValueError, KeyError):
                pass

    def key(self, m: dict):
        return (m["size_bytes"] if self.objective == "size" else m["latency_ms"], -m["score"])

    def has_best(self) -> bool:
        return self.best is not None

    def summary(self) -> str:
        if self.best is None:
            return "none feasible yet"
        return (f"trial {self.best_trial} {size_text(self.best['size_bytes'])} {self.best['latency_ms']:.3f} ms "
                f"val {named(self.metric, self.best['score'])}")

    def offer(self, number: int, rec: TrialRecord, res: Compressed, steps, artifact: Path, seed: int) -> None:
        m = rec.measurement
        if not rec.feasible or (self.best is not None and self.key(m) >= self.key(self.best)):
            return
        self.best_trial, self.best, self.result = number, dict(m), res
        from ..runtimes import copy_artifact

        copy_artifact(artifact, self.artifact)
        atomic_write_text(self.dir / "winner.yaml", winner_yaml(steps, seed, number, m, rec.policy, self.metric))
        self.checkpoint(self.dir, res)
        write_json(self.dir / "best.json", {"trial": number, "policy": rec.policy, "measurement": m,
                                            "recipe": recipe_dict(steps, seed=seed)})


def winner_yaml(steps, seed, number, m: dict, policy_text, metric: str = "top1") -> str:
    head = (f"# edgeslim auto winner: trial {number}, {policy_text}\n"
            f"# validation {what(metric)} {value_text(metric, m['score'])}, {m['size_bytes']} bytes, "
            f"{m['latency_ms']:.3f} ms\n"
            f"# replay: edgeslim compress MODEL --recipe winner.yaml --data D --out DIR\n")
    return head + recipe_yaml(steps, seed=seed)


def checkpoint_writer(spec, build, data, shape) -> Callable[[Path, Compressed], None]:
    """DIR/checkpoint holds the float winner; replaced as a whole (built aside, then renamed)."""
    def write(out: Path, res: Compressed) -> None:
        final = out / "checkpoint"
        if res.quantized or not spec:
            shutil.rmtree(final, ignore_errors=True)
            return
        from .. import models

        tmp, old = out / ".checkpoint.new", out / ".checkpoint.old"
        shutil.rmtree(tmp, ignore_errors=True)
        models.save(res.model, tmp, spec=spec, input_shape=shape, build=build,
                    classes=list(data.meta.classes) if data.meta.labelled else None, extra={"command": "auto"})
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    return write


def trial_rows(study) -> list[dict]:
    """The trial table of the report (one row per trial, whatever its state)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        r = read_record(t)
        m = r.measurement or {}
        rows.append({"trial": t.number, "state": t.state.name.lower(), "origin": r.origin, "policy": r.policy,
                     "val_accuracy": m.get("score"), "val_margin": m.get("margin"),
                     "float_val_sample": r.figures.get("float_val_sample"), "size_bytes": m.get("size_bytes"),
                     "latency_ms": m.get("latency_ms"), "latency_probe_ms": r.figures.get("latency_probe_ms"),
                     "latency_limit_ms": r.figures.get("latency_limit_ms"), "macs": m.get("macs"),
                     "peak_memory_bytes": m.get("peak_memory_bytes"),
                     "memory_limit_bytes": r.figures.get("memory_limit_bytes"),
                     "feasible": r.feasible, "seconds": r.seconds, "error": r.error, "reason": r.reason,
                     "diverged": r.diverged, "unfinished": r.unfinished, "worker": r.worker,
                     "excess": r.excess, "relative": r.relative, "cached_from": r.cached_from})
    return rows


def closest_miss(study, rows: list[dict], constraints) -> dict | None:
    """When nothing is feasible: the measured trial nearest the first constraint (the SLA) among
    those that satisfy all the others, so that a user sees what the SLA costs and can replay it."""
    first, others = constraints[0].name, [c.name for c in constraints[1:]]
    cands = [r for r in rows if r["state"] == "complete" and r["val_accuracy"] is not None
             and all(r["excess"].get(n, 0.0) <= 0 for n in others)]
    if not cands:
        return None
    r = min(cands, key=lambda r: (r["excess"][first], r["size_bytes"] or 0))
    return {**{k: r[k] for k in ("trial", "policy", "val_accuracy", "val_margin", "size_bytes", "latency_ms",
                                 "latency_limit_ms")},
            "points_under_sla": round(r["excess"][first], 3), "recipe": read_record(study.trials[r["trial"]]).recipe,
            "metric": getattr(constraints[0], "metric", "top1")}


def closest_text(c: dict) -> str:
    metric = c.get("metric") or "top1"
    margin = (f" (lower bound {value_text(metric, c['val_accuracy'] - c['val_margin'])})" if c.get("val_margin")
              else "")
    return (f"closest: trial {c['trial']}, {c['policy']}: validation {named(metric, c['val_accuracy'])}{margin}, "
            f"{c['points_under_sla']:.2f} points under the SLA, {c['size_bytes']:,} bytes, {c['latency_ms']:.3f} ms")


def closest_yaml(c: dict) -> str:
    import yaml

    return (f"# edgeslim auto: no policy met the SLA; {closest_text(c)}\n"
            "# replay: edgeslim compress MODEL --recipe closest.yaml --data D --out DIR\n"
            + yaml.safe_dump(c["recipe"], sort_keys=False))


def render(report, rows, sla: float, out: Path, best, log) -> None:
    """report.json, report.md, report.html and the Pareto plot into ``out``."""
    from ..report import pareto_plot, write_html, write_markdown

    try:
        png = pareto_plot(rows, out / "pareto.png", sla=sla, best=best)
        report.details["pareto_plot"] = png.name
    except Exception as e:  # noqa: BLE001 - a plot must not lose the search
        log(f"could not draw the Pareto plot: {e}")
    report.write(out)
    write_markdown(report, out / "report.md")
    write_html(report, out / "report.html")


def counts_note(rows: list[dict], n_feasible: int) -> str:
    counts = {s: sum(1 for r in rows if r["state"] == s) for s in ("complete", "pruned", "fail", "waiting")}
    counts.update({k: sum(1 for r in rows if r[k]) for k in ("diverged", "unfinished")})
    return (f"{len(rows)} trials: {counts['complete']} measured, "
            f"{counts['pruned'] - counts['diverged'] - counts['unfinished']} stopped early by the pruner, "
            f"{counts['diverged']} diverged (infeasible), {counts['unfinished']} unfinished when the time ran out, "
            f"{counts['fail']} failed" + (f", {counts['waiting']} queued but not run" if counts["waiting"] else "")
            + f"; {n_feasible} met the SLA on the validation split")


@dataclasses.dataclass
class Final:
    """The final comparison: the winner (or the baseline) against the baseline on the test split."""

    model: Any
    data: Any
    shape: tuple[int, ...]
    constraints: list
    write: Callable[..., Any]  # output.write_result with the run's options bound: (original, result, stage, **kw)
    log: Callable[[str], None]

    def keep_baseline(self, stage: Path, out: Path, study, rows, details: dict):
        from ..output import Compressed as C

        sla = self.constraints[0].sla
        details["notes"].insert(0, f"no policy met the SLA ({_verdict(self.constraints)}): the baseline is kept")
        closest = closest_miss(study, rows, self.constraints)
        if closest is not None:
            details["closest"] = closest
            atomic_write_text(stage / "closest.yaml", closest_yaml(closest))
            details["notes"].insert(1, closest_text(closest) + f"; its recipe: {out}/closest.yaml")
        report = self.write(self.model, C(self.model, self.model, False, [], []), stage, extra_details=details)
        render(report, rows, sla, stage, None, self.log)
        self.log(f"no policy met the SLA ({_verdict(self.constraints)}): kept the baseline in {out}")
        if closest is not None:
            self.log(closest_text(closest) + f"; replay it with: edgeslim compress MODEL --recipe {out}/closest.yaml")
        return report

    def winner(self, stage: Path, res: Compressed, best_artifact: Path, rows, number: int, details: dict):
        shutil.copyfile(best_artifact.parent / "winner.yaml", stage / "winner.yaml")
        report = self.write(self.model, res, stage, extra_details=details, artifact=best_artifact)
        for c in self.constraints:
            verdict = c.final(report.result, report.baseline or {})
            if verdict is not None:
                key, ok, note = verdict
                report.details[key] = ok
                report.details["notes"].append(note)
        if report.details.get("test_within_sla") is False:
            text = disagreement_text(report)
            report.details["test_disagrees"] = text
            report.details["notes"].insert(0, text)
        render(report, rows, self.constraints[0].sla, stage, number, self.log)
        return report


def disagreement_text(report) -> str:
    """Plain words for a winner that met the SLA on the validation split the search saw but not on the
    test split it never saw, with the figures of both splits side by side."""
    d = report.details
    sla, metric = d.get("sla", {}), d.get("sla", {}).get("metric") or report.metric or "top1"
    val, base_val = d.get("val_accuracy"), sla.get("baseline_val_accuracy")
    test, base_test = report.result.get("accuracy"), (report.baseline or {}).get("accuracy")
    drop = f"drop {base_test - test:.2f} points" if test is not None and base_test is not None else "below the floor"
    rule = f"at most {sla['max_drop']:g} points" if sla.get("max_drop") is not None else \
        f"at least {value_text(metric, sla.get('min_accuracy'))}"
    vdrop = f", drop {base_val - val:.2f}" if val is not None and base_val is not None else ""
    return (f"the test split disagrees with the validation split: the winner met the SLA ({rule}) on the validation "
            f"split the search used (validation {value_text(metric, val)} vs baseline {value_text(metric, base_val)}"
            f"{vdrop}) but not on the test split it never saw (test {value_text(metric, test)} vs baseline "
            f"{value_text(metric, base_test)}, {drop}); the validation figures carry sampling error: a larger "
            "validation split (--val-fraction) or a higher --confidence makes this rarer")


def _verdict(constraints) -> str:
    from .constraints import verdict_text

    return verdict_text(constraints)
