"""The one writer of an out DIR: built whole in a staging directory beside DIR, then swapped in.

    check_out(out, inputs=[model_path, data_dir])     # before any work: refuses what would lose data
    with OutDir(out, inputs=[...], carry=("study.db", ".work")) as stage:
        ...write model.onnx, checkpoint/, report.json into ``stage``...
    # here DIR holds the new result; on an exception DIR is untouched

At every instant DIR holds either the complete previous result or the complete new one: the
staging directory ``.DIR.staging-PID-XXXX`` is exchanged with DIR in one ``renameat2(RENAME_EXCHANGE)``
(Linux), or where that is missing moved in by two renames whose gap the next run repairs (the previous
result, parked as ``.DIR.old-PID-XXXX``, is put back). Leftovers of a killed run -- staging or parked
directories of a process that no longer runs -- are removed by the next run into that DIR.

Search state that lives in DIR across runs (an auto study, its work cache) is not part of the result:
``carry`` names the entries hard-linked (copied where links are impossible) from the old DIR into the
new one just before the swap, so a resumed search finds them.

Trust: an output never destroys an input. DIR equal to, inside, or containing an input is refused,
and so is a non-empty DIR that edgeslim did not write (the swap would remove the user's files).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Iterable

from .errors import UsageError

# what makes a directory one edgeslim wrote (so replacing it loses nothing of the user's)
_MARKERS = ("report.json", "checkpoint/edgeslim.json", "study.db", "model.esz", ".work/best", ".work/supernet/state.json")
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old)-(?P<pid>\d+)-[0-9a-f]+$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def check_out(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike | None] = (), what: str = "--out",
              force: bool = False, refuse_model: bool = False) -> Path:
    """Refuse an output that would lose data or cannot be written, before any work starts.

    ``inputs``: paths the command reads (model, data, recipe). ``refuse_model``: also refuse a DIR
    that already holds a model unless ``force`` (decode into another model's DIR)."""
    out = Path(out)
    real = _real(out)
    for inp in inputs:
        if inp is None or not Path(inp).exists():
            continue
        src = _real(Path(inp))
        if real == src or src in real.parents or real in src.parents:
            rel = "is" if real == src else "is inside" if src in real.parents else "contains"
            raise UsageError(f"{what} {out} {rel} the input {inp}: writing it would destroy the input",
                             hint="choose an output directory apart from every input")
    if out.exists() and not out.is_dir():
        raise UsageError(f"{what} {out} is a file, not a directory", hint="choose a directory path")
    if out.is_dir() and any(out.iterdir()) and not _ours(out):
        raise UsageError(f"{what} {out} holds files edgeslim did not write; replacing it would delete them",
                         hint="choose a new or empty directory, or one an earlier edgeslim command wrote")
    if refuse_model and not force and out.is_dir() and _holds_model(out):
        raise UsageError(f"{what} {out} already holds a model", hint="pass --force to replace it, or choose another DIR")
    _check_writable(out, what)
    return out


def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))


def _ours(d: Path) -> bool:
    return any((d / m).exists() for m in _MARKERS)


def _holds_model(d: Path) -> bool:
    return any((d / m).exists() for m in ("checkpoint", "model.onnx", "model.esz"))


def _check_writable(out: Path, what: str) -> None:
    anc = out if out.exists() else out.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise UsageError(f"{what} {out}: {anc} is a file, not a directory")
    parent = out.parent if out.parent.exists() else anc
    try:  # a probe beats os.access: it sees read-only mounts and full disks alike
        probe = parent / f".{out.name}.probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        reason = {errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable (permission denied)",
                  errno.EPERM: "is not writable (permission denied)", errno.ENOSPC: "has no space left",
                  errno.EDQUOT: "is over its disk quota"}.get(e.errno, f"cannot be written ({e.strerror})")
        raise UsageError(f"{what} {out}: {parent} {reason}", hint="choose another output directory") from None


class OutDir:
    """Context manager yielding the staging directory; publishes it as DIR when the block succeeds."""

    def __init__(self, out: str | os.PathLike, *, inputs: Iterable = (), carry: Iterable[str] = (),
                 force: bool = False, refuse_model: bool = False):
        self.out = Path(out)
        self.inputs, self.carry = list(inputs), tuple(carry)
        self.force, self.refuse_model = force, refuse_model
        self.stage: Path | None = None

    def __enter__(self) -> Path:
        check_out(self.out, inputs=self.inputs, force=self.force, refuse_model=self.refuse_model)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(self.out)
        self.stage = self.out.parent / f".{self.out.name}.staging-{os.getpid()}-{secrets.token_hex(4)}"
        self.stage.mkdir()
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> bool:
        stage, self.stage = self.stage, None
        if exc_type is not None:
            shutil.rmtree(stage, ignore_errors=True)
            return False
        try:
            self._carry_into(stage)
            publish(stage, self.out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        return False

    def _carry_into(self, stage: Path) -> None:
        for name in self.carry:
            src, dst = self.out / name, stage / name
            if src.exists() and not dst.exists():
                _link_tree(src, dst)


def _link_tree(src: Path, dst: Path) -> None:
    if src.is_dir():  # temp files of an interrupted atomic write are not carried
        shutil.copytree(src, dst, copy_function=_link_or_copy, symlinks=True,
                        ignore=shutil.ignore_patterns(".*.tmp"))
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def publish(stage: Path, out: Path) -> None:
    """Make ``stage`` the directory ``out`` in one step; the previous ``out`` is removed after."""
    if not out.exists():
        os.rename(stage, out)
        return
    if _exchange(stage, out):
        shutil.rmtree(stage, ignore_errors=True)  # it holds the previous result now
        return
    parked = out.parent / f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}"
    os.rename(out, parked)  # a kill between these two renames is repaired by clean_leftovers
    try:
        os.rename(stage, out)
    except Exception:
        os.rename(parked, out)
        raise
    shutil.rmtree(parked, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2); False where the system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


_RENAMEAT2 = []


def _renameat2():
    if not _RENAMEAT2:
        fn = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fn = getattr(libc, "renameat2", None)
            if fn is not None:
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                fn.restype = ctypes.c_int
        except OSError:
            fn = None
        _RENAMEAT2.append(fn)
    return _RENAMEAT2[0]


def clean_leftovers(out: Path) -> list[Path]:
    """Remove what a killed run into ``out`` left beside it; put back a previous result a kill
    between the two fallback renames left parked. Directories of live processes are left alone."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for entry in sorted(out.parent.iterdir()):
        m = _TEMP.match(entry.name)
        if not m or m["name"] != out.name or _alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not out.exists():
            os.rename(entry, out)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier, finished writer of this process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
