"""Every scored subnet as one trial of an Optuna study in ``DIR/study.db`` (the store ``auto`` uses):
a strategy that proposes an architecture already scored gets the stored answer, and a killed search
resumes without scoring anything twice. The study's name carries a fingerprint of what a score
depends on (the space, the supernet's training, the scoring and the limits): a run that changes any
of them starts a study of its own beside the old one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .candidate import Candidate
from .space import Space

STUDY_PREFIX = "edgeslim-nas-"


def _key(arch: dict) -> str:
    return json.dumps(arch, sort_keys=True)


class NasStore:
    def __init__(self, path: Path, space: Space, fingerprint: dict):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[:12]
        self.name = STUDY_PREFIX + digest
        self.study = optuna.create_study(storage=f"sqlite:///{path}", study_name=self.name, load_if_exists=True,
                                         direction="maximize")
        self.seen: dict[str, Candidate] = {}
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            if "arch" in a:
                self.seen[_key(a["arch"])] = Candidate(a["arch"], a["score"], a["latency_ms"], a["params"],
                                                       a["feasible"], a["excess"], a["strategy"], cached=True)
        self.resumed = len(self.seen)

    def lookup(self, arch: dict) -> Candidate | None:
        return self.seen.get(_key(arch))

    def record(self, c: Candidate) -> None:
        import optuna
        from optuna.distributions import CategoricalDistribution

        dists = {n: CategoricalDistribution(list(ch)) for n, ch in self.space.decisions()}
        attrs = {"arch": c.arch, "score": c.score, "latency_ms": c.latency_ms, "params": c.params,
                 "feasible": c.feasible, "excess": c.excess, "strategy": c.strategy}
        self.study.add_trial(optuna.trial.create_trial(params=dict(c.arch), distributions=dists, value=c.score,
                                                       user_attrs=attrs))
        self.seen[_key(c.arch)] = c

    def history(self) -> list[Candidate]:
        return list(self.seen.values())
