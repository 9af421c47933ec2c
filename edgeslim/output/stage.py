"""Where a command writes its out DIR: a staging directory swapped in whole (core.outdir.OutDir), or a
temporary directory when there is no DIR (the command measures and reports, nothing is kept).

    with staged(out, inputs=[model_path]) as (final, stage):
        write_result(stage, ...)          # DIR changes here, all at once, or not at all
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from ..core.outdir import OutDir


@contextlib.contextmanager
def staged(out: str | os.PathLike | None, inputs: Iterable[str | os.PathLike | None] = (), *,
           carry: Iterable[str] = (), force: bool = False,
           refuse_model: bool = False) -> Iterator[tuple[Path | None, Path]]:
    """Yield (DIR or None, the directory to write into). With ``out``: an OutDir staging directory
    beside DIR, published as DIR when the block succeeds and removed when it raises, so DIR keeps its
    earlier result. ``inputs``: paths the command reads (an output never destroys an input); ``carry``,
    ``force``, ``refuse_model``: as OutDir. Without ``out``: a temporary directory removed after."""
    if out is None:
        with tempfile.TemporaryDirectory(prefix="edgeslim-") as scratch:
            yield None, Path(scratch)
        return
    out = Path(out)
    with OutDir(out, inputs=list(inputs), carry=tuple(carry), force=force, refuse_model=refuse_model) as stage:
        yield out, stage
