"""Search spaces: loading, overrides, bad input, the network an arch names, sizing for the input."""
from __future__ import annotations

import random

import pytest

from edgeslim.core.errors import UsageError
from edgeslim.nas import space as S
from nas_toys import TINY_MB, TINY_RES


def test_builtin_spaces_load_and_hold_the_zoo_models():
    mb, res = S.load("mobilenet"), S.load("resnet")
    assert mb.kind == "mobilenet" and res.kind == "resnet" and "mobilenet" in S.builtin()
    # mobilenetv2_tiny: depths 1,2,2,2,1 at width 1.0, expansion 6, kernel 3
    tiny = {n: {"depth": [1, 2, 2, 2, 1][int(n[1])], "width": 1.0, "expand": 6, "kernel": 3}[n.split(".")[1]]
            for n, _ in mb.decisions()}
    blocks = mb.net(tiny)["blocks"]
    assert [b["cout"] for b in blocks] == [16, 24, 24, 32, 32, 64, 64, 96]
    assert [b["hidden"] for b in blocks] == [16, 96, 144, 144, 192, 192, 384, 384]
    assert [b["res"] for b in blocks] == [True, False, True, False, True, False, True, False]


def test_arch_choices_are_checked():
    sp = S.from_dict(TINY_MB)
    with pytest.raises(UsageError, match="not in the"):
        sp.full({"s9.depth": 1})
    with pytest.raises(UsageError, match="not one of"):
        sp.full({"s1.depth": 7})
    full = sp.full({"s1.depth": 1})
    assert full[1]["depth"] == 1 and full[2]["depth"] == 2  # missing choices take the largest


def test_sample_mutate_largest_smallest():
    sp = S.from_dict(TINY_MB)
    rng = random.Random(0)
    names = dict(sp.decisions())
    for _ in range(20):
        a = sp.sample(rng)
        assert set(a) == set(names) and all(a[n] in names[n] for n in a)
        m = sp.mutate(a, rng)
        assert m != a and all(m[n] in names[n] for n in m)
    assert sp.size() == 2 ** 8
    assert all(sp.largest()[n] == max(c) and sp.smallest()[n] == min(c) for n, c in sp.decisions())


def test_resnet_stem_takes_the_first_stage_width():
    sp = S.from_dict(TINY_RES)
    net = sp.net({"s0.width": 0.5, "s0.depth": 2, "s1.width": 1.0, "s1.depth": 1})
    assert net["stem"]["out"] == 4 and net["blocks"][0]["cin"] == 4 and not net["blocks"][0]["proj"]
    assert net["blocks"][2]["proj"] and net["blocks"][2]["stride"] == 2


@pytest.mark.parametrize("change, match", [
    ({"type": "vgg"}, "space type"),
    ({"stages": []}, "at least one stage"),
    ({"stages": [{"channels": 8, "stride": 3, "depth": [1]}]}, "stride 1 or 2"),
    ({"stages": [{"channels": 8, "depth": [1], "kernel": [4]}]}, "odd positive"),
    ({"stages": [{"channels": 8, "depth": [1, 1]}]}, "distinct"),
    ({"stages": [{"channels": 8, "depth": [1], "expand": [1, 4]}]}, "mixes 1"),
    ({"stages": [{"channels": 8, "depth": [1], "colour": [1]}]}, "unknown key"),
    ({"stages": [{"channels": 24, "depth": [1], "width": [0.95, 1.0]}]}, "equal channel counts"),
    ({"stem": {"out": 0}}, "stem"),
    ({"bogus": 1}, "unknown key"),
])
def test_bad_spaces_are_one_clear_error(change, match):
    with pytest.raises(UsageError, match=match):
        S.from_dict({**TINY_MB, **change})


def test_overrides_and_files(tmp_path):
    import yaml

    sp = S.load("mobilenet", ["stages.1.depth=[1,2]", "head.out=256"])
    assert sp.stages[1].depth == (1, 2) and sp.head["out"] == 256
    with pytest.raises(UsageError, match="names nothing"):
        S.load("mobilenet", ["stages.9.depth=[1]"])
    with pytest.raises(UsageError, match="key=value"):
        S.load("mobilenet", ["depth"])
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(TINY_MB))
    assert S.load(str(p)).name == "s"
    with pytest.raises(UsageError, match="neither a built-in"):
        S.load(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("stages: [")
    with pytest.raises(UsageError, match="not valid YAML"):
        S.load(str(tmp_path / "bad.yaml"))


def test_sized_for_the_input():
    sp = S.load("mobilenet")
    assert S.for_input(sp, 28) is sp
    big = S.for_input(sp, 224)  # 8x: stem and two stride-1 stages get a stride of 2
    assert big.stem["stride"] == 2 and [s.stride for s in big.stages] == [2, 2, 2, 2, 2]


def test_the_mobilenet_space_s_largest_subnet_has_the_macs_its_file_states():
    """spaces/mobilenet.yaml and docs/nas.md state 2.2x mobilenetv2_tiny's MACs (18.7M against 8.4M)."""
    from edgeslim import models
    from edgeslim.measure import count_macs
    from edgeslim.nas.supernet import Supernet, extract

    sp = S.load("mobilenet")
    largest = count_macs(extract(Supernet(sp), sp.largest()), (1, 1, 28, 28))[0]
    tiny = count_macs(models.create("mobilenetv2_tiny"), (1, 1, 28, 28))[0]
    assert round(largest / 1e6, 1) == 18.7 and round(tiny / 1e6, 1) == 8.4 and round(largest / tiny, 1) == 2.2
