"""Where a search lives: an Optuna study in SQLite (default) or PostgreSQL, with its state (SLA,
baseline figures, objective, space, scans, timings, seed) as ONE typed record, so that a resumed
run and every worker read the same search."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
import time
from typing import Any

from ..core.errors import EdgeslimError, UsageError

STUDY_NAME = "edgeslim-auto"
STATE_KEY = "edgeslim_state"  # the study's user attribute holding the StudyState record
STATE_VERSION = 1
SETUP_WAIT_S = 60.0  # a worker that joins a study still being set up waits this long for its state
PG_CONNECT_TIMEOUT = 10  # seconds: an unreachable PostgreSQL host fails fast instead of after the OS's TCP timeout


@dataclasses.dataclass(frozen=True, kw_only=True)
class StudyState:
    """Everything a run must agree on with the run that set the study up."""

    sla: float  # minimum validation score, in the metric's points
    baseline: dict  # the baseline's validation figures: val_accuracy, size_bytes, latency_ms
    baseline_correct: str | None  # the baseline's per-sample values, packed (confidence.pack); None: the metric has none
    objective: str
    pareto: bool
    space: dict
    block_order: tuple[str, ...] = ()
    sensitivity: dict | None = None
    max_drop: float | None = None
    min_accuracy: float | None = None
    max_latency: str | None = None
    max_memory: str | None = None
    confidence: float = 0.0
    val_batches: int | None = None
    seed: int = 0
    trial_estimate_s: float = 0.0
    timing: dict | None = None  # export_s, val_s, latency_s, render_s of the baseline's measurement
    metric: str = "top1"  # the metric's NAME (a function's module:qualname): compared on resume, never imported
    runtime: str = "onnxruntime"
    prune_margin: float = 3.0
    epoch_prune_margin: float = 6.0

    def to_dict(self) -> dict:
        return {"version": STATE_VERSION, **dataclasses.asdict(self), "block_order": list(self.block_order)}

    @classmethod
    def from_dict(cls, d: dict) -> "StudyState":
        if d.get("version") != STATE_VERSION:
            raise EdgeslimError(f"the study's state has format version {d.get('version')!r}; this edgeslim reads "
                                f"{STATE_VERSION}", hint="start a fresh search with another --out / --storage")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["block_order"] = tuple(kw.get("block_order") or ())
        return cls(**kw)


def redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_storage(url: str, *, heartbeat: bool):
    """An Optuna RDBStorage for ``url``; any failure to reach it is one EdgeslimError (exit 1)."""
    import optuna

    given = url
    url, engine_kw = _engine_args(url)
    try:
        if heartbeat:  # workers: a trial whose process died is failed after the grace period and retried
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kw, heartbeat_interval=30, grace_period=90,
                                              **_retry_callback())
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kw)
    except Exception as e:  # noqa: BLE001 - sqlalchemy / driver errors of every kind
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "check the URL, that the server is up and reachable, and the credentials"
        if isinstance(e, ImportError) or "No module named" in msg or "Failed to import DB" in msg:
            msg = "no database driver for this URL"
            hint = "install the database driver (PostgreSQL: pip install psycopg2-binary, or psycopg[binary])"
        raise EdgeslimError(f"cannot open the study storage {redact(given)}: {redact(msg)}", hint=hint) from None


def _retry_callback() -> dict:
    import warnings

    from optuna import storages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
            return dict(heartbeat_stale_trial_callback=storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        return dict(failed_trial_callback=storages.RetryFailedTrialCallback(max_retry=1))


def _engine_args(url: str) -> tuple[str, dict | None]:
    """PostgreSQL: when the URL names no driver, use whichever is installed (psycopg2, else psycopg 3;
    SQLAlchemy's default differs between versions), and give up on an unreachable host after
    PG_CONNECT_TIMEOUT seconds unless the URL sets its own connect_timeout."""
    scheme, rest = url.split("://", 1) if "://" in url else (url, "")
    if not scheme.lower().startswith("postgres"):
        return url, None
    if scheme.lower() in ("postgresql", "postgres"):
        driver = next((d for d in ("psycopg2", "psycopg") if importlib.util.find_spec(d) is not None), None)
        url = f"postgresql+{driver}://{rest}" if driver else f"postgresql://{rest}"
    if "connect_timeout" in url:
        return url, None
    return url, {"connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT}}


class Store:
    """One study in one storage: whether it exists, creating it with its state, loading it (a worker
    waits for a study still being set up), the measurements of finished trials, and recovery of
    trials a killed process left running."""

    def __init__(self, url: str, *, shared: bool):
        import optuna

        self.url, self.shared = url, shared
        self.storage = open_storage(url, heartbeat=shared)
        self.exists = STUDY_NAME in optuna.get_all_study_names(self.storage)
        self.study = None

    def check_mode(self, *, resume: bool, worker: bool) -> None:
        """A worker needs a study to join; a plain run must not overwrite one."""
        import optuna

        if worker and not self.exists:
            raise UsageError(f"there is no study to join in {redact(self.url)}",
                             hint="start the search once without --worker (it creates the study), then the workers")
        if self.exists and not (resume or worker):
            n = len(optuna.load_study(study_name=STUDY_NAME, storage=self.storage).trials)
            raise UsageError(f"{redact(self.url)} already holds a search ({n} trials)",
                             hint="pass --resume to continue it, --worker to join it, or choose another --out / --storage")

    def create(self, state: StudyState, sampler, pruner):
        import optuna

        directions = ["maximize", "minimize", "minimize"] if state.pareto else ["minimize"]
        try:
            self.study = optuna.create_study(study_name=STUDY_NAME, storage=self.storage, directions=directions,
                                             sampler=sampler, pruner=pruner)
        except optuna.exceptions.DuplicatedStudyError:  # another run created it while this one set up
            raise UsageError(f"{redact(self.url)} already holds a search (started while this run set up)",
                             hint="pass --worker to join it, or choose another --out / --storage") from None
        self.study.set_user_attr(STATE_KEY, state.to_dict())  # one record: a joining worker waits for it
        return self.study

    def load(self, *, wait: bool) -> StudyState:
        import optuna

        self.study = optuna.load_study(study_name=STUDY_NAME, storage=self.storage)
        attrs, waited = self.study.user_attrs, time.monotonic()
        while wait and STATE_KEY not in attrs and time.monotonic() - waited < SETUP_WAIT_S:
            time.sleep(0.5)  # joined between create_study and the state written right after it
            attrs = self.study.user_attrs
        if STATE_KEY not in attrs:
            raise EdgeslimError("the study in the storage was not finished setting up (no SLA recorded)",
                                hint="start a fresh search with another --out / --storage")
        return StudyState.from_dict(attrs[STATE_KEY])

    def finished(self) -> int:
        """Trials that count against ``trials``: measured or stopped early, not cut off by the clock."""
        from .trial import read_record

        return sum(1 for t in self.study.get_trials(deepcopy=False)
                   if t.state.name in ("COMPLETE", "PRUNED") and not read_record(t).unfinished)

    def measured(self) -> dict[str, Any]:
        """Recipe hash -> TrialRecord of every measured trial (identical recipes are measured once)."""
        from optuna.trial import TrialState

        from .trial import read_record

        recs = (read_record(t) for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return {r.hash: r for r in recs if r.hash and r.measurement is not None}

    def recover_killed(self, log) -> None:
        """Trials left RUNNING by a killed process (a private storage only: on a shared one they may be
        other processes' live trials, which the heartbeat fails after the grace period)."""
        from optuna.trial import TrialState

        if self.shared:
            return
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            self.study.enqueue_trial(t.params, user_attrs={"origin": "resumed"})
            log(f"trial {t.number} was interrupted: queued its policy again")
