"""Model specs: a zoo name, ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``."""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any

from torch import nn

from ..core.errors import ModelError, UsageError
from .zoo import ZOO


def create(spec: str, *, num_classes: int | None = None, in_channels: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a fresh, randomly initialised model from a spec."""
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"a model spec must be a non-empty string, got {spec!r}")
    if spec.startswith("torchvision:"):
        return _torchvision(spec.split(":", 1)[1], num_classes, in_channels, kwargs)
    if spec.startswith("timm:"):
        return _timm(spec.split(":", 1)[1], num_classes, in_channels, kwargs)
    if ":" in spec:
        return _user_factory(spec, num_classes, in_channels, kwargs)
    if spec not in ZOO:
        close = difflib.get_close_matches(spec, list(ZOO), n=3, cutoff=0.5)
        raise UsageError(
            f"unknown model {spec!r}",
            hint=(f"did you mean {', '.join(close)}? " if close else "")
            + "see `edgeslim models`; also torchvision:NAME, timm:NAME, package.module:factory or a checkpoint path",
        )
    args = dict(kwargs)
    if num_classes is not None:
        args["num_classes"] = num_classes
    if in_channels is not None:
        args["in_channels"] = in_channels
    return ZOO[spec].factory(**args)


def default_input_shape(spec: str, in_channels: int | None = None) -> tuple[int, int, int]:
    if spec in ZOO:
        c, h, w = ZOO[spec].input_shape
    elif spec.startswith("torchvision:") and "inception" in spec:
        c, h, w = 3, 299, 299
    else:
        c, h, w = 3, 224, 224
    return (in_channels or c, h, w)


def _torchvision(name: str, num_classes, in_channels, kwargs) -> nn.Module:
    try:
        import torchvision
    except ImportError:
        raise ModelError("torchvision is not installed", hint="pip install torchvision") from None
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        raise UsageError(f"unknown torchvision model {name!r}",
                         hint=f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()")
    args = dict(kwargs, weights=None)  # weights are never downloaded at run time
    if num_classes is not None:
        args["num_classes"] = num_classes
    model = torchvision.models.get_model(name, **args)
    if in_channels is not None and in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _timm(name: str, num_classes, in_channels, kwargs) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelError("timm is not installed", hint="pip install timm") from None
    args = dict(kwargs, pretrained=False)
    if num_classes is not None:
        args["num_classes"] = num_classes
    if in_channels is not None:
        args["in_chans"] = in_channels
    try:
        return timm.create_model(name, **args)
    except RuntimeError as e:
        raise UsageError(f"timm cannot build {name!r}: {e}") from None


def _user_factory(spec: str, num_classes, in_channels, kwargs) -> nn.Module:
    mod_name, _, fn_name = spec.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise UsageError(f"cannot import {mod_name!r} for model spec {spec!r}: {e}",
                         hint="the module must be importable (on PYTHONPATH); the form is package.module:factory") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise UsageError(f"{mod_name!r} has no callable {fn_name!r}")
    params = inspect.signature(fn).parameters
    args = dict(kwargs)
    if num_classes is not None and "num_classes" in params:
        args["num_classes"] = num_classes
    if in_channels is not None and "in_channels" in params:
        args["in_channels"] = in_channels
    model = fn(**args)
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            new = nn.Conv2d(in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                            m.dilation, m.groups if m.groups == 1 else in_channels, m.bias is not None, m.padding_mode)
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
            return
    raise ModelError("found no Conv2d to adapt to in_channels")
