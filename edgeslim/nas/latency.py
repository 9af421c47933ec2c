"""A per-block latency lookup table of a search space, measured in the deployment runtime.

    table = build(space, (1, 28, 28), runtime="onnxruntime", threads=1, cache=Path("lut.json"))
    table.predict(arch)              # ms of the subnet ``arch``: a sum of measured pieces
    table.expected(probs)            # differentiable expected ms under per-decision probabilities
    check(table, [(arch, ms), ...])  # the predictor against whole-subnet measurements

Every entry is a measurement: a small module of one piece (a block, the stem, or the head with pooling
and classifier) is exported at batch 1 through the Runtime seam and timed with
``edgeslim.measure.latency`` (on a device agent when one is given), the median of ``runs`` runs.
An entry is keyed by what the piece is -- the block's build arguments as ``Space.net`` gives them
(type, cin, cout, stride, hidden, kernel, res | proj) -- and the input (C, H, W) it sees in the
network; the entries are every distinct piece any subnet of the space contains.

Per-call overhead: a timed piece includes what every inference call costs besides its compute
(the runtime's dispatch, binding the input, handing the output back), so summing N separately timed
pieces would count it N times. For every input shape a piece has, the table also times a trivial
graph of that input (one ReLU): its overhead probe. Each piece's share of a prediction is its median
less the probe of its input shape (clamped at 0), and a prediction adds the probe of the network's
input back once:

    predict(arch) = overhead(network input) + sum over its stem, blocks and head of
                    max(0, T(piece) - overhead(input shape of the piece))

Pieces are timed in chunks of whole input-shape groups: ``rounds`` passes over the chunk, each pass
timing the pieces of one shape together (``measure.bench``: one fresh session at a time, in shuffled
order) and, in the same pass, their probe with more runs (it is tiny and every piece of its shape is
charged it). Spreading a piece's rounds over the chunk lets the changing load of a shared machine hit a piece,
its probe and its neighbours alike.

Piece boundaries: on ONNX Runtime a piece reorders its input into the blocked NCHWc layout and its
output back, where a network stays blocked from block to block. Timed interleaved run by run on a
2-core machine (MobileNet space, 28x28, 1 thread), the cost of one boundary, T(A) + T(B) - T(AB), came
out at 1.0-1.2x the probe, and this predictor was within -2%..+7% of five whole subnets, so the probe
stands for the boundary too.

A table file (JSON) holds the raw medians, the overhead and what they were measured with (runtime
name and version, threads, input shape, the agent); ``build`` with ``cache=`` reuses the entries
of a file measured with the same settings and measures only the missing ones, saving as it goes.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from ..core.errors import EdgeslimError, UsageError
from ..core.io import write_json
from ..core.shapes import batched, unbatched
from ..models.nasnet import conv_bn_act, make_block
from .space import Space, from_dict

FORMAT = "edgeslim.nas.latency"
FORMAT_VERSION = 1
PROBE_RUNS = 5
CHUNK = 50  # entries timed together (their rounds spread over the chunk), then saved and logged


@dataclasses.dataclass
class Piece:
    """One entry: ``kind`` block | stem | head | overhead (a probe), its build arguments, its input (C, H, W)."""

    kind: str
    desc: dict
    input: tuple[int, int, int]

    def key(self) -> str:
        return key(self.kind, self.desc, self.input)


def key(kind: str, desc: dict, input_chw) -> str:
    return json.dumps([kind, desc, [int(v) for v in input_chw]], sort_keys=True)


# -- what a space's subnets contain ---------------------------------------------------------------------
def _shape(input_shape) -> tuple[int, int, int]:
    try:
        s = unbatched(input_shape)
    except (TypeError, ValueError):
        s = ()
    if len(s) != 3 or not all(isinstance(v, int) and v > 0 for v in s):
        raise UsageError(f"a latency table needs an input shape (C, H, W) of positive integers, got {input_shape!r}")
    return s


def _down(hw, stride: int) -> tuple[int, int]:
    """Output size of a k x k convolution with padding k // 2 (odd k)."""
    return math.ceil(hw[0] / stride), math.ceil(hw[1] / stride)


def stage_inputs(space: Space, input_shape) -> list[tuple[int, int]]:
    """(H, W) of the input to each stage's first block."""
    _, h, w = _shape(input_shape)
    hw, out = _down((h, w), int(space.stem.get("stride", 1))), []
    for s in space.stages:
        out.append(hw)
        hw = _down(hw, s.stride)
    return out


def slot_axes(space: Space, i: int, j: int) -> list[tuple[str, int, str]]:
    """What the block in slot (stage i, index j) varies with: (role, stage, decision) per axis; role
    cin | cout | both (cin == cout) | expand | kernel. A cin axis is the previous stage's width."""
    mb = space.kind == "mobilenet"
    extra = [("expand", i, "expand"), ("kernel", i, "kernel")] if mb else []
    if j > 0 or (i == 0 and not mb):  # cin == cout: a later block, or a resnet's first stage (stem tied)
        return [("both", i, "width")] + extra
    cin = [] if i == 0 else [("cin", i - 1, "width")]  # mobilenet stage 0 takes the fixed stem width
    return cin + [("cout", i, "width")] + extra


def _value(space: Space, stage: int, decision: str, choice) -> int:
    s = space.stages[stage]
    return s.widths(space.divisor)[choice] if decision == "width" else int(choice)


def _block_desc(space: Space, i: int, j: int, v: dict) -> dict:
    """The block ``Space.net`` builds in slot (i, j) from the resolved values ``v`` (cin, cout, ...)."""
    cin, cout = v.get("cin", v.get("both")), v.get("cout", v.get("both"))
    if cin is None:
        cin = int(space.stem["out"])
    res = j > 0 or space.first_res(i)
    b = {"type": "mb" if space.kind == "mobilenet" else "basic", "cin": cin, "cout": cout,
         "stride": space.stages[i].stride if j == 0 else 1}
    if space.kind == "mobilenet":
        b.update({"hidden": cin * v["expand"], "kernel": v["kernel"], "res": res})
    else:
        b["proj"] = not res
    return b


def slot_combos(space: Space, i: int, j: int) -> Iterator[tuple[tuple[int, ...], dict]]:
    """(choice index per axis, block desc) of every block slot (i, j) can hold."""
    axes = slot_axes(space, i, j)
    choices = [getattr(space.stages[st], d) for _, st, d in axes]
    for idx in itertools.product(*(range(len(c)) for c in choices)):
        v = {role: _value(space, st, d, choices[a][k]) for a, ((role, st, d), k) in enumerate(zip(axes, idx))}
        yield idx, _block_desc(space, i, j, v)


def _stem_desc(space: Space, in_channels: int, out: int) -> dict:
    st = space.stem
    return {"in": in_channels, "out": out, "kernel": int(st.get("kernel", 3)), "stride": int(st.get("stride", 1)),
            "act": st.get("act", "relu6" if space.kind == "mobilenet" else "relu")}


def _head_desc(space: Space, cin: int, num_classes: int) -> dict:
    return {"cin": cin, "head": int(space.head["out"]) if space.head else None,
            "act": _stem_desc(space, 1, 1)["act"], "classes": num_classes}


def stem_outs(space: Space) -> list[int]:
    """The stem widths of the space's subnets (a resnet's is its first stage's width)."""
    return list(space.stages[0].widths(space.divisor).values()) if space.kind == "resnet" else [int(space.stem["out"])]


def probe(input_chw) -> Piece:
    """The overhead probe of an input shape: a graph of one ReLU."""
    return Piece("overhead", {"op": "relu"}, tuple(int(v) for v in input_chw))


def pieces(space: Space, input_shape, num_classes: int = 10) -> list[Piece]:
    """Every distinct piece a subnet of ``space`` contains (stems, blocks, heads), then the overhead probe
    of each of their input shapes (the network input's first)."""
    c, h, w = _shape(input_shape)
    out = [Piece("stem", _stem_desc(space, c, o), (c, h, w)) for o in stem_outs(space)]
    ins = stage_inputs(space, (c, h, w))
    for i, j in space.slots():
        hw = ins[i] if j == 0 else _down(ins[i], space.stages[i].stride)
        out += [Piece("block", d, (d["cin"], *hw)) for _, d in slot_combos(space, i, j)]
    last = len(space.stages) - 1
    end = _down(ins[last], space.stages[last].stride)
    out += [Piece("head", _head_desc(space, wc, num_classes), (wc, *end))
            for wc in space.stages[last].widths(space.divisor).values()]
    out += [probe(s) for s in dict.fromkeys(p.input for p in out)]
    seen: dict[str, Piece] = {}
    for p in out:
        seen.setdefault(p.key(), p)
    return list(seen.values())


def piece_module(p: Piece) -> nn.Module:
    """The small module timed for piece ``p``."""
    d = p.desc
    if p.kind == "block":
        return make_block(d)
    if p.kind == "stem":
        return conv_bn_act(d["in"], d["out"], d["kernel"], d["act"], d["stride"])
    if p.kind == "head":
        head = conv_bn_act(d["cin"], d["head"], 1, d["act"]) if d["head"] else nn.Identity()
        classifier = nn.Linear(d["head"] or d["cin"], d["classes"])
        return nn.Sequential(head, nn.AdaptiveAvgPool2d(1), nn.Flatten(), classifier)
    if p.kind == "overhead":
        return nn.ReLU()
    raise UsageError(f"latency table: a {p.kind} entry is no single module")


# -- the table ------------------------------------------------------------------------------------------
class LatencyTable:
    """Measured pieces of a space; ``raw``: key -> median ms as timed (the call overhead included)."""

    def __init__(self, space: Space, input_shape, raw: dict[str, float], *, runtime: str, runtime_version: str,
                 threads: int, timed_on: str | None = None, num_classes: int = 10):
        self.space, self.input_shape, self.num_classes = space, _shape(input_shape), num_classes
        self.runtime, self.runtime_version, self.threads, self.timed_on = runtime, runtime_version, threads, timed_on
        self.pieces = pieces(space, self.input_shape, num_classes)
        missing = [p for p in self.pieces if p.key() not in raw]
        if missing:
            raise UsageError(f"the latency table lacks {len(missing)} of the {len(self.pieces)} entries of the "
                             f"{space.name} space (e.g. {missing[0].kind} {missing[0].desc} at "
                             f"{missing[0].input})",
                             hint="build it with edgeslim.nas.latency.build for this space and input shape")
        self.raw = {p.key(): float(raw[p.key()]) for p in self.pieces}
        self.overhead_ms = self.raw[probe(self.input_shape).key()]  # added once per prediction
        self.measured = 0  # how many entries the build that made this table timed (the rest came from its cache)
        self._slots = None

    def __len__(self) -> int:
        return len(self.pieces)

    def share(self, kind: str, desc: dict, input_chw) -> float:
        """A piece's share of a prediction: its median less the overhead probe of its input, at least 0."""
        p = Piece(kind, desc, tuple(int(v) for v in input_chw))
        if p.key() not in self.raw:
            raise UsageError(f"the latency table has no entry for {kind} {desc} at input {p.input}")
        return max(0.0, self.raw[p.key()] - self.raw[probe(p.input).key()])

    def predict(self, arch: dict) -> float:
        """Predicted ms of subnet ``arch``: the shares of its blocks, stem and head, plus the overhead once."""
        net = self.space.net(arch)
        c, h, w = self.input_shape
        hw = _down((h, w), net["stem"]["stride"])
        total = 0.0
        for b in net["blocks"]:
            total += self.share("block", b, (b["cin"], *hw))
            hw = _down(hw, b["stride"])
        total += self.share("stem", _stem_desc(self.space, c, net["stem"]["out"]), (c, h, w))
        last = net["blocks"][-1]["cout"]
        total += self.share("head", _head_desc(self.space, last, self.num_classes), (last, *hw))
        return total + self.overhead_ms

    # -- differentiable ---------------------------------------------------------------------------------
    def _probs(self, probs: dict, stage: int, decision: str) -> torch.Tensor:
        choices = getattr(self.space.stages[stage], decision)
        if len(choices) == 1:
            return torch.ones(1, dtype=torch.float64)
        name = f"s{stage}.{decision}"
        if name not in probs:
            raise UsageError(f"expected latency needs a probability vector for {name}")
        p = torch.as_tensor(probs[name])
        if p.shape != (len(choices),):
            raise UsageError(f"the probabilities of {name} must have shape ({len(choices)},) like its choices "
                             f"{list(choices)}, got {tuple(p.shape)}")
        return p.to("cpu", torch.float64)

    def _slot_tables(self) -> list[tuple[int, int, list, torch.Tensor]]:
        """Per slot: (stage, index, axes, shares with one dim per axis), computed once."""
        if self._slots is None:
            ins, self._slots = stage_inputs(self.space, self.input_shape), []
            for i, j in self.space.slots():
                hw = ins[i] if j == 0 else _down(ins[i], self.space.stages[i].stride)
                axes = slot_axes(self.space, i, j)
                t = torch.zeros([len(getattr(self.space.stages[st], d)) for _, st, d in axes], dtype=torch.float64)
                for idx, desc in slot_combos(self.space, i, j):
                    t[idx] = self.share("block", desc, (desc["cin"], *hw))
                self._slots.append((i, j, axes, t))
        return self._slots

    @staticmethod
    def _contract(t: torch.Tensor, ps: list[torch.Tensor]) -> torch.Tensor:
        for p in ps:  # the expectation over one independent axis at a time
            t = torch.tensordot(p, t, dims=([0], [0]))
        return t

    def expected(self, probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expected ms of a subnet drawn with independent per-decision probabilities (``probs``: one vector
        per name of ``space.decisions()``, ordered like its choices; fixed decisions are certain).
        Differentiable in ``probs``; a float64 scalar on the CPU (``.to(loss)`` it), equal to ``predict(arch)``
        for one-hot probabilities."""
        sp, total = self.space, torch.zeros((), dtype=torch.float64)
        for i, j, axes, t in self._slot_tables():
            depth = self._probs(probs, i, "depth")
            active = sum(p for p, d in zip(depth, sp.stages[i].depth) if d > j) if j > 0 else 1.0
            total = total + active * self._contract(t, [self._probs(probs, st, d) for _, st, d in axes])
        c, h, w = self.input_shape
        stems = torch.tensor([self.share("stem", _stem_desc(sp, c, o), (c, h, w)) for o in stem_outs(sp)],
                             dtype=torch.float64)
        total = total + (self._contract(stems, [self._probs(probs, 0, "width")]) if len(stems) > 1 else stems[0])
        last = len(sp.stages) - 1
        end = _down(stage_inputs(sp, self.input_shape)[last], sp.stages[last].stride)
        heads = torch.tensor([self.share("head", _head_desc(sp, wc, self.num_classes), (wc, *end))
                              for wc in sp.stages[last].widths(sp.divisor).values()], dtype=torch.float64)
        total = total + self._contract(heads, [self._probs(probs, last, "width")])
        return total + self.overhead_ms

    # -- persistence ------------------------------------------------------------------------------------
    def settings(self) -> dict:
        return settings_of(self.runtime, self.runtime_version, self.threads, self.input_shape, self.timed_on)

    def to_dict(self) -> dict:
        return table_dict(self.settings(), self.space, self.num_classes, self.pieces, self.raw)

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        """The table saved at ``path`` (its space included)."""
        d = read_table(path)
        s = d["settings"]
        return cls(from_dict(d["space"], name=d["space"].get("name", "custom")), s["input_shape"], d["raw"],
                   runtime=s["runtime"], runtime_version=s["runtime_version"], threads=s["threads"],
                   timed_on=s["timed_on"], num_classes=d["num_classes"])


def settings_of(runtime: str, version: str, threads: int, input_shape, timed_on: str | None) -> dict:
    return {"runtime": runtime, "runtime_version": version, "threads": int(threads),
            "input_shape": [int(v) for v in input_shape], "timed_on": timed_on}


def table_dict(settings: dict, space: Space, num_classes: int, ps: list[Piece], raw: dict[str, float]) -> dict:
    """The JSON form: the settings, the space, the overhead and every entry (``ps`` first, then the
    other entries of ``raw``, e.g. a shared cache's entries of another space)."""
    own = [p.key() for p in ps]
    mine = set(own)
    order = [k for k in own if k in raw] + [k for k in raw if k not in mine]
    entries = []
    for k in order:
        kind, desc, inp = json.loads(k)
        entries.append({"piece": kind, "desc": desc, "input": inp, "ms": raw[k]})
    over = raw.get(probe(settings["input_shape"]).key())
    return {"format": FORMAT, "version": FORMAT_VERSION, **settings, "overhead_ms": over,
            "num_classes": num_classes, "space": space.to_dict(), "entries": entries}


def read_table(path: str | Path) -> dict:
    """A table file's settings, space, num_classes and raw entries; an error naming what is wrong with it."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"latency table {p}: no such file") from None
    except (OSError, ValueError) as e:
        raise EdgeslimError(f"latency table {p} cannot be read: {e}") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
        raise EdgeslimError(f"{p} is not an edgeslim latency table (format {FORMAT} version {FORMAT_VERSION})")
    try:
        s = settings_of(d["runtime"], d["runtime_version"], d["threads"], d["input_shape"], d.get("timed_on"))
        raw = {key(e["piece"], e["desc"], e["input"]): float(e["ms"]) for e in d["entries"]}
        if not isinstance(d["space"], dict):
            raise TypeError("space is not a mapping")
        return {"settings": s, "space": d["space"], "num_classes": int(d.get("num_classes", 10)), "raw": raw}
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeslimError(f"latency table {p} is malformed ({type(e).__name__}: {e})") from None


# -- measuring ------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Timer:
    """How pieces are timed: a runtime, a scratch directory for exports, the timing settings, a device agent."""

    runtime: Any
    work: Path
    threads: int = 1
    warmup: int = 5
    runs: int = 30
    rounds: int = 3
    agent: Any = None

    @contextlib.contextmanager
    def exported(self, models: list[tuple[nn.Module, tuple]]) -> Iterator[list[Any]]:
        """Each (module, input (C, H, W)) exported at batch 1 (a module itself for a runtime that runs no
        file); the files are removed afterwards."""
        from .. import runtimes

        files = []
        try:
            arts = []
            for n, (m, chw) in enumerate(models):
                m = copy.deepcopy(m).eval()  # the caller's module keeps its mode
                if not self.runtime.suffix:
                    arts.append(m)
                    continue
                path = self.work / f"m{n}{self.runtime.suffix}"
                if runtimes.for_artifact(path) is not self.runtime:  # measure.bench times a file by its suffix
                    raise UsageError(f"runtime {self.runtime.name} shares its {self.runtime.suffix} files with "
                                     f"{runtimes.for_artifact(path).name}: a latency table cannot time it")
                files += runtimes.artifact_files(path) + [path.with_name(path.name + ".data")]
                example = torch.randn(*batched(chw), generator=torch.Generator().manual_seed(0))
                self.runtime.export(m, path, example)
                arts.append(path)
            yield arts
        finally:
            for f in files:
                f.unlink(missing_ok=True)

    def medians(self, models: list[tuple[nn.Module, tuple]], more: list[int] | None = None) -> list[float]:
        """Median ms of each module: ``rounds`` passes over all of them, each pass timing the modules of one
        input shape together (``measure.bench``: one fresh session at a time, in shuffled order) and the
        shapes in shuffled order; per module the median over passes of each pass's median. Spreading a
        module's rounds over the whole set lets the changing load of a shared machine hit all alike.
        ``more``: per module, a factor on ``runs`` (a tiny graph is cheap to time longer)."""
        from ..measure.latency import bench

        more = more or [1] * len(models)
        groups = list(dict.fromkeys((tuple(c), f) for (_, c), f in zip(models, more)))
        per: list[list[float]] = [[] for _ in models]
        with self.exported(models) as arts:
            for r in range(self.rounds):
                for chw, f in random.Random(r).sample(groups, len(groups)):
                    idx = [k for k, (_, c) in enumerate(models) if (tuple(c), more[k]) == (chw, f)]
                    res = bench([arts[k] for k in idx], batched(chw), threads=self.threads, warmup=self.warmup,
                                runs=self.runs * f, seed=r, agent=self.agent)
                    for k, x in zip(idx, res):
                        per[k].append(x["median_ms"])
        return [statistics.median(v) for v in per]

    def pieces(self, ps: list[Piece]) -> list[float]:
        """Median ms of each piece (an overhead probe timed over ``PROBE_RUNS`` times as many runs: it is
        subtracted from every piece of its input shape)."""
        return self.medians([(piece_module(p), p.input) for p in ps],
                            [PROBE_RUNS if p.kind == "overhead" else 1 for p in ps])


def measure_whole(model: nn.Module, input_shape, runtime: str = "onnxruntime", threads: int = 1, runs: int = 30,
                  agent: Any = None, *, warmup: int = 5, rounds: int = 3) -> float:
    """Median ms of the whole ``model`` at batch 1 in ``runtime`` (exported to a temporary directory and
    timed like the table's pieces: ``rounds`` sessions of ``runs`` runs after ``warmup``)."""
    return measure_all([model], input_shape, runtime, threads, runs, agent, warmup=warmup, rounds=rounds)[0]


def measure_all(models: list[nn.Module], input_shape, runtime: str = "onnxruntime", threads: int = 1, runs: int = 30,
                agent: Any = None, *, warmup: int = 5, rounds: int = 3) -> list[float]:
    """``measure_whole`` of several models timed together: their rounds alternate, so the changing load of
    a shared machine hits them alike (finalists compare best this way)."""
    from .. import runtimes
    from ..measure.latency import check_timing

    check_timing(threads=threads, warmup=warmup, runs=runs, rounds=rounds)
    with tempfile.TemporaryDirectory(prefix="edgeslim-lut-") as d:
        timer = Timer(runtimes.get(runtime), Path(d), threads, warmup, runs, rounds, agent)
        return timer.medians([(m, _shape(input_shape)) for m in models])


def _cached(cache: Path | None, settings: dict, log: Callable[[str], Any]) -> dict[str, float]:
    """The raw entries of ``cache`` when it was measured with ``settings`` (else none)."""
    if cache is None or not Path(cache).exists():
        return {}
    d = read_table(cache)
    if d["settings"] != settings:
        diff = ", ".join(f"{k} {d['settings'][k]!r} (now {v!r})" for k, v in settings.items() if d["settings"][k] != v)
        log(f"latency table: {cache} was measured with {diff}; not reused, it will be overwritten")
        return {}
    return d["raw"]


def _chunks(todo: list[Piece], size: int) -> Iterator[list[Piece]]:
    """``todo`` in chunks of about ``size`` pieces, each made of whole input-shape groups (a piece is timed
    with the overhead probe of its input)."""
    chunk: list[Piece] = []
    for chw in dict.fromkeys(p.input for p in todo):
        chunk += [p for p in todo if p.input == chw]
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def build(space: Space, input_shape, *, runtime: str = "onnxruntime", threads: int = 1, runs: int = 30,
          warmup: int = 5, rounds: int = 3, agent: Any = None, cache: Path | None = None, num_classes: int = 10,
          log: Callable[[str], Any] = print) -> LatencyTable:
    """Measure every piece of ``space``'s subnets at ``input_shape`` (C, H, W) in ``runtime`` with ``threads``
    threads (on ``agent`` when given): per piece the median over ``rounds`` sessions of the median of
    ``runs`` timed runs after ``warmup`` (see ``Timer.medians``), in chunks of about ``CHUNK`` pieces.
    ``cache``: a table file whose entries measured with the same settings are reused; it is written
    after every chunk, so an interrupted build resumes."""
    from .. import runtimes
    from ..measure.latency import check_timing

    check_timing(threads=threads, warmup=warmup, runs=runs, rounds=rounds)
    shape, rt = _shape(input_shape), runtimes.get(runtime)
    settings = settings_of(rt.name, rt.version(), threads, shape, getattr(agent, "url", None) if agent else None)
    raw = _cached(cache, settings, log)
    ps = pieces(space, shape, num_classes)
    todo = [p for p in ps if p.key() not in raw]
    log(f"latency table: {len(ps)} entries for the {space.name} space at {shape} in {rt.version()}, "
        f"{threads} thread(s); {len(ps) - len(todo)} from the cache, {len(todo)} to measure")
    t0, done = time.monotonic(), 0
    with tempfile.TemporaryDirectory(prefix="edgeslim-lut-") as work:
        timer = Timer(rt, Path(work), threads, warmup, runs, rounds, agent)
        for chunk in _chunks(todo, CHUNK):
            for p, ms in zip(chunk, timer.pieces(chunk)):
                raw[p.key()] = ms
            done += len(chunk)
            if cache is not None:
                write_json(cache, table_dict(settings, space, num_classes, ps, raw))
            log(f"latency table: {done}/{len(todo)} measured ({time.monotonic() - t0:.0f} s)")
    table = LatencyTable(space, shape, raw, runtime=rt.name, runtime_version=rt.version(), threads=threads,
                         timed_on=settings["timed_on"], num_classes=num_classes)
    table.measured = len(todo)
    return table


def check(table: LatencyTable, measured: list[tuple[dict, float]]) -> dict:
    """The table's predictions against whole-subnet measurements ``(arch, ms)``: per finalist predicted,
    measured and relative error (predicted - measured) / measured, and the median absolute relative error."""
    if not measured:
        raise UsageError("checking a latency table needs at least one measured subnet")
    rows = []
    for arch, ms in measured:
        if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not ms > 0:
            raise UsageError(f"a measured latency must be a positive number of ms, got {ms!r}")
        pred = table.predict(arch)
        rows.append({"arch": dict(arch), "predicted_ms": pred, "measured_ms": float(ms),
                     "rel_error": (pred - ms) / ms})
    return {"finalists": rows, "median_abs_rel_error": statistics.median(abs(r["rel_error"]) for r in rows)}
