"""Recipes: YAML in, steps run in order, an out DIR with the deployable artifact and the report."""
from __future__ import annotations

import json

import pytest
import torch

from edgeslim.core.errors import UsageError
from edgeslim.search import load_recipe, load_space, parse_budget
from edgeslim.search.recipe import Finetune

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from search_toys import SPEC  # noqa: E402


def test_unknown_key_names_the_key_and_the_valid_ones():
    with pytest.raises(UsageError) as e:
        load_recipe({"steps": [{"type": "channel_prune", "ratoi": 0.5}]})
    assert "'ratoi'" in e.value.message and "step 1" in e.value.message
    assert "ratio" in e.value.hint and "importance" in e.value.hint


def test_unknown_top_level_key_and_type():
    with pytest.raises(UsageError, match="'stpes'"):
        load_recipe({"stpes": []})
    with pytest.raises(UsageError, match="unknown config type 'channel_prun'"):
        load_recipe("steps:\n  - {type: channel_prun}\n")


def test_quantization_must_be_last():
    with pytest.raises(UsageError, match="must be the last step"):
        load_recipe({"steps": [{"type": "ptq"}, {"type": "finetune"}]})


def test_yaml_round_trip(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("steps:\n  - {type: channel_prune, ratio: 0.5}\n  - {type: finetune, epochs: 1, max_batches: 2}\n"
                 "  - {type: ptq, bits: 8, mixed_precision: [[fc, null]]}\nseed: 3\n")
    steps, extra = load_recipe(p)
    assert [s.kind for s in steps] == ["channel_prune", "finetune", "ptq"]
    assert isinstance(steps[1], Finetune) and steps[1].max_batches == 2
    assert steps[2].mixed_precision == (("fc", None),)
    assert extra["seed"] == 3
    from edgeslim.search import recipe_yaml

    again, _ = load_recipe(recipe_yaml(steps, seed=3))
    assert again == steps


def test_compress_writes_the_out_dir(toy_model, toy_data, tmp_path):
    import edgeslim

    recipe = {"steps": [{"type": "channel_prune", "ratio": 0.5}, {"type": "finetune", "epochs": 1, "max_batches": 2},
                        {"type": "ptq", "bits": 8}]}
    small, report = edgeslim.compress(toy_model, recipe, data=toy_data, out=tmp_path / "c", spec=SPEC,
                                      build={"num_classes": 4, "width": 16}, runs=5)
    d = json.loads((tmp_path / "c" / "report.json").read_text())
    assert d["command"] == "compress" and d["baseline"]["artifact"] == "baseline.onnx"
    assert d["result"]["size_bytes"] == (tmp_path / "c" / "model.onnx").stat().st_size
    assert d["ratios"]["size"] > 2  # half the channels and int8
    assert d["ratios"]["macs"] > 2
    assert not (tmp_path / "c" / "checkpoint").exists()  # int8 is deployed as ONNX only
    conv2 = next(r for r in d["details"]["layers"] if r["layer"] == "conv2")
    assert conv2["out"] == 32 and conv2["out_after"] == 16 and conv2["weight_bits"] == 8
    assert (tmp_path / "c" / "report.md").read_text().startswith("# edgeslim compress")


def test_compress_float_result_writes_a_loadable_checkpoint(toy_model, toy_data, tmp_path):
    import edgeslim
    from edgeslim import models

    out = tmp_path / "f"
    edgeslim.compress(toy_model, {"steps": [{"type": "channel_prune", "ratio": 0.25}, {"type": "reparam"}]},
                      data=toy_data, out=out, spec=SPEC, build={"num_classes": 4, "width": 16}, runs=5)
    loaded, meta = models.load(out, spec=SPEC)  # a factory spec loads only when the caller names it
    assert loaded.conv2.out_channels == 24


def test_space_overrides_and_refusals():
    s = load_space({"prune_ratio": [0.5], "bits": 8, "finetune_batches": 7})
    assert s.prune_ratio == (0.5,) and s.bits == (8,) and s.finetune_batches == 7
    with pytest.raises(UsageError, match="'prune_ratios'"):
        load_space({"prune_ratios": [0.5]})
    with pytest.raises(UsageError, match="'float', 8 and 4"):
        load_space({"bits": ["float", 8, 2]})


def test_four_bit_policy_builds_w4a8_with_adaround_and_per_layer_overrides():
    from edgeslim.quantization import PTQ
    from edgeslim.search.space import build_steps, describe

    space = load_space({"bits": ["float", 8, 4]})
    params = {"prune_ratio": 0.0, "bits": "4", "bits:conv1": "8", "bits:fc": "float", "finetune_epochs": 0}
    (ptq,) = build_steps(params, space)
    assert isinstance(ptq, PTQ) and ptq.w_bits == 4 and ptq.a_bits == 8 and ptq.adaround
    assert dict(ptq.mixed_precision) == {"conv1": 8, "fc": None}
    assert describe(params, space) == "w4a8 (int8: conv1) (float: fc)"
    (ptq8,) = build_steps({**params, "bits": "8", "bits:conv1": "8", "bits:fc": "8"}, space)
    assert ptq8.w_bits == 8 and not ptq8.adaround and not ptq8.mixed_precision


def test_finetune_rate_and_distill_alpha_reach_the_recipe():
    from edgeslim.distillation import KD
    from edgeslim.search.recipe import Finetune
    from edgeslim.search.space import build_steps

    params = {"prune_ratio": 0.0, "bits": "float", "finetune_epochs": 2}
    (kd, _) = build_steps({**params, "distill": True}, load_space({"finetune_lr": 0.02, "distill_alpha": 0.3}))
    assert isinstance(kd, KD) and kd.lr == 0.02 and kd.alpha == 0.3 and kd.epochs == 2
    (ft, _) = build_steps({**params, "distill": False}, load_space({"finetune_lr": 0.02}))
    assert isinstance(ft, Finetune) and ft.lr == 0.02 and ft.optimizer == kd.optimizer == "sgd"
    adam = load_space({"finetune_lr": 0.001, "finetune_optimizer": "adam"})
    assert [s.optimizer for s in (build_steps({**params, "distill": d}, adam)[0] for d in (True, False))] == ["adam"] * 2
    for bad in ({"distill_alpha": 1.5}, {"distill_alpha": True}, {"finetune_lr": 0}, {"finetune_lr": "fast"},
                {"finetune_optimizer": "rmsprop"}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            load_space(bad)


@pytest.mark.parametrize("text,secs", [("30m", 1800), ("90s", 90), ("1h30m", 5400), ("2", 120), (45, 45)])
def test_parse_budget(text, secs):
    assert parse_budget(text) == secs


def test_parse_budget_refuses_nonsense():
    with pytest.raises(UsageError):
        parse_budget("soon")


def test_lowrank_rank_is_a_choice_asked_only_with_lowrank():
    import optuna

    from edgeslim.lowrank import Tucker
    from edgeslim.search.space import build_steps, describe, suggest
    from edgeslim.testing.models import TinyConvNet

    space = load_space({"lowrank": [True], "lowrank_energy": [0.8, 0.99], "prune_ratio": [0.0], "block_ratio": [0.0], "bits": ["float"],
                        "finetune_epochs": [0]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        params = suggest(study.ask(), space, TinyConvNet())
        tucker = next(s for s in build_steps(params, space) if isinstance(s, Tucker))
        assert tucker.energy == params["lowrank_energy"]
        assert describe(params, space).startswith(f"tucker {params['lowrank_energy']:g}")
        seen.add(params["lowrank_energy"])
    assert seen == {0.8, 0.99}
    off = load_space({"lowrank": [False], "lowrank_energy": [0.8, 0.99]})
    assert "lowrank_energy" not in suggest(optuna.create_study().ask(), off, TinyConvNet())
    assert load_space({"lowrank_energy": 0.9}).lowrank_energy == (0.9,)  # a scalar means fixed
    with pytest.raises(UsageError, match="lowrank_energy"):
        load_space({"lowrank_energy": [1.5]})


def test_depth_policy_removes_the_scans_first_blocks_and_drops_their_layer_ratios():
    from edgeslim.pruning import BlockPrune, ChannelPrune
    from edgeslim.search.space import build_steps, describe

    space = load_space({"block_ratio": [0.0, 0.5, 1.0], "bits": ["float"], "allocation": ["sensitivity"]})
    order = ["layer1.1", "layer3.2", "layer2.1"]
    params = {"block_ratio": 0.5, "prune_ratio": 0.3, "bits": "float", "finetune_epochs": 0}
    ratios = {"conv1": 0.2, "layer1.1.conv1": 0.5, "layer3.2.conv1": 0.4, "layer3.1.conv1": 0.3}
    steps = build_steps(params, space, layer_ratios=ratios, block_order=order)
    assert steps[0] == BlockPrune(blocks=("layer1.1", "layer3.2"))  # round(0.5 * 3) = 2, in the scan's order
    assert isinstance(steps[1], ChannelPrune)
    assert dict(steps[1].layer_ratios) == {"conv1": 0.2, r"layer3\.1\.conv1": 0.3}  # none inside a removed block
    assert describe(params, space, order).startswith("drop 2/3 blocks · prune 0.30")
    assert not any(isinstance(s, BlockPrune) for s in build_steps({**params, "block_ratio": 0.0}, space, block_order=order))
    with pytest.raises(UsageError, match="block_ratio"):
        load_space({"block_ratio": [1.5]})


@pytest.mark.parametrize("spec,parsed", [(0.25, (0.25, None)), ("0.25ms", (0.25, None)), ("4x", (None, 4.0)),
                                         (" 2X", (None, 2.0))])
def test_latency_spec(spec, parsed):
    from edgeslim.search.config import latency_spec

    assert latency_spec(spec) == parsed


@pytest.mark.parametrize("spec", ["fast", "0x", "-1", "3y", "nanms"])
def test_latency_spec_refuses_nonsense(spec):
    from edgeslim.search.config import latency_spec

    with pytest.raises(UsageError, match="latency limit"):
        latency_spec(spec)


def test_the_report_records_the_batchnorm_re_estimate_of_each_fine_tune(toy_model, toy_data, tmp_path):
    import copy

    import edgeslim
    from edgeslim.testing.bn import set_bn_momentum

    slow_bn = set_bn_momentum(copy.deepcopy(toy_model), 0.01)  # as torchvision's MobileNetV3
    recipe = {"steps": [{"type": "channel_prune", "ratio": 0.25}, {"type": "finetune", "epochs": 1, "max_batches": 2}]}
    edgeslim.compress(slow_bn, recipe, data=toy_data, out=tmp_path / "c", runs=2)
    steps = json.loads((tmp_path / "c" / "report.json").read_text())["details"]["steps"]
    bn = steps[1]["bn_recalibration"]
    assert bn["fits"] == 1 and bn["re_estimated"] == 1 and bn["batches"] > 0 and bn["layers"] == 2
    assert "bn_recalibration" not in steps[0]  # pruning alone trained nothing here


def test_recipes_carry_a_format_version():
    from edgeslim.search.recipe import READS_VERSIONS, RECIPE_KEYS, recipe_dict

    steps, extra = load_recipe({"steps": [{"type": "channel_prune", "ratio": 0.5}], "seed": 2})
    assert "version" in RECIPE_KEYS and extra == {"seed": 2}  # a file without a version is version 1
    d = recipe_dict(steps, seed=2)
    assert d["version"] == 1 and list(d)[:2] == ["version", "steps"]
    assert load_recipe(d)[0] == steps
    for bad in (2, "1", True, None):
        with pytest.raises(UsageError, match=f"recipe version {bad!r} ") as e:
            load_recipe({"version": bad, "steps": [{"type": "channel_prune"}]})
        assert ", ".join(map(str, READS_VERSIONS)) in e.value.message


def test_final_steps_are_declared_by_the_configs():
    from edgeslim.core.config import Config
    from edgeslim.quantization import PTQ
    from edgeslim.search.recipe import check_order, register_all

    register_all()
    assert PTQ.final and not Finetune.final and not Config.final
    for kind in ("qat", "dynamic", "half", "lowbit"):
        with pytest.raises(UsageError, match=f"step 1 \\({kind}\\) must be the last step"):
            load_recipe({"steps": [{"type": kind}, {"type": "reparam"}]})
    check_order([Finetune(), PTQ()])


def test_transformer_choices_are_asked_only_of_transformers_and_become_steps():
    import optuna

    from edgeslim.core.registry import Context, run
    from edgeslim.pruning import HeadPrune, TokenMerge
    from edgeslim.search.space import build_steps, describe, suggest
    from edgeslim.testing.models import TinyConvNet, tiny_vit

    space = load_space({"head_ratio": [0.0, 0.5], "mlp_ratio": [0.5], "tokens_merged": [0, 4]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cnn = suggest(study.ask(), space, TinyConvNet())
    assert not {"head_ratio", "mlp_ratio", "tokens_merged"} & set(cnn)
    assert not any(isinstance(s, (HeadPrune, TokenMerge)) for s in build_steps(cnn, space))
    seen = set()
    for _ in range(24):
        p = suggest(study.ask(), space, tiny_vit())
        assert p["mlp_ratio"] == 0.5  # one choice: recorded, not asked
        steps = build_steps(p, space)
        heads = next(s for s in steps if isinstance(s, HeadPrune))
        assert (heads.heads, heads.mlp) == (p["head_ratio"], 0.5)
        merge = [s for s in steps if isinstance(s, TokenMerge)]
        assert [m.tokens for m in merge] == ([p["tokens_merged"]] if p["tokens_merged"] else [])
        assert ("tome" in describe(p, space)) == bool(p["tokens_merged"])
        seen.add((p["head_ratio"], p["tokens_merged"]))
        model = tiny_vit().eval()
        for s in [s for s in steps if isinstance(s, (HeadPrune, TokenMerge))]:
            model, _ = run(model, s, Context(input_shape=(1, 8, 8), progress=False))
        assert model(torch.randn(1, 1, 8, 8)).shape == (1, 4)
    assert len(seen) == 4
    with pytest.raises(UsageError, match="tokens_merged"):
        load_space({"tokens_merged": [-1]})
