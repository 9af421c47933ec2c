"""registry.run (what every verb calls), the exporter registry, and what configs declare about themselves."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import edgeslim
from edgeslim.core.config import Config
from edgeslim.core.errors import UsageError
from edgeslim.core.registry import Context, export_for, register, register_export, run
from edgeslim.testing.models import TinyConvNet


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Zero(Config):  # no kind: stays out of the YAML registry
    pass


@register(_Zero)
def _zero(model, config, ctx):
    with torch.no_grad():
        model.fc.weight.zero_()
    ctx.details["zeroed"] = "fc"
    return model


def test_run_copies_unless_inplace_and_returns_the_details():
    model = TinyConvNet()
    w = model.fc.weight.detach().clone()
    out, details = run(model, _Zero())
    assert out is not model and details == {"zeroed": "fc"}
    assert torch.equal(model.fc.weight, w) and not out.fc.weight.any()
    ctx = Context()
    same, _ = run(model, _Zero(), ctx, inplace=True)
    assert same is model and not model.fc.weight.any() and ctx.details == {"zeroed": "fc"}


def test_run_names_what_the_verb_expects():
    from edgeslim.pruning import ChannelPrune
    from edgeslim.quantization import PTQ

    with pytest.raises(UsageError, match="expected a ChannelPrune, HeadPrune, TokenMerge, BlockPrune or SparsePrune config, got PTQ"):
        edgeslim.prune(TinyConvNet(), PTQ())
    with pytest.raises(UsageError, match="expected a Reparam config, got dict"):
        edgeslim.reparam(TinyConvNet().eval(), {"type": "reparam"})
    with pytest.raises(UsageError, match="model must be a torch.nn.Module, got str"):
        edgeslim.prune("resnet20", ChannelPrune())
    with pytest.raises(UsageError, match="no handler registered"):
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class _Nobody(Config):
            pass

        run(TinyConvNet(), _Nobody())


def test_exporters_are_registered_by_config_type():
    from edgeslim.quantization import PTQ
    from edgeslim.quantization.ptq import export_int8
    from edgeslim.quantization.qat import QAT

    assert export_for(PTQ()) is export_int8 and export_for(QAT()) is export_int8

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class _Format(_Zero):
        pass

    with pytest.raises(UsageError, match="no onnxruntime exporter registered for _Format"):
        export_for(_Format())
    register_export(_Format)(lambda model, path, example, config, *, loader=None: {"path": str(path)})
    assert export_for(_Format())(None, "x.onnx", None, _Format()) == {"path": "x.onnx"}
    with pytest.raises(UsageError, match="no litert exporter registered for _Format"):  # per runtime
        export_for(_Format(), runtime="litert")


def test_what_configs_declare():
    from edgeslim.distillation import KD
    from edgeslim.lowrank import Tucker
    from edgeslim.pruning import BlockPrune, ChannelPrune, SparsePrune
    from edgeslim.quantization import PTQ
    from edgeslim.quantization.qat import QAT
    from edgeslim.train import Finetune

    z = _Zero()
    assert not z.final and z.untrained() is z and z.split_training() == (z, None)
    assert ChannelPrune(ratio=0.3).untrained() == ChannelPrune(ratio=0.3, bn_batches=0)
    assert BlockPrune(finetune_epochs=2).untrained() == BlockPrune(bn_batches=0)
    assert SparsePrune(finetune_epochs=2).untrained() == SparsePrune()
    assert Tucker(energy=0.9).untrained() == Tucker(energy=0.9, bn_batches=0)
    assert PTQ(adaround=True, calib_batches=8).untrained() == PTQ(adaround=False, calib_batches=1)
    assert QAT(bits=4).untrained() == QAT(bits=4).ptq_config().replace(calib_batches=1)
    assert Finetune().untrained() is None and KD().untrained() is None
    assert PTQ.final and QAT.final and not ChannelPrune.final and not Finetune.final
    # one-shot fine-tuning splits off; interleaved training stays
    head, tail = ChannelPrune(ratio=0.5, finetune_epochs=1, lr=0.02, max_batches=3).split_training()
    assert head == ChannelPrune(ratio=0.5) and tail == Finetune(epochs=1, lr=0.02, max_batches=3)
    head, tail = BlockPrune(blocks=("b",), finetune_epochs=2, distill=True).split_training()
    assert head == BlockPrune(blocks=("b",)) and tail == KD(epochs=2)
    head, tail = Tucker(finetune_epochs=1, finetune_distill=True).split_training()
    assert head == Tucker() and tail == KD(epochs=1, lr=0.01)
    for keeps in (ChannelPrune(schedule="agp", finetune_epochs=1), SparsePrune(finetune_epochs=1), PTQ()):
        assert keeps.split_training() == (keeps, None)
