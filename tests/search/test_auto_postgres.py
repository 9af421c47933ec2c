"""`edgeslim auto --worker` against a real PostgreSQL server that the test starts itself.

The server: Debian's postgresql package (/usr/lib/postgresql/*/bin; scripts/ensure-postgresql.sh
installs it when root and missing), or initdb / pg_ctl on PATH, or the directory in
EDGESLIM_PG_BIN. The driver: psycopg2-binary (requirements-dev.txt) or psycopg 3. Without either
the server tests skip, saying why; the unreachable-URL check runs everywhere.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from search_toys import SPEC  # noqa: E402  (the toy checkpoint names a factory: CLI calls pass --spec)

ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
PASSWORD = "s3cret-pw"  # trust authentication ignores it; it must never be printed


def _cmd(*args):
    return [sys.executable, "-m", "edgeslim.cli", *[str(a) for a in args]]


def _pg_bindir() -> Path | None:
    cands = [os.environ.get("EDGESLIM_PG_BIN", "")]
    if shutil.which("pg_ctl") and shutil.which("initdb"):
        cands.append(str(Path(shutil.which("pg_ctl")).parent))
    # Debian / Ubuntu keep the server binaries off PATH, one directory per major version (newest first)
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                    if Path(p).parent.name.isdigit() else 0, reverse=True)
    cands += ["/usr/local/pgsql/bin"]
    for c in cands:
        if c and all((Path(c) / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


def _driver() -> str | None:
    import importlib.util

    for mod in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(mod) is not None:
            return mod
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on a free port, one database; stopped and deleted afterwards."""
    bindir, driver = _pg_bindir(), _driver()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres): apt-get install postgresql, "
                    "or set EDGESLIM_PG_BIN")
    if driver is None:
        pytest.skip("no PostgreSQL driver for Python: pip install psycopg2-binary")
    run_as: dict = {}
    # postgres refuses to run as root: as root, run the server as the `postgres` system user (the Debian
    # package creates it) or `nobody`, in a directory of its own (pytest's tmp dirs are root-only, 0700)
    if os.geteuid() == 0:
        import pwd

        for name in ("postgres", "nobody"):
            try:
                pw = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        else:
            pytest.skip("running as root and there is no non-root user (postgres, nobody) to run the server as")
        run_as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
    root = Path(tempfile.mkdtemp(prefix="edgeslim-pg-"))  # short: unix socket paths are limited to ~100 bytes
    if run_as:
        os.chown(root, run_as["user"], run_as["group"])
    data, log = root / "data", root / "server.log"

    def pg(*args, timeout=120):
        return subprocess.run([str(bindir / args[0]), *map(str, args[1:])], capture_output=True, text=True,
                              timeout=timeout, cwd=root, env=dict(os.environ, LC_ALL="C"), **run_as)

    r = pg("initdb", "-D", data, "-U", "edgeslim", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C")
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{r.stdout}\n{r.stderr}")
    started = False
    for _ in range(3):  # the free port can be taken between choosing and binding it: try another
        port = _free_port()
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{root}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 40\n"
                    "shared_buffers = 16MB\n")
        r = pg("pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start")
        if r.returncode == 0:
            started = True
            break
    if not started:
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start:\n{r.stdout}\n{r.stderr}\n{tail}")
    try:
        import sqlalchemy

        dialect = "postgresql+psycopg2" if driver == "psycopg2" else "postgresql+psycopg"
        eng = sqlalchemy.create_engine(f"{dialect}://edgeslim@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sqlalchemy.text("CREATE DATABASE studies"))
        eng.dispose()
        yield f"postgresql://edgeslim:{PASSWORD}@127.0.0.1:{port}/studies"
    finally:
        pg("pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(root, ignore_errors=True)


def _study(store):
    import optuna

    from edgeslim.search.store import STUDY_NAME

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=store)
    except KeyError:  # not created yet
        return None


def _finished(study) -> list:
    return [t for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED")]


def test_leader_and_worker_share_one_postgresql_study(postgres_url, toy_folder, small_space_file, tmp_path):
    name, ckpt = toy_folder
    common = ("--data", name, "--val-fraction", "0.25", "--batch-size", "32", "--budget", "5m", "--threads", "1",
              "--runs", "5", "--storage", postgres_url)
    env = dict(os.environ, **ENV)
    from edgeslim.search.store import open_storage

    store = open_storage(postgres_url, heartbeat=False)  # the URL as the CLI reads it (it picks the driver)
    t0 = time.monotonic()
    # the leader creates the study (baseline, SLA, greedy pass) and stops once the study holds 3 finished
    # trials; the worker, started as soon as the leader has begun its first trial, goes on to 5: so each
    # process measures at least one trial (the leader at most 3 of the 5), and they run side by side
    leader = subprocess.Popen(_cmd("auto", ckpt, "--spec", SPEC, *common, "--max-drop", "10", "--space", small_space_file,
                                   "--trials", "3", "--out", tmp_path / "leader", "--json"),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    study = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and leader.poll() is None:
        study = study or _study(store)
        if study is not None and study.get_trials(deepcopy=False):
            break  # the leader has begun its first trial: it will finish it
        time.sleep(0.2)
    worker = subprocess.Popen(_cmd("auto", ckpt, "--spec", SPEC, *common, "--worker", "--trials", "5", "--out", tmp_path / "worker",
                                   "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        l_out, l_err = leader.communicate(timeout=300)
        w_out, w_err = worker.communicate(timeout=300)
    finally:
        for p in (leader, worker):
            if p.poll() is None:
                p.kill()
    seconds = time.monotonic() - t0
    assert leader.returncode == 0, f"leader:\n{l_err}"
    assert worker.returncode == 0, f"worker:\n{w_err}"
    assert "joining the search" in w_err and "SLA val >=" in w_err

    study = _study(store)
    trials = study.get_trials(deepcopy=False)
    done = _finished(study)
    assert len(done) >= 5
    assert not [t for t in trials if t.state.name == "RUNNING"]
    from edgeslim.search.store import STATE_KEY
    from edgeslim.search.trial import read_record

    by = {read_record(t).worker for t in done}
    assert f"{socket.gethostname()}:{leader.pid}" in by, by  # trials from both processes in one study
    assert f"{socket.gethostname()}:{worker.pid}" in by, by

    sla = study.user_attrs[STATE_KEY]["sla"]
    for out, stdout in ((tmp_path / "leader", l_out), (tmp_path / "worker", w_out)):
        d = json.loads(stdout)
        rep = json.loads((out / "report.json").read_text())
        assert d["feasible"] and d["best_trial"] == rep["details"]["best_trial"]
        assert rep["details"]["sla"]["min_val_accuracy"] == sla
        rows = {r["trial"]: r for r in rep["details"]["trials"]}
        best = rows[d["best_trial"]]
        assert best["state"] == "complete" and best["feasible"] and best["val_accuracy"] >= sla
        feasible = [r for r in rows.values() if r["state"] == "complete" and r["feasible"]]
        assert best["size_bytes"] == min(r["size_bytes"] for r in feasible)  # the best of what it saw
        assert rep["result"]["size_bytes"] == (out / "model.onnx").stat().st_size == best["size_bytes"]
        assert (out / "winner.yaml").is_file() and (out / "report.html").is_file()
        assert rep["details"]["storage"].startswith("postgresql://edgeslim:***@127.0.0.1:")
    # the worker finished last: it saw the whole study
    w_rows = json.loads((tmp_path / "worker" / "report.json").read_text())["details"]["trials"]
    assert {r["trial"] for r in w_rows} == {t.number for t in trials}
    for text in (l_out, l_err, w_out, w_err, (tmp_path / "leader" / "report.json").read_text()):
        assert PASSWORD not in text
    store.engine.dispose()
    print(f"leader + worker on PostgreSQL: {len(done)} trials in {seconds:.1f}s")


def test_unreachable_postgresql_is_one_error_line(toy_folder, tmp_path):
    """No server on the port (or no driver): `error: cannot open the study storage ...` + hint, exit 1,
    no traceback, no password."""
    name, ckpt = toy_folder
    url = f"postgresql://edgeslim:{PASSWORD}@127.0.0.1:{_free_port()}/studies"
    p = subprocess.run(_cmd("auto", ckpt, "--spec", SPEC, "--data", name, "--val-fraction", "0.25", "--storage", url,
                            "--out", tmp_path / "o"), env=dict(os.environ, **ENV), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, p.stderr
    assert errors[0].startswith("error: cannot open the study storage postgresql://edgeslim:***@127.0.0.1:")
    assert "Traceback" not in p.stderr and PASSWORD not in p.stderr + p.stdout
    assert [line for line in lines if line.startswith("  hint:")], p.stderr
    if _driver() is not None:
        assert "connection" in errors[0].lower() or "connect" in errors[0].lower(), errors[0]
    else:
        assert "psycopg2" in p.stderr
