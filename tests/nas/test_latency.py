"""The latency lookup table: its entries are what subnets contain, predict / expected agree, the cache is
reused only for the same settings, and the prediction is close to a whole-subnet measurement."""
from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import tempfile

import pytest
import torch

from edgeslim.core.errors import EdgeslimError, UsageError
from edgeslim.nas import latency as L
from edgeslim.nas import space as S
from edgeslim.nas.supernet import Supernet, extract
from nas_toys import TINY_MB, TINY_RES

SHAPE = (1, 8, 8)
# measured for real: 2 stages, 2 choices each where they vary (16 blocks, 24 entries with the probes)
LUT_MB = {"type": "mobilenet", "stem": {"out": 8}, "head": {"out": 16}, "divisor": 4,
          "stages": [{"channels": 8, "stride": 1, "depth": [1, 2], "width": [0.5, 1.0], "expand": [1]},
                     {"channels": 16, "stride": 2, "depth": [1, 2], "width": [0.5, 1.0], "expand": [2, 3]}]}
LUT_SHAPE = (1, 16, 16)
TIMING = {"runs": 10, "warmup": 2, "rounds": 2}


def all_archs(sp):
    names = [n for n, _ in sp.decisions()]
    return [dict(zip(names, vals)) for vals in itertools.product(*(c for _, c in sp.decisions()))]


def subnet_keys(sp, arch, shape, num_classes=10):
    """The keys of the pieces ``arch`` is made of, walked here from ``Space.net`` on its own."""
    net = sp.net(arch)
    c, h, w = shape
    st = net["stem"]
    keys = [L.key("stem", {"in": c, "out": st["out"], "kernel": st["kernel"], "stride": st["stride"],
                           "act": st["act"]}, (c, h, w))]
    for b in net["blocks"]:
        keys.append(L.key("block", b, (b["cin"], h, w)))
        h, w = math.ceil(h / b["stride"]), math.ceil(w / b["stride"])
    last = net["blocks"][-1]["cout"]
    head = {"cin": last, "head": net["head"]["out"] if net["head"] else None, "act": st["act"], "classes": num_classes}
    return keys + [L.key("head", head, (last, h, w))]


def fake_table(sp, shape=SHAPE, seed=0):
    """A table of made-up figures (distinct, some pieces below their probe) to check the arithmetic."""
    rng = random.Random(seed)
    raw = {p.key(): rng.uniform(0.002, 0.02) if p.kind == "overhead" else rng.uniform(0.0, 0.3)
           for p in L.pieces(sp, shape)}
    return L.LatencyTable(sp, shape, raw, runtime="onnxruntime", runtime_version="test", threads=1)


def one_hot(sp, arch):
    return {n: torch.tensor([float(v == arch[n]) for v in c]) for n, c in sp.decisions()}


def by_hand(table, arch):
    """predict(arch) computed here: each piece's median less the probe of its input, plus the overhead."""
    total = 0.0
    for k in subnet_keys(table.space, arch, table.input_shape, table.num_classes):
        inp = json.loads(k)[2]
        total += max(0.0, table.raw[k] - table.raw[L.key("overhead", {"op": "relu"}, inp)])
    return total + table.raw[L.key("overhead", {"op": "relu"}, table.input_shape)]


# -- enumeration and arithmetic (no measuring) ----------------------------------------------------------
@pytest.mark.parametrize("spec", [TINY_MB, TINY_RES, LUT_MB])
def test_the_entries_are_exactly_the_pieces_of_the_subnets(spec):
    sp = S.from_dict(spec)
    ps = L.pieces(sp, SHAPE)
    used = {k for a in all_archs(sp) for k in subnet_keys(sp, a, SHAPE)}
    assert {p.key() for p in ps if p.kind != "overhead"} == used
    probes = {tuple(p.input) for p in ps if p.kind == "overhead"}
    assert probes == {tuple(json.loads(k)[2]) for k in used}
    assert len({p.key() for p in ps}) == len(ps)


@pytest.mark.parametrize("name", ["mobilenet", "resnet"])
def test_builtin_spaces_subnets_have_entries(name):
    sp = S.load(name)
    keys = {p.key() for p in L.pieces(sp, (1, 28, 28))}
    rng = random.Random(0)
    for a in [sp.largest(), sp.smallest()] + [sp.sample(rng) for _ in range(40)]:
        missing = [k for k in subnet_keys(sp, a, (1, 28, 28)) if k not in keys]
        assert not missing, missing[:2]


@pytest.mark.parametrize("spec", [TINY_MB, TINY_RES])
def test_predict_is_the_sum_and_one_hot_expected_equals_it(spec):
    sp = S.from_dict(spec)
    table = fake_table(sp)
    for a in all_archs(sp):
        pred = table.predict(a)
        assert pred == pytest.approx(by_hand(table, a), rel=1e-12)
        assert float(table.expected(one_hot(sp, a))) == pred


@pytest.mark.parametrize("spec", [TINY_MB, TINY_RES])
def test_expected_is_the_mean_over_subnets_and_has_gradients(spec):
    sp = S.from_dict(spec)
    table = fake_table(sp, seed=1)
    g = torch.Generator().manual_seed(0)
    logits = {n: torch.randn(len(c), generator=g, dtype=torch.float64, requires_grad=True) for n, c in sp.decisions()}
    probs = {n: torch.softmax(v, 0) for n, v in logits.items()}
    mean = 0.0
    for a in all_archs(sp):
        p = math.prod(float(probs[n].detach()[list(c).index(a[n])]) for n, c in sp.decisions())
        mean += p * table.predict(a)
    e = table.expected(probs)
    assert float(e.detach()) == pytest.approx(mean, rel=1e-9)
    e.backward()
    for n, v in logits.items():
        assert v.grad is not None and v.grad.abs().sum() > 0, n


def test_expected_refuses_probabilities_that_do_not_fit():
    sp = S.from_dict(TINY_MB)
    table = fake_table(sp)
    probs = one_hot(sp, sp.largest())
    with pytest.raises(UsageError, match="s1.width"):
        table.expected({k: v for k, v in probs.items() if k != "s1.width"})
    with pytest.raises(UsageError, match="shape"):
        table.expected(dict(probs, **{"s1.width": torch.ones(3) / 3}))


def test_check_reports_each_error_and_their_median():
    sp = S.from_dict(TINY_MB)
    table = fake_table(sp)
    archs = [sp.largest(), sp.smallest(), sp.sample(random.Random(3))]
    errors = [0.1, -0.3, 0.05]
    res = L.check(table, [(a, table.predict(a) / (1 + e)) for a, e in zip(archs, errors)])
    assert [r["rel_error"] for r in res["finalists"]] == pytest.approx(errors)
    assert [r["predicted_ms"] for r in res["finalists"]] == [table.predict(a) for a in archs]
    assert res["median_abs_rel_error"] == pytest.approx(0.1)
    with pytest.raises(UsageError):
        L.check(table, [])
    with pytest.raises(UsageError, match="positive"):
        L.check(table, [(archs[0], 0.0)])


def test_save_load_and_bad_tables(tmp_path):
    sp = S.from_dict(TINY_RES)
    table = fake_table(sp)
    path = table.save(tmp_path / "lut.json")
    back = L.LatencyTable.load(path)
    assert back.settings() == table.settings() and back.overhead_ms == table.overhead_ms
    for a in all_archs(sp):
        assert back.predict(a) == table.predict(a)
    d = json.loads(path.read_text())
    d["entries"] = d["entries"][1:]
    (tmp_path / "short.json").write_text(json.dumps(d))
    with pytest.raises(UsageError, match="lacks 1 of"):
        L.LatencyTable.load(tmp_path / "short.json")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(EdgeslimError, match="not an edgeslim latency table"):
        L.LatencyTable.load(tmp_path / "bad.json")
    with pytest.raises(UsageError, match="input shape"):
        L.pieces(sp, (8, 8))


# -- measured -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache = tmp_path_factory.mktemp("lut") / "lut.json"
    lines: list[str] = []
    table = L.build(S.from_dict(LUT_MB), LUT_SHAPE, cache=cache, log=lines.append, **TIMING)
    return table, cache, lines


def test_build_measures_every_entry_and_saves_it(built):
    table, cache, lines = built
    assert table.measured == len(table) == len(L.pieces(table.space, LUT_SHAPE))
    assert all(ms > 0 for ms in table.raw.values())
    assert table.runtime == "onnxruntime" and table.runtime_version.startswith("onnxruntime ")
    assert any(f"{len(table)}/{len(table)} measured" in ln for ln in lines)
    back = L.LatencyTable.load(cache)
    assert back.raw == table.raw


def test_a_second_build_reuses_the_cache(built, monkeypatch):
    table, cache, _ = built
    calls = []
    monkeypatch.setattr(L.Timer, "medians", lambda self, models, more=None: calls.append(len(models)))
    again = L.build(table.space, LUT_SHAPE, cache=cache, log=lambda m: None, **TIMING)
    assert calls == [] and again.measured == 0
    assert again.predict(table.space.largest()) == table.predict(table.space.largest())


class Measured(Exception):
    pass


@pytest.mark.parametrize("change", [{"threads": 2}, {"runtime_version": "onnxruntime 0.0.1"},
                                    {"input_shape": [1, 20, 20]}, {"runtime": "openvino"}])
def test_a_cache_of_other_settings_is_not_reused(built, tmp_path, monkeypatch, change):
    table, cache, _ = built
    other = tmp_path / "lut.json"
    other.write_text(json.dumps(dict(json.loads(cache.read_text()), **change)))

    def medians(self, models, more=None):
        raise Measured(len(models))
    monkeypatch.setattr(L.Timer, "medians", medians)
    lines: list[str] = []
    with pytest.raises(Measured):
        L.build(table.space, LUT_SHAPE, cache=other, log=lines.append, **TIMING)
    assert any("not reused" in ln for ln in lines)


def test_the_prediction_is_near_the_whole_subnet(built):
    table, _, _ = built
    sp = table.space
    a = sp.largest()
    whole = L.measure_whole(extract(Supernet(sp), a), LUT_SHAPE, "onnxruntime", threads=1, runs=20)
    assert whole / 3 < table.predict(a) < whole * 3, (table.predict(a), whole)


def test_openvino_builds_its_own_table_and_cleans_up(built, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    _, cache, _ = built
    shared = tmp_path / "lut.json"
    shutil.copy(cache, shared)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    one = S.from_dict({"type": "mobilenet", "stem": {"out": 8}, "head": None, "divisor": 4,
                       "stages": [{"channels": 8, "stride": 2, "depth": [1], "width": [0.5, 1.0], "expand": [2]}]})
    table = L.build(one, LUT_SHAPE, runtime="openvino", cache=shared, log=lambda m: None, **TIMING)
    assert table.measured == len(table) and table.runtime_version.lower().startswith("openvino")
    assert all(ms > 0 for ms in table.raw.values())
    assert list(scratch.iterdir()) == []  # the exports went to a temporary directory that is gone
    assert L.LatencyTable.load(shared).runtime == "openvino"
