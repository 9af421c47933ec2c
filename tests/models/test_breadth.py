"""Breadth (slow): the smallest model of every torchvision classification family and one of every timm
family in edgeslim.testing.breadth goes through channel pruning at 0.3 (MACs >= 1.2x fewer), int8 PTQ
and ONNX export with parity. ``make test-all`` runs them; benchmarks/breadth.py runs every model."""
from __future__ import annotations

import pytest

from edgeslim.testing.breadth import TORCHVISION_FAMILIES, check_model, family_of, passed, timm_cases, torchvision_cases


def _cases():
    picks = {f"torchvision:{n}" for n in TORCHVISION_FAMILIES.values()}
    out = [c for c in torchvision_cases() if c[0] in picks]
    try:
        import timm  # noqa: F401  (a test dependency; without it only torchvision's families run)
        out += timm_cases()
    except ImportError:
        pass
    return out


def test_every_torchvision_classifier_has_a_family_case():
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    assert [n for n in names if family_of(n) is None] == []
    assert all(n in names for n in TORCHVISION_FAMILIES.values())


@pytest.mark.slow
@pytest.mark.parametrize("spec, size, kw, kind", _cases(), ids=lambda v: v if isinstance(v, str) and ":" in v else "")
def test_prune_int8_export(spec, size, kw, kind, tmp_path):
    if spec == "torchvision:maxvit_t":
        pytest.skip("tracing maxvit_t at 224 takes Torch-Pruning over 15 minutes here (see benchmarks/RESULTS.md)")
    row: dict = {}
    check_model(row, spec, size, kw, tmp_path)
    row["ok"] = True
    assert passed(row), row
