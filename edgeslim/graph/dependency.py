"""Channel-dependency groups: which channels must be removed together.

Removing output channel ``i`` of a conv also removes input channel ``i`` of every
layer that reads it, the matching BatchNorm entries, the same channel of every
tensor added to it in a residual sum, the right slice of a concatenation, and
so on. We ask Torch-Pruning's dependency graph for these couplings (it traces the
autograd graph of one forward pass) and expose them as plain edgeslim objects:

    graph = build_graph(model, torch.randn(1, 3, 32, 32))
    for g in graph.groups():          # ChannelGroup: root name, size, members
        ...
    graph.remove(g, [0, 3, 5])        # physically removes those channels

Torch-Pruning's own types never leave this module.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import warnings
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..core.errors import ModelError, UsageError
from . import attention

# Layer types whose parameters Torch-Pruning knows how to slice. Modules holding
# parameters of any other type are "custom": we cannot tell which of their
# weight dimensions follow the channels.
SUPPORTED_TYPES: tuple[type, ...] = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.PReLU,
    nn.Embedding,
    nn.MultiheadAttention,
)


@dataclasses.dataclass
class Member:
    """One layer touched when a group's channels are removed."""

    name: str
    module: Any  # nn.Module, or nn.Parameter for a free parameter
    role: str  # "out": its output channels/features go; "in": its inputs go
    idxs: list[int]  # channel indices in this layer's own numbering
    root_idxs: list[int]  # the same channels in the group's numbering (0..size-1)


@dataclasses.dataclass
class ChannelGroup:
    """A set of channels that can only be removed together."""

    root: str  # name of the layer whose output channels define the group
    size: int  # number of channels
    members: list[Member]
    channel_groups: int = 1  # >1: grouped conv / attention heads; prune the same index in each
    frozen: str | None = None  # why this group must not be pruned (None = prunable)
    _tp_root: Any = dataclasses.field(default=None, repr=False)
    _tp_fn: Any = dataclasses.field(default=None, repr=False)
    _attention: Any = dataclasses.field(default=None, repr=False)  # the fused-qkv attention it cuts

    @property
    def prunable(self) -> bool:
        return self.frozen is None

    @property
    def unit(self) -> int:
        """Channels per channel-group: pruning picks among these and repeats."""
        return self.size // self.channel_groups

    def layers(self, role: str | None = None) -> list[str]:
        return [m.name for m in self.members if role is None or m.role == role]

    def expand(self, unit_idxs: Iterable[int]) -> list[int]:
        """Unit indices -> channel indices, repeated in every channel group."""
        u = self.unit
        return sorted(int(i) + g * u for g in range(self.channel_groups) for i in unit_idxs)


@dataclasses.dataclass
class _Untraceable:
    module: nn.Module
    size: int
    error: str


def _all_groups(dg, root_types):
    """Torch-Pruning's groups, one per root layer not already in another's (``get_all_groups``), but
    a root whose group its index mapping cannot follow is an ``_Untraceable`` instead of the end of
    every group."""
    seen: set[int] = set()
    for m in list(dg.module2node.keys()):
        if m in dg.IGNORED_LAYERS_IN_TRACING or not isinstance(m, tuple(root_types)) or id(m) in seen:
            continue
        pruner = dg.get_pruner_of_module(m)
        size = pruner.get_out_channels(m) if pruner is not None else None
        if size is None:
            continue
        try:
            group = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(size)))
        except Exception as e:  # noqa: BLE001 - the library's index mapping gave up on this group
            seen.add(id(m))
            yield _Untraceable(m, size, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}")
            continue
        for dep, _ in group:
            if dg.is_out_channel_pruning_fn(dep.handler):
                seen.add(id(dep.target.module))
        yield group


def _tp():
    import torch_pruning as tp  # imported lazily: it is slow to import

    _tolerant_index_mapping(tp)
    return tp


def _is_supported(m: nn.Module) -> bool:
    return isinstance(m, SUPPORTED_TYPES)


def custom_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters of a layer type we cannot slice."""
    out = []
    for name, m in model.named_modules():
        if _is_supported(m):
            continue
        own = [p for p in m._parameters.values() if p is not None]
        if own:
            out.append((name or "<model>", m))
    return out


def _type_matches(m: nn.Module, type_names: Sequence[str]) -> bool:
    cls = type(m)
    full = f"{cls.__module__}.{cls.__qualname__}"
    return any(t in (cls.__name__, full) for t in type_names)


def excluded_modules(
    model: nn.Module, patterns: Sequence[str] = (), types: Sequence[str] = ()
) -> set[str]:
    """Names matched by exclude regexes (and their sub-modules) or type names."""
    names = [n for n, _ in model.named_modules() if n]
    out: set[str] = set()
    for p in patterns:
        try:
            rx = re.compile(p)
        except re.error as e:
            raise UsageError(f"bad exclude pattern {p!r}: {e}") from None
        hit = [n for n in names if rx.fullmatch(n)]
        if not hit:
            import difflib

            close = difflib.get_close_matches(p, names, n=3)
            raise UsageError(
                f"exclude pattern {p!r} matches no layer",
                hint=f"did you mean {', '.join(close)}?" if close else "layer names look like 'layer1.0.conv1'",
            )
        for h in hit:
            out.update(n for n in names if n == h or n.startswith(h + "."))
    for n, m in model.named_modules():
        if n and types and _type_matches(m, types):
            out.update(x for x in names if x == n or x.startswith(n + "."))
    return out


class ChannelGraph:
    """The channel couplings of one model, from one traced forward pass."""

    def __init__(self, model: nn.Module, example_inputs: Any, *, exclude: Iterable[str] | Mapping[str, str] = ()):
        self.model = model
        # layer name -> why its output channels are kept ("" for a user's exclusion)
        self.exclude = dict(exclude) if isinstance(exclude, Mapping) else dict.fromkeys(exclude, "")
        self._names = {m: n for n, m in model.named_modules()}
        # parameters a layer holds outside the layer types above (ConvNeXt's layer scale, a ViT's class
        # token and position embedding): Torch-Pruning slices them along their last non-singleton
        # dimension with the channels they meet; those of excluded layers keep every group whole
        custom = custom_layers(model)
        self._custom_params = {id(p) for n, m in custom if self._is_excluded(n)
                               for p in m._parameters.values() if p is not None}
        self._dg, self._heads = _trace(model, example_inputs)

    def _is_excluded(self, name: str) -> bool:
        return name in self.exclude or any(name.startswith(e + ".") for e in self.exclude)

    # -- groups ---------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        tp = _tp()
        dg = self._dg
        out = []
        for g in _all_groups(dg, (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)):
            if isinstance(g, _Untraceable):
                name = self._names.get(g.module, "?")
                out.append(ChannelGroup(root=name, size=g.size, members=[Member(name, g.module, "out", [], [])],
                                        frozen=f"Torch-Pruning cannot follow its channels ({g.error})"))
                continue
            root_dep = g[0].dep
            root_mod = root_dep.target.module
            root_fn = root_dep.handler
            members: list[Member] = []
            frozen = None
            ch_groups = 1
            for item in g:
                dep, idxs = item.dep, list(item.idxs)
                root_idxs = list(item.root_idxs) if item.root_idxs is not None else idxs
                target = dep.target.module
                ttype = dep.target.type
                if ttype == tp.ops.OPTYPE.OUTPUT:
                    frozen = frozen or "feeds the model output (classifier head)"
                    continue
                if ttype == tp.ops.OPTYPE.PARAMETER:
                    if id(target) in self._custom_params:
                        frozen = frozen or "reaches the parameters of an excluded layer"
                    name = dg._param_to_name.get(target, "<parameter>")
                    members.append(Member(name, target, "out", idxs, root_idxs))
                    continue
                if not isinstance(target, nn.Module) or target not in self._names:
                    continue  # concat / split / reshape bookkeeping ops
                name = self._names[target]
                role = "out" if dg.is_out_channel_pruning_fn(dep.handler) else "in"
                if isinstance(target, tp.ops.TORCH_CONV) and target.groups == target.out_channels \
                        and target.out_channels > 1:
                    role = "out"  # depthwise: in and out channels go together
                elif isinstance(target, tp.ops.TORCH_CONV) and target.groups > 1:
                    ch_groups = max(ch_groups, target.groups)
                if isinstance(target, nn.MultiheadAttention):
                    ch_groups = max(ch_groups, target.num_heads)
                if role == "out" and target in self._heads:
                    frozen = frozen or f"{name!r} produces the model output (classifier head)"
                if role == "out" and self._is_excluded(name):
                    frozen = frozen or self.exclude.get(name) or f"layer {name!r} is excluded"
                members.append(Member(name, target, role, idxs, root_idxs))
            size = dg.get_out_channels(root_mod)
            if size is None:
                continue
            attn = attention.attention_of(self.model, self._names.get(root_mod, ""), root_mod)
            if attn is not None:  # a fused q/k/v projection: the same dims go from every head of q, k and v
                ch_groups = 3 * attn.num_heads
                members, why = attention.members(attn, self._names[root_mod], members, Member)
                frozen = frozen or why
            if size % ch_groups:
                frozen = frozen or f"{size} channels do not split into {ch_groups} groups"
                ch_groups = 1
            out.append(ChannelGroup(
                root=self._names.get(root_mod, "?"), size=size, members=members,
                channel_groups=ch_groups, frozen=frozen, _tp_root=root_mod, _tp_fn=root_fn, _attention=attn,
            ))
        return out

    # -- surgery -------------------------------------------------------------
    def remove(self, group: ChannelGroup, channel_idxs: Sequence[int]) -> None:
        """Physically remove ``channel_idxs`` (group numbering) from every member."""
        if group.frozen:
            raise UsageError(f"channels of {group.root!r} cannot be removed: {group.frozen}")
        idxs = sorted({int(i) for i in channel_idxs})
        if not idxs:
            return
        if len(idxs) >= group.size:
            raise UsageError(f"removing all {group.size} channels of {group.root!r} would disconnect the model")
        if group._attention is not None:
            attention.remove(group._attention, idxs)
            return
        try:
            tp_group = self._dg.get_pruning_group(group._tp_root, group._tp_fn, idxs)
            with _quiet():
                tp_group.prune()
        except Exception as e:  # noqa: BLE001 - the library's surgery failed part-way: the model is spoilt
            raise ModelError(f"cannot remove channels of {group.root!r}: {type(e).__name__}: {str(e).splitlines()[0]}",
                             hint=f"exclude it (--exclude '{re.escape(group.root)}') and prune again") from e


_MAPPERS = ("update_concat_index_mapping", "update_split_index_mapping", "update_reshape_index_mapping",
            "update_unbind_index_mapping", "update_expand_index_mapping", "update_slice_index_mapping")


def _tolerant_index_mapping(tp) -> None:
    """Torch-Pruning maps channel indices through each concat / split / reshape it traced (when it
    builds the graph and again for every group); where it cannot count a node's channels (a channel
    shuffle reads as a reshape to 0 channels; deep residual chains exceed its inference depth) it
    divides by zero or adds None and the whole model fails. Such a node is left unmapped instead: the
    channels through it are taken as unchanged, and the trial surgery (edgeslim.graph.probe) keeps
    whole any group whose removal then breaks the model. Installed once, on first use."""
    im = tp.dependency.index_mapping
    if getattr(im, "_edgeslim_tolerant", False):
        return

    def tolerant(fn):
        def run(graph, node):
            try:
                return fn(graph, node)
            except (ZeroDivisionError, TypeError):
                return None
        return run

    for n in _MAPPERS:
        if hasattr(im, n):
            setattr(im, n, tolerant(getattr(im, n)))
    im._edgeslim_tolerant = True


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _trace(model: nn.Module, example_inputs: Any):
    tp = _tp()
    was_training = model.training
    inputs = example_inputs if isinstance(example_inputs, (tuple, list, dict)) else (example_inputs,)
    produced: dict[int, nn.Module] = {}

    def _hook(mod, _inp, output):
        for t in _flatten(output):
            if isinstance(t, torch.Tensor):
                produced[id(t)] = mod

    hooks = [m.register_forward_hook(_hook) for m in model.modules() if isinstance(m, SUPPORTED_TYPES)]
    try:
        with torch.enable_grad(), _quiet():
            try:
                out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
            finally:
                for h in hooks:
                    h.remove()
            leaves = [t for t in _flatten(out) if isinstance(t, torch.Tensor)]
            heads = {produced[id(t)] for t in leaves if id(t) in produced}
            if not leaves:
                raise ModelError(
                    "cannot trace the model: its forward returns no tensor",
                    hint="structured pruning needs a forward that returns a tensor (or tuple of tensors)",
                )
            if not any(t.grad_fn is not None for t in leaves):
                raise ModelError(
                    "cannot trace the model: its output does not depend on its weights through autograd",
                    hint="remove torch.no_grad()/.detach()/numpy round-trips from forward(), "
                    "or use unstructured pruning (--granularity fine), which needs no tracing",
                )
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - anything the tracer trips on
        raise ModelError(
            f"cannot trace the model to find channel dependencies: {type(e).__name__}: {e}",
            hint="check that model(example_input) runs with the given input shape; unstructured "
            "pruning (--granularity fine) does not need tracing",
        ) from e
    finally:
        model.train(was_training)
    return dg, heads


def _flatten(x: Any) -> list:
    if isinstance(x, (list, tuple)):
        return [y for v in x for y in _flatten(v)]
    if isinstance(x, dict):
        return [y for v in x.values() for y in _flatten(v)]
    return [x]


def build_graph(model: nn.Module, example_inputs: Any, *, exclude: Iterable[str] | Mapping[str, str] = ()) -> ChannelGraph:
    """Trace ``model`` once and return its channel groups. ``exclude``: module names whose output
    channels are kept (or a mapping of those names to why)."""
    return ChannelGraph(model, example_inputs, exclude=exclude)
