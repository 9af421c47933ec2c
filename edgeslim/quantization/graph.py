"""Where the quantizers go: the model is traced with torch.fx and fake-quant modules are inserted
on the tensors ONNX Runtime can keep in int8.

ONNX Runtime fuses ``DQ -> Conv/Gemm -> Q`` into QLinearConv / QGemm, so a quantized layer needs
a quantizer on its input and on its output. The output quantizer goes after a following ReLU /
ReLU6 (ONNX Runtime folds those into the integer op, and the grid then starts at 0). Residual
additions whose inputs are all quantized get an output quantizer (QLinearAdd), and so do
pooling layers fed by a quantized tensor (max pooling and reshapes share their input's grid,
so ONNX Runtime can drop their Q/DQ pair). Models that torch.fx cannot trace fall back to
quantizing the inputs of Conv/Linear layers only; the report says so.

A submodule whose class sets ``float_region = True`` (a detector's box decoding and top-k selection,
``models.centernet.Postprocess``) is traced as one opaque call and stays float: nothing inside it is
quantized, and the outputs of quantized layers that reach only float regions (through slices, reshapes
and tuples) get no output quantizer, so the region reads them in float (``float_regions`` names them).
"""
from __future__ import annotations

import operator
import re
from typing import Any, Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .qmodules import FakeQuant, QConv2d, QLinear, QUANT_LAYERS

_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_RELU_FUNCS = {F.relu, torch.relu, F.relu6, torch.nn.functional.hardtanh}
_RELU_METHODS = {"relu", "relu_"}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_SAME_GRID_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.AdaptiveMaxPool2d)
_SAME_GRID_FUNCS = {torch.flatten, F.max_pool2d, F.dropout, torch.reshape}
_SAME_GRID_METHODS = {"view", "reshape", "flatten"}
_AVG_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_AVG_FUNCS = {F.avg_pool2d, F.adaptive_avg_pool2d}


def _mod(gm: nn.Module, node: torch.fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    try:
        return gm.get_submodule(node.target)
    except AttributeError:
        return None


def _is_relu(gm, node) -> bool:
    m = _mod(gm, node)
    if m is not None:
        return isinstance(m, _RELU_MODULES)
    return (node.op == "call_function" and node.target in _RELU_FUNCS) or \
        (node.op == "call_method" and node.target in _RELU_METHODS)


_MATMUL_FUNCS = {operator.matmul, torch.matmul, torch.bmm}


def _is_activation_matmul(node) -> bool:
    """A product of two computed tensors (attention's q @ k^T and weights @ v), not of a weight."""
    hit = (node.op == "call_function" and node.target in _MATMUL_FUNCS) or \
        (node.op == "call_method" and node.target in ("matmul", "bmm"))
    ins = node.args[:2]
    return hit and len(ins) == 2 and all(isinstance(a, torch.fx.Node) and a.op != "get_attr" for a in ins)


_FLOAT_KINDS = {"LayerNorm": ((nn.LayerNorm,), {F.layer_norm}, ()),
                "Softmax": ((nn.Softmax,), {F.softmax, torch.softmax}, ("softmax",)),
                "GELU": ((nn.GELU,), {F.gelu}, ())}


def float_ops(gm: torch.fx.GraphModule) -> list[str]:
    """The operator kinds of the traced model that stay float in every int8 file (no runtime has
    integer kernels for them): LayerNorm, Softmax, GELU."""
    found = set()
    for node in gm.graph.nodes:
        m = _mod(gm, node)
        for kind, (mods, funcs, methods) in _FLOAT_KINDS.items():
            if (m is not None and isinstance(m, mods)) or (node.op == "call_function" and node.target in funcs) \
                    or (node.op == "call_method" and node.target in methods):
                found.add(kind)
    return sorted(found)


def _is_add(node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCS) or \
        (node.op == "call_method" and node.target in ("add", "add_"))


def _same_grid(gm, node) -> bool:
    m = _mod(gm, node)
    if m is not None:
        return isinstance(m, _SAME_GRID_MODULES)
    return (node.op == "call_function" and node.target in _SAME_GRID_FUNCS) or \
        (node.op == "call_method" and node.target in _SAME_GRID_METHODS)


def _is_avgpool(gm, node) -> bool:
    m = _mod(gm, node)
    if m is not None:
        return isinstance(m, _AVG_MODULES)
    return node.op == "call_function" and node.target in _AVG_FUNCS


_TRANSPARENT_METHODS = {"view", "reshape", "flatten", "contiguous"}


def _only_float_regions(gm, node: torch.fx.Node) -> bool:
    """Whether every use of ``node`` ends in a float region, through slices and reshapes."""
    users = list(node.users)
    if not users:
        return False
    for u in users:
        m = _mod(gm, u)
        if m is not None and is_float_region(m):
            continue
        packs = isinstance(u.target, type) and issubclass(u.target, tuple)  # a NamedTuple of head maps
        see_through = (u.op == "call_function" and (u.target is operator.getitem or packs)) or \
            (u.op == "call_method" and u.target in _TRANSPARENT_METHODS)
        if not (see_through and _only_float_regions(gm, u)):
            return False
    return True


def _is_tensor(node: Any) -> bool:
    return isinstance(node, torch.fx.Node) and hasattr(node.meta.get("tensor_meta"), "shape")


def _follow_relu(gm, node):
    while len(node.users) == 1:
        user = next(iter(node.users))
        if not _is_relu(gm, user) or user.args[0] is not node:
            break
        node = user
    return node


def strip_identity(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Drop calls to nn.Identity / nn.Dropout (folded BatchNorms leave Identity between conv and ReLU)."""
    for node in list(gm.graph.nodes):
        m = _mod(gm, node)
        if isinstance(m, (nn.Identity, nn.Dropout)) and len(node.args) == 1 and not node.kwargs:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


class _Tracer(torch.fx.Tracer):
    """fx's tracer, with float regions as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return is_float_region(m) or super().is_leaf_module(m, qualname)


def is_float_region(m: nn.Module) -> bool:
    return bool(getattr(type(m), "float_region", False))


def float_regions(model: nn.Module) -> list[str]:
    """The names of the submodules that stay float (outermost only)."""
    out: list[str] = []
    for name, m in model.named_modules():
        if is_float_region(m) and not any(name.startswith(o + ".") for o in out):
            out.append(name or type(m).__name__)
    return out


def symbolic_trace(model: nn.Module) -> torch.fx.GraphModule:
    tracer = _Tracer()
    graph = tracer.trace(model)
    name = model.__class__.__name__ if isinstance(model, nn.Module) else model.__name__
    return strip_identity(torch.fx.GraphModule(tracer.root, graph, name))


def trace(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule | None:
    """fx GraphModule with tensor shapes in node.meta, or None when the model does not trace."""
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = symbolic_trace(model)
        ShapeProp(gm).propagate(example)
    except Exception:  # noqa: BLE001 - any failure means "fall back to module-level insertion"
        return None
    return gm


def swap_layers(model: nn.Module, bits_of: dict[str, int], make_weight_fq: Callable[[str, int], FakeQuant]) -> list[str]:
    """Replace the named Conv2d / Linear layers by QConv2d / QLinear (in place). Returns the names."""
    done = []
    for name, bits in bits_of.items():
        m = model.get_submodule(name)
        if isinstance(m, QUANT_LAYERS):
            continue
        if type(m) is nn.Conv2d:
            q = QConv2d.from_float(m, make_weight_fq(name, bits))
        elif type(m) is nn.Linear:
            q = QLinear.from_float(m, make_weight_fq(name, bits))
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, q)
        done.append(name)
    return done


def insert_activation_quantizers(gm: torch.fx.GraphModule, make_act_fq: Callable[[str, int], FakeQuant],
                                 act_bits_of: dict[str, int]) -> list[dict]:
    """Insert FakeQuant modules on the tensors listed in the module docstring. Returns a plan
    [{"tensor", "quantizer", "why"}]. ``act_bits_of`` maps quantized layer -> activation bits."""
    graph = gm.graph
    qnode_of: dict[torch.fx.Node, str] = {}  # tensor node -> quantizer module name
    plan: list[tuple[torch.fx.Node, str, str]] = []
    counter = [0]

    def new_fq(node, bits, why):
        name = f"_aq{counter[0]}_{re.sub(r'[^0-9a-zA-Z_]', '_', node.name)}"
        counter[0] += 1
        gm.add_submodule(name, make_act_fq(name, bits))
        qnode_of[node] = name
        plan.append((node, name, why))

    def share_fq(node, src_name, why):
        qnode_of[node] = src_name
        plan.append((node, src_name, why))

    def ensure(node, bits, why):
        if not isinstance(node, torch.fx.Node) or node in qnode_of:
            return
        new_fq(node, bits, why)

    for node in list(graph.nodes):
        m = _mod(gm, node)
        if isinstance(m, QUANT_LAYERS):
            bits = act_bits_of.get(node.target, 8)
            if bits is None:
                continue
            ensure(node.args[0], bits, f"input of {node.target}")
            out = _follow_relu(gm, node)
            if not _only_float_regions(gm, out):
                ensure(out, bits, f"output of {node.target}")
        elif _is_activation_matmul(node) and _is_tensor(node):
            bits = max((b for b in act_bits_of.values() if b), default=8)
            for a in node.args[:2]:  # both operands on int8 grids: ONNX Runtime runs the product in integers
                ensure(a, bits, "operand of an activation matmul (attention)")
        elif _is_add(node):
            ins = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
            if len(ins) == 2 and all(a in qnode_of for a in ins) and _is_tensor(node):
                bits = max(gm.get_submodule(qnode_of[a]).bits for a in ins)
                ensure(_follow_relu(gm, node), bits, "output of residual add")
        elif node.args and isinstance(node.args[0], torch.fx.Node) and node.args[0] in qnode_of \
                and _is_tensor(node):
            src = qnode_of[node.args[0]]
            if _same_grid(gm, node):
                share_fq(node, src, "same grid as its input (max pool / reshape)")
            elif _is_avgpool(gm, node):
                ensure(node, gm.get_submodule(src).bits, "output of average pooling")

    for node, name, _ in plan:
        with graph.inserting_after(node):
            q = graph.call_module(name, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q)
    graph.lint()
    gm.recompile()
    # tell each quantized layer which quantizer feeds it (for its int32 bias grid)
    for node in graph.nodes:
        m = _mod(gm, node)
        if isinstance(m, QUANT_LAYERS):
            src = node.args[0]
            fq = _mod(gm, src) if isinstance(src, torch.fx.Node) else None
            m.link_input(fq if isinstance(fq, FakeQuant) else None)
    return [{"tensor": n.name, "quantizer": name, "why": why} for n, name, why in plan]


class _InputQuant(nn.Module):
    """Fallback for models fx cannot trace: quantize the input inside the layer."""

    def __init__(self, layer: nn.Module, fq: FakeQuant):
        super().__init__()
        self.fq = fq
        self.layer = layer
        layer.link_input(fq)

    def forward(self, x):
        return self.layer(self.fq(x))


def insert_input_quantizers_fallback(model: nn.Module, names: list[str],
                                     make_act_fq: Callable[[str, int], FakeQuant],
                                     act_bits_of: dict[str, int]) -> list[dict]:
    plan = []
    for name in names:
        bits = act_bits_of.get(name, 8)
        if bits is None:
            continue
        layer = model.get_submodule(name)
        wrapped = _InputQuant(layer, make_act_fq(name, bits))
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, wrapped)
        plan.append({"tensor": f"{name}:input", "quantizer": f"{name}.fq", "why": f"input of {name} (untraced)"})
    return plan


def fake_quants(model: nn.Module) -> list[tuple[str, FakeQuant]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, FakeQuant)]


def activation_quants(model: nn.Module) -> list[tuple[str, FakeQuant]]:
    return [(n, m) for n, m in fake_quants(model) if not n.endswith("weight_fq")]


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]
