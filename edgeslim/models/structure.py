"""Record how a model's structure differs from the one its spec builds, and replay it.

Pruning and factorization change layer shapes or swap layers for small Sequentials. The sidecar
stores those differences as plain JSON (type name + constructor arguments), so a checkpoint loads
without the code that changed it and without unpickling anything.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..core.errors import CheckpointError

_TYPES: dict[str, tuple[type, Callable[[nn.Module], dict]]] = {}


def register_module_type(cls: type, init_args: Callable[[nn.Module], dict[str, Any]]) -> None:
    """Make ``cls`` recordable: ``init_args(module)`` returns JSON-able constructor kwargs."""
    _TYPES[cls.__name__] = (cls, init_args)


def _conv_args(m: nn.Module) -> dict:
    return dict(
        in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=list(m.kernel_size),
        stride=list(m.stride), padding=m.padding if isinstance(m.padding, str) else list(m.padding),
        dilation=list(m.dilation), groups=m.groups, bias=m.bias is not None, padding_mode=m.padding_mode,
    )


def _bn_args(m: nn.Module) -> dict:
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)


def _pool_args(m: nn.Module) -> dict:
    keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad", "return_indices")
    return {k: getattr(m, k) for k in keys if hasattr(m, k)}


for _cls in (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d):
    register_module_type(_cls, _conv_args)
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d):
    register_module_type(_cls, _bn_args)
for _cls in (nn.MaxPool2d, nn.AvgPool2d):
    register_module_type(_cls, _pool_args)
register_module_type(nn.Linear, lambda m: dict(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None))
register_module_type(nn.LayerNorm, lambda m: dict(normalized_shape=list(m.normalized_shape), eps=m.eps,
                                                  elementwise_affine=m.elementwise_affine, bias=m.bias is not None))
register_module_type(nn.GroupNorm, lambda m: dict(num_groups=m.num_groups, num_channels=m.num_channels, eps=m.eps, affine=m.affine))
register_module_type(nn.AdaptiveAvgPool2d, lambda m: dict(output_size=m.output_size))
register_module_type(nn.Flatten, lambda m: dict(start_dim=m.start_dim, end_dim=m.end_dim))
register_module_type(nn.Dropout, lambda m: dict(p=m.p))
register_module_type(nn.MultiheadAttention, lambda m: dict(
    embed_dim=m.embed_dim, num_heads=m.num_heads, dropout=m.dropout, bias=m.in_proj_bias is not None,
    add_bias_kv=m.bias_k is not None, kdim=m.kdim, vdim=m.vdim, batch_first=m.batch_first))
for _cls in (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.Tanh, nn.Identity):
    register_module_type(_cls, lambda m: {})

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def describe(module: nn.Module) -> dict[str, Any]:
    """A JSON description of ``module`` (recursively for containers)."""
    if isinstance(module, _CONTAINERS) and type(module) in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
        return {"type": type(module).__name__,
                "children": [[name, describe(child)] for name, child in module.named_children()]}
    entry = _TYPES.get(type(module).__name__)
    if entry is None or entry[0] is not type(module):
        raise CheckpointError(
            f"cannot record the structure of layer type {type(module).__name__}",
            hint="register it with edgeslim.models.structure.register_module_type(cls, init_args)",
        )
    return {"type": type(module).__name__, "args": entry[1](module)}


def build(desc: dict[str, Any]) -> nn.Module:
    kind = desc["type"]
    if kind in ("Sequential", "ModuleList", "ModuleDict"):
        children = [(name, build(d)) for name, d in desc["children"]]
        if kind == "ModuleDict":
            return nn.ModuleDict(dict(children))
        if kind == "ModuleList":
            return nn.ModuleList([c for _, c in children])
        seq = nn.Sequential()
        for name, c in children:
            seq.add_module(name, c)
        return seq
    if kind not in _TYPES:
        raise CheckpointError(f"checkpoint uses unknown layer type {kind!r}",
                              hint="import the package that registers it before loading")
    cls, _ = _TYPES[kind]
    args = {k: tuple(v) if isinstance(v, list) and k != "normalized_shape" else v for k, v in desc["args"].items()}
    return cls(**args)


def _leaf_signature(m: nn.Module) -> Any:
    entry = _TYPES.get(type(m).__name__)
    return entry[1](m) if entry and entry[0] is type(m) else None


_SCALARS = (int, float, bool)
ATTRS, PARAM = "#attrs", "#param:"  # keys of a module's changed scalar attributes / a free parameter's shape


def _own_changes(reference: nn.Module, actual: nn.Module, prefix: str) -> dict[str, Any]:
    """A custom module's own changes: scalar attributes (an attention's ``num_heads``/``head_dim``, a
    block's ``merge``) and the shapes of parameters it holds itself (class token, layer scale)."""
    out: dict[str, Any] = {}
    attrs = {k: v for k, v in vars(actual).items() if type(v) in _SCALARS and not k.startswith("_") and k != "training"
             and type(vars(reference).get(k)) is type(v) and vars(reference)[k] != v}
    if attrs:
        out[prefix + ATTRS] = attrs
    for k, p in actual._parameters.items():
        ref = reference._parameters.get(k)
        if p is not None and ref is not None and tuple(p.shape) != tuple(ref.shape):
            out[prefix + PARAM + k] = list(p.shape)
    return out


def diff(reference: nn.Module, actual: nn.Module, prefix: str = "") -> dict[str, Any]:
    """{qualified name: description} for every sub-module of ``actual`` that ``reference`` lacks or
    builds differently. Containers of the same type are compared child by child; other modules of
    the same type also record their own changed scalar attributes and parameter shapes."""
    out: dict[str, Any] = _own_changes(reference, actual, prefix)
    ref_children = dict(reference.named_children())
    for name, child in actual.named_children():
        path = f"{prefix}{name}"
        ref = ref_children.get(name)
        same_type = ref is not None and type(ref) is type(child)
        if not same_type:
            out[path] = describe(child)
        elif isinstance(child, _CONTAINERS) and len(child) != len(ref):
            out[path] = describe(child)
        elif type(child).__name__ in _TYPES and not isinstance(child, _CONTAINERS):
            if _leaf_signature(child) != _leaf_signature(ref):
                out[path] = describe(child)
        else:
            out.update(diff(ref, child, path + "."))
    for name in ref_children:
        if name not in actual._modules:
            out[f"{prefix}{name}"] = None
    return out


def _apply_own(model: nn.Module, path: str, value: Any) -> None:
    """A module's recorded scalar attributes / parameter shape: only attributes it already has, of
    the same type, and parameters it already holds (a sidecar never adds anything)."""
    import torch

    mod_path, _, what = path.partition("#")
    mod = model.get_submodule(mod_path.rstrip("."))
    if "#" + what == ATTRS:
        for k, v in dict(value).items():
            if type(v) not in _SCALARS or type(vars(mod).get(k)) is not type(v):
                raise CheckpointError(f"structure: {mod_path or 'the model'} has no {type(v).__name__} attribute {k!r}")
            setattr(mod, k, v)
        return
    name = ("#" + what)[len(PARAM):]
    if not ("#" + what).startswith(PARAM) or mod._parameters.get(name) is None:
        raise CheckpointError(f"structure: {mod_path or 'the model'} holds no parameter {name!r}")
    shape = [int(v) for v in value]
    mod._parameters[name] = nn.Parameter(torch.zeros(shape, dtype=mod._parameters[name].dtype))


def apply(model: nn.Module, changes: dict[str, Any]) -> nn.Module:
    """Replay ``diff`` output on a freshly built model (parents before children, then the modules'
    own attributes and parameter shapes)."""
    own = {p: v for p, v in changes.items() if "#" in p}
    changes = {p: v for p, v in changes.items() if "#" not in p}
    for path in sorted(changes, key=lambda p: p.count(".")):
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if changes[path] is None:
            del parent._modules[name]
        else:
            parent._modules[name] = build(changes[path])
    for path, value in own.items():
        _apply_own(model, path, value)
    return model
