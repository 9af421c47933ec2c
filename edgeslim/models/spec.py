"""Model specs: a zoo name, ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``.

``torchvision:NAME`` builds any torchvision classifier, and any detector or segmenter (the builders
of torchvision.models.detection / .segmentation), the latter wrapped to the interface of edgeslim's
own (edgeslim.models.torchvision_tasks); never with pretrained weights.

Trust: a spec read from a file (checkpoint sidecar, .esz metadata, recipe, report) goes through
:func:`create_from_file`, which builds only what edgeslim can build without importing user code
(zoo, torchvision, timm) from plain-data keyword arguments checked against the factory's
signature. ``package.module:factory`` is imported only when the caller names it (CLI argument or
API call), never because a file says so."""
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


_PLAIN = (str, int, float, bool, type(None))


def is_user_factory(spec: str) -> bool:
    """``package.module:factory`` (imports user code), as opposed to zoo / torchvision: / timm:."""
    return isinstance(spec, str) and ":" in spec and spec.split(":", 1)[0] not in ("torchvision", "timm")


def create_from_file(spec: Any, build: Any, *, source: str, caller_spec: str | None = None) -> nn.Module:
    """Build the architecture a file names. ``spec`` and ``build`` come from ``source`` (a file) and
    are not trusted: the spec must be a zoo name, torchvision:NAME or timm:NAME -- a
    package.module:factory is honoured only when it equals ``caller_spec``, the spec the caller
    passed directly -- and ``build`` must be plain data that the factory's signature accepts."""
    from ..core.errors import CheckpointError

    if not isinstance(spec, str) or not spec:
        raise CheckpointError(f"{source}: the architecture field 'spec' is {spec!r}, not a model name",
                              hint="the file is corrupt or was not written by edgeslim")
    if is_user_factory(spec) and spec != caller_spec:
        raise CheckpointError(
            f"{source} names the architecture {spec!r}, a Python factory; edgeslim never imports code "
            "because a file says so",
            hint=f"if you trust that module, pass the spec yourself: --spec {spec} (CLI) or spec={spec!r} (API)")
    if build is None:
        build = {}
    if not isinstance(build, dict) or not all(isinstance(k, str) for k in build):
        raise CheckpointError(f"{source}: the field 'build' must map argument names to values, got {build!r}")
    for key, value in build.items():
        if not _plain(value):
            raise CheckpointError(f"{source}: build argument {key!r} is not plain data ({type(value).__name__})",
                                  hint="build arguments may be numbers, strings, booleans, lists and dicts of them")
    _check_signature(spec, build, source)
    try:
        return create(spec, **build)
    except TypeError as e:  # a builder refusing an argument the file gave it
        raise CheckpointError(f"{source}: cannot build {spec} with {build}: {str(e).splitlines()[0]}") from None


def _plain(v: Any) -> bool:
    if isinstance(v, _PLAIN):
        return True
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def _check_signature(spec: str, build: dict, source: str) -> None:
    from ..core.errors import CheckpointError

    if spec in ZOO:
        fn = ZOO[spec].factory
    elif is_user_factory(spec):
        mod_name, _, fn_name = spec.partition(":")
        fn = getattr(importlib.import_module(mod_name), fn_name, None)  # the caller named this module
    else:
        return  # torchvision / timm builders take **kwargs: they validate their own arguments
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(build) - set(params))
    if unknown:
        raise CheckpointError(f"{source}: {spec} takes no argument {', '.join(map(repr, unknown))}",
                              hint=f"it takes: {', '.join(params) or 'none'}")


def default_input_shape(spec: str, in_channels: int | None = None) -> tuple[int, int, int]:
    if spec in ZOO:
        c, h, w = ZOO[spec].input_shape
    elif spec.startswith("torchvision:") and "320" in spec:  # ssdlite320 / fasterrcnn_*_320: their own size
        c, h, w = 3, 320, 320
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
    from . import torchvision_tasks

    task = torchvision_tasks.task_of_builder(name)
    if task is not None:  # a detector or segmenter: wrapped to edgeslim's interface for its task
        return torchvision_tasks.build(name, task, num_classes, in_channels, kwargs)
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise torchvision_tasks.unknown(name)
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
    try:
        model = fn(**args)
    except Exception as e:  # the caller's own factory failed: name it, one line
        raise ModelError(f"{spec} failed when called with {args or 'no arguments'}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}",
                         hint="a package.module:factory must build and return a torch.nn.Module") from None
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
