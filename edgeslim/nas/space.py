"""Architecture search spaces as data: a stem, stages with per-stage choices, an optional head.

    type: mobilenet | resnet
    stem: {out: 16, kernel: 3, stride: 1, act: relu6}
    head: {out: 320}                 # mobilenet: a 1x1 conv before pooling; resnet: none
    stages:
      - {channels: 24, stride: 2, depth: [1, 2, 3], width: [0.75, 1.0], expand: [3, 6], kernel: [3, 5, 7]}

An architecture (``arch``) is a flat dict of the choices that vary, ``"s1.depth": 2, "s1.width": 1.0,
...``: what Optuna's trials and every strategy store. A choice is "per stage": every block of the
stage shares the width (its residuals need it), the expansion ratio and the kernel.

Spaces ship as YAML (``spaces/mobilenet.yaml``, ``spaces/resnet.yaml``) and load from a file or a
dict, with ``key=value`` overrides; ``from_model`` turns a trained mobilenetv2_tiny or resnet20 into
the space whose largest subnet is that model (elastic depth and width), so search starts from it.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
from pathlib import Path
from typing import Any

from ..core.errors import UsageError

KINDS = ("mobilenet", "resnet")
DECISIONS = ("depth", "width", "expand", "kernel")
SPACES_DIR = Path(__file__).with_name("spaces")


def divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclasses.dataclass(frozen=True)
class Stage:
    channels: int
    stride: int
    depth: tuple[int, ...]
    width: tuple[float, ...] = (1.0,)
    expand: tuple[int, ...] = (1,)
    kernel: tuple[int, ...] = (3,)

    def widths(self, divisor: int) -> dict[float, int]:
        return {w: divisible(self.channels * w, divisor) for w in self.width}


@dataclasses.dataclass(frozen=True)
class Space:
    kind: str
    stem: dict
    stages: tuple[Stage, ...]
    head: dict | None = None
    divisor: int = 8
    name: str = "custom"

    # -- the choices ------------------------------------------------------------------------------
    def decisions(self) -> list[tuple[str, tuple]]:
        """(param name, choices) of every choice that varies, in stage order."""
        return [(f"s{i}.{d}", getattr(s, d)) for i, s in enumerate(self.stages) for d in DECISIONS
                if len(getattr(s, d)) > 1]

    def full(self, arch: dict) -> list[dict]:
        """Per stage, every choice (fixed ones filled in); an unknown key or value is refused."""
        names = {n: c for n, c in self.decisions()}
        for k, v in arch.items():
            if k not in names:
                raise UsageError(f"architecture choice {k!r} is not in the {self.name} space",
                                 hint=f"choices: {', '.join(names) or 'none'}")
            if v not in names[k]:
                raise UsageError(f"architecture choice {k}={v!r} is not one of {list(names[k])}")
        return [{d: arch.get(f"s{i}.{d}", getattr(s, d)[-1] if len(getattr(s, d)) > 1 else getattr(s, d)[0])
                 for d in DECISIONS} for i, s in enumerate(self.stages)]

    def pick(self, which: int) -> dict:
        """The arch taking choice index ``which`` (0: smallest, -1: largest) everywhere."""
        return {n: sorted(c)[which] for n, c in self.decisions()}

    def largest(self) -> dict:
        return self.pick(-1)

    def smallest(self) -> dict:
        return self.pick(0)

    def sample(self, rng: random.Random) -> dict:
        return {n: rng.choice(c) for n, c in self.decisions()}

    def mutate(self, arch: dict, rng: random.Random, p: float | None = None) -> dict:
        """Each choice redrawn with probability ``p`` (default 1/#choices); at least one changes."""
        dec = self.decisions()
        if not dec:
            return dict(arch)
        p = p if p is not None else 1.0 / len(dec)
        out = dict(arch)
        for n, c in dec:
            if rng.random() < p and len(c) > 1:
                out[n] = rng.choice([v for v in c if v != arch.get(n)])
        if out == arch:
            n, c = rng.choice(dec)
            out[n] = rng.choice([v for v in c if v != arch.get(n)])
        return out

    def size(self) -> int:
        return math.prod(len(c) for _, c in self.decisions())

    # -- the network an arch names ------------------------------------------------------------------
    def stem_out(self, stages: list[dict]) -> int:
        if self.kind == "resnet":  # the first stage's identity residuals take the stem's width
            return self.stages[0].widths(self.divisor)[stages[0]["width"]]
        return int(self.stem["out"])

    def net(self, arch: dict) -> dict:
        """nasnet's build arguments (stem, blocks, head) for ``arch``: plain data."""
        stages = self.full(arch)
        cin = self.stem_out(stages)
        stem = {"out": cin, "kernel": int(self.stem.get("kernel", 3)), "stride": int(self.stem.get("stride", 1)),
                "act": self.stem.get("act", "relu6" if self.kind == "mobilenet" else "relu")}
        blocks = []
        for i, (s, c) in enumerate(zip(self.stages, stages)):
            cout = s.widths(self.divisor)[c["width"]]
            for j in range(c["depth"]):
                res = j > 0 or self.first_res(i)
                b = {"type": "mb" if self.kind == "mobilenet" else "basic", "cin": cin, "cout": cout,
                     "stride": s.stride if j == 0 else 1}
                b.update({"hidden": cin * c["expand"], "kernel": c["kernel"], "res": res} if self.kind == "mobilenet"
                         else {"proj": not res})
                blocks.append(b)
                cin = cout
        return {"stem": stem, "blocks": blocks, "head": dict(self.head) if self.head else None}

    def in_widths(self, i: int) -> list[int]:
        """The widths stage ``i``'s first block may receive."""
        if i == 0:
            return sorted(set(self.stages[0].widths(self.divisor).values())) if self.kind == "resnet" \
                else [int(self.stem["out"])]
        return sorted(set(self.stages[i - 1].widths(self.divisor).values()))

    def first_res(self, i: int) -> bool:
        """Whether stage ``i``'s first block is residual (identity shortcut) in every subnet: stride 1 and
        its input always as wide as its output (a resnet's first stage takes the stem's width)."""
        s = self.stages[i]
        if s.stride != 1:
            return False
        if i == 0 and self.kind == "resnet":
            return True
        outs = set(s.widths(self.divisor).values())
        return len(outs) == 1 and set(self.in_widths(i)) == outs

    def slots(self) -> list[tuple[int, int]]:
        """(stage, index in stage) of every block of the supernet (the largest depth of each stage)."""
        return [(i, j) for i, s in enumerate(self.stages) for j in range(max(s.depth))]

    def to_dict(self) -> dict:
        return {"type": self.kind, "name": self.name, "stem": dict(self.stem), "head": self.head,
                "divisor": self.divisor, "stages": [dataclasses.asdict(s) for s in self.stages]}

    def check(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"space type {self.kind!r} is not known", hint=f"one of: {', '.join(KINDS)}")
        if not self.stages:
            raise UsageError("a space needs at least one stage")
        for i, s in enumerate(self.stages):
            _check_stage(self.kind, i, s)
        if not isinstance(self.stem, dict) or (self.kind == "mobilenet" and not _pos_int(self.stem.get("out"))):
            raise UsageError(f"space.stem must be a mapping with out: a positive integer, got {self.stem!r}")
        for i, s in enumerate(self.stages):
            counts = list(s.widths(self.divisor).values())
            if len(set(counts)) != len(counts):
                raise UsageError(f"space.stages[{i}].width {list(s.width)} gives equal channel counts {counts} "
                                 f"at divisor {self.divisor}", hint="choose multipliers that differ more, or a smaller divisor")
        if self.head is not None and not (isinstance(self.head, dict) and _pos_int(self.head.get("out"))):
            raise UsageError(f"space.head must be null or a mapping with out: a positive integer, got {self.head!r}")


def _pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _check_stage(kind: str, i: int, s: Stage) -> None:
    where = f"space.stages[{i}]"
    if not _pos_int(s.channels) or s.stride not in (1, 2):
        raise UsageError(f"{where}: channels must be a positive integer and stride 1 or 2, got "
                         f"channels={s.channels!r}, stride={s.stride!r}")
    for d, ok, what in (("depth", _pos_int, "positive integers"),
                        ("width", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 4,
                         "multipliers in (0, 4]"),
                        ("expand", _pos_int, "positive integers"),
                        ("kernel", lambda v: _pos_int(v) and v % 2 == 1, "odd positive integers")):
        vals = getattr(s, d)
        if not vals or not all(ok(v) for v in vals) or len(set(vals)) != len(vals):
            raise UsageError(f"{where}.{d} must be a non-empty list of distinct {what}, got {list(vals)!r}")
    if kind == "mobilenet" and 1 in s.expand and len(s.expand) > 1:
        raise UsageError(f"{where}.expand mixes 1 (no expansion conv) with other ratios {list(s.expand)}",
                         hint="a stage either expands or not: give [1] or ratios > 1")
    if kind == "resnet" and (len(s.expand) > 1 or len(s.kernel) > 1 or s.kernel != (3,)):
        raise UsageError(f"{where}: a resnet stage chooses depth and width only (expand and kernel are fixed)")


def _stage(d: Any, i: int) -> Stage:
    if not isinstance(d, dict):
        raise UsageError(f"space.stages[{i}] must be a mapping, got {d!r}")
    unknown = set(d) - {"channels", "stride", *DECISIONS}
    if unknown:
        raise UsageError(f"space.stages[{i}]: unknown key(s) {', '.join(sorted(unknown))}",
                         hint=f"keys: channels, stride, {', '.join(DECISIONS)}")
    kw = {k: tuple(v) if isinstance(v, (list, tuple)) else (v,) for k, v in d.items() if k in DECISIONS}
    for k, v in kw.items():
        kw[k] = tuple(sorted(v, key=float)) if all(isinstance(x, (int, float)) for x in v) else v
    return Stage(channels=d.get("channels"), stride=d.get("stride", 1), **kw)


def from_dict(d: dict, name: str = "custom") -> Space:
    if not isinstance(d, dict):
        raise UsageError("a search space is a mapping (type, stem, stages, head)")
    unknown = set(d) - {"type", "name", "stem", "head", "divisor", "stages"}
    if unknown:
        raise UsageError(f"search space: unknown key(s) {', '.join(sorted(unknown))}",
                         hint="keys: type, stem, stages, head, divisor")
    stages = d.get("stages")
    if not isinstance(stages, list):
        raise UsageError(f"space.stages must be a list of stages, got {stages!r}")
    sp = Space(kind=d.get("type", "mobilenet"), stem=d.get("stem") or {}, head=d.get("head"),
               divisor=d.get("divisor", 8), name=str(d.get("name", name)),
               stages=tuple(_stage(s, i) for i, s in enumerate(stages)))
    sp.check()
    return sp


def builtin() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load(source: Any, overrides: list[str] | tuple[str, ...] = ()) -> Space:
    """A built-in name (mobilenet, resnet), a YAML file or a dict; ``overrides``: ``key=value`` texts
    (``stages.1.depth=[1,2]``, ``head.out=256``), the value read as YAML."""
    import yaml

    if isinstance(source, Space) and not overrides:
        return source
    if isinstance(source, Space):
        d, name = source.to_dict(), source.name
    elif isinstance(source, dict):
        d, name = copy.deepcopy(source), "custom"
    else:
        p = Path(str(source))
        if str(source) in builtin():
            p, name = SPACES_DIR / f"{source}.yaml", str(source)
        elif p.is_file():
            name = p.stem
        else:
            raise UsageError(f"search space {str(source)!r} is neither a built-in space nor a file",
                             hint=f"built-in: {', '.join(builtin())}; or a YAML file")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise UsageError(f"search space {p}: not valid YAML ({str(e).splitlines()[0]})") from None
    for o in overrides:
        _override(d, o)
    return from_dict(d, name=d.get("name", name) if isinstance(d, dict) else name)


def _override(d: dict, text: str) -> None:
    import yaml

    key, eq, value = text.partition("=")
    if not eq or not key:
        raise UsageError(f"space override {text!r} is not key=value", hint="e.g. stages.1.depth=[1,2]")
    parts, node = key.split("."), d
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) and p.isdigit() and int(p) < len(node) else \
            node.get(p) if isinstance(node, dict) else None
        if node is None:
            raise UsageError(f"space override {text!r}: {key!r} names nothing in the space")
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = yaml.safe_load(value)
    elif isinstance(node, dict):
        node[last] = yaml.safe_load(value)
    else:
        raise UsageError(f"space override {text!r}: {key!r} names nothing in the space")


def for_input(space: Space, side: int, designed_for: int = 28) -> Space:
    """The space sized for inputs of ``side`` pixels: every doubling over the side it was designed for
    adds a stride of 2, first at the stem, then at stride-1 stages from the first (at most 3)."""
    extra = max(0, min(3, round(math.log2(max(side, 1) / designed_for))))
    if extra == 0:
        return space
    stem = dict(space.stem, stride=2)
    stages, left = list(space.stages), extra - 1
    for i, s in enumerate(stages):
        if left and s.stride == 1:
            stages[i], left = dataclasses.replace(s, stride=2), left - 1
    return dataclasses.replace(space, stem=stem, stages=tuple(stages))
