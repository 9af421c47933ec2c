"""Export a fake-quantized model to ONNX QDQ and check what ONNX Runtime makes of it.

The quantizers export themselves (see qmodules): activations as QuantizeLinear ->
DequantizeLinear with the calibrated scale / zero point, weights as int8 initializers ->
DequantizeLinear (per-channel, axis 0), biases as int32 -> DequantizeLinear. ONNX Runtime's graph
optimiser fuses ``DQ -> Conv -> Q`` into QLinearConv (and Gemm / MatMul / Add likewise);
``integer_ops`` dumps the optimised graph and lists which layers still run in float.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..core.errors import ExportError
from ..core.io import atomic_path
from ..runtimes.onnxruntime import integer_ops  # noqa: F401 (re-exported: which kernels run in integer)
from .qmodules import exporting, register_torchscript_symbolics, translation_table



def export_qdq(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, opset: int = 18,
               dynamic_batch: bool = True) -> dict[str, Any]:
    """Write the QDQ ONNX file of a model prepared by PTQ / QAT. Returns {"path", "size_bytes"}."""
    model = copy.deepcopy(model).cpu().eval()
    from .qmodules import QUANT_LAYERS, FakeQuant

    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, FakeQuant):
            m.unlearn()  # learned (LSQ) scales become constants: ONNX Runtime fuses only constant Q/DQ
    for m in model.modules():
        if isinstance(m, QUANT_LAYERS):
            m.freeze_for_export()
    path = Path(path)
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    x = example[:1].cpu()
    with atomic_path(path) as tmp:
        errors = []
        with exporting(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # TorchScript exporter first (fast), dynamo with a translation table as the fallback
            try:
                register_torchscript_symbolics(17)
                axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(model, (x,), str(tmp), dynamo=False, input_names=["input"], output_names=["output"],
                                  dynamic_axes=axes, opset_version=17, do_constant_folding=False)
            except Exception as e:  # noqa: BLE001 - the exporters raise many types
                errors.append(f"torchscript: {_first_line(e)}")
                try:  # two images: torch.export specializes a dimension of size 1 (the batch would be fixed at 1)
                    xd = x.expand(2, *x.shape[1:]).contiguous() if dynamic_batch else x
                    prog = torch.onnx.export(model, (xd,), dynamo=True, input_names=["input"],
                                             output_names=["output"], dynamic_shapes=shapes, opset_version=opset,
                                             custom_translation_table=translation_table())
                    prog.save(str(tmp), external_data=False)
                except Exception as e2:  # noqa: BLE001
                    errors.append(f"dynamo: {_first_line(e2)}")
                    raise ExportError("cannot export the quantized model to ONNX: " + "; ".join(errors),
                                      hint="a layer may use an operator ONNX lacks; exclude it from quantization") from None
        _tidy(tmp)
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"the QDQ graph fails the ONNX checker: {str(e).splitlines()[0]}") from None
    return {"path": str(path), "size_bytes": path.stat().st_size}


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _tidy(path: Path) -> None:
    """Drop float initializers nothing uses any more (the exporter keeps float weights as buffers)
    and store the graph compactly (see ``compact``)."""
    m = compact(onnx.load(str(path)))
    packed = pack_int4(m)
    if packed is not m and _runtime_loads(packed):  # a runtime without INT4 Cast keeps the int8 file
        m = packed
    onnx.save(m, str(path))


def _runtime_loads(m: onnx.ModelProto) -> bool:
    from ..runtimes.onnxruntime import loads

    return loads(m)  # any failure means: keep the int8 containers


def compact(m: onnx.ModelProto) -> onnx.ModelProto:
    """Store a QDQ graph without the exporter's overhead, in place; what it computes is unchanged.

    - Constant nodes, and Cast / Identity nodes of constants, become (plain) initializers;
    - identical initializers are stored once;
    - all-zero zero points of weight and bias DequantizeLinear are dropped (the default is 0);
    - an all-zero int32 bias is dropped with its DequantizeLinear (Conv / Gemm without bias);
    - a bias scale equal to input scale x weight scale (as ONNX Runtime's QLinearConv requires)
      is computed by a Mul of the two, which ONNX Runtime constant-folds before it fuses the
      integer kernels, instead of being stored a second time per output channel;
    - node names and the exporter's metadata are dropped, internal tensor and small constant
      names shortened; weight initializers keep their names (they say which layer they are).
    """
    g = m.graph
    consts, keep_nodes = _fold_constants(g)
    consumers: dict[str, list] = {}
    for n in keep_nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    _trim_zero_points(keep_nodes, consts, consumers)
    nodes = _share_bias_scales(keep_nodes, consts, consumers)
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    order, alias = _distinct(consts, used)
    rename = _renamer(g, consts, order, alias)
    from onnx import numpy_helper

    inits = [numpy_helper.from_array(consts[name], rename(name)) for name in order]
    for n in nodes:
        n.name = ""
        n.doc_string = ""
        del n.metadata_props[:]
        for k, x in enumerate(n.input):
            n.input[k] = rename(x)
        for k, x in enumerate(n.output):
            n.output[k] = rename(x)
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]
    return m


def _fold_constants(g) -> tuple[dict[str, np.ndarray], list]:
    """Initializers, Constant nodes and Cast / Identity nodes of constants as one dict of arrays; the
    other nodes."""
    from onnx import helper, numpy_helper

    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep_nodes = []
    for n in g.node:
        if n.op_type == "Constant" and len(n.output) == 1 and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            continue
        if n.op_type in ("Cast", "Identity") and len(n.input) == 1 and n.input[0] in consts:
            a = consts[n.input[0]]
            if n.op_type == "Cast":
                to = next(at.i for at in n.attribute if at.name == "to")
                a = a.astype(helper.tensor_dtype_to_np_dtype(to))
            consts[n.output[0]] = a
            continue
        keep_nodes.append(n)
    return consts, keep_nodes


def _trim_zero_points(nodes: list, consts: dict, consumers: dict) -> None:
    """Drop all-zero zero points where 0 is the default, and the axis of scalar scales (in place)."""
    for n in nodes:
        if n.op_type == "DequantizeLinear" and len(n.input) == 3 and n.input[0] in consts \
                and n.input[2] in consts and not np.any(consts[n.input[2]]):
            # bias (int32) and Conv weight (int8) zero points 0 are the default; ONNX Runtime's
            # QGemm fusion wants the weight's zero point spelled out, so Gemm weights keep theirs
            a = consts[n.input[0]]
            users = consumers.get(n.output[0], [])
            if a.dtype == np.int32 or (a.dtype == np.int8 and users and all(u.op_type == "Conv" for u in users)):
                del n.input[2]
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1 \
                and n.input[1] in consts and consts[n.input[1]].ndim == 0:
            kept = [a for a in n.attribute if a.name != "axis"]  # axis means nothing for a scalar scale
            del n.attribute[:]
            n.attribute.extend(kept)


def _share_bias_scales(keep_nodes: list, consts: dict, consumers: dict) -> list:
    """The nodes with zero biases dropped and bias scales equal to input x weight scale computed by a
    Mul of the two (inserted before the bias's DequantizeLinear)."""
    from onnx import helper

    producer = {o: n for n in keep_nodes for o in n.output}
    drop: set[int] = set()
    extra: list = []
    for n in keep_nodes:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 3 or not n.input[2]:
            continue
        bdq = producer.get(n.input[2])
        if bdq is None or bdq.op_type != "DequantizeLinear" or bdq.input[0] not in consts:
            continue
        sole = len(consumers.get(bdq.output[0], [])) == 1
        if not np.any(consts[bdq.input[0]]) and len(n.input) == 3 and sole:
            del n.input[2]  # a zero bias: the layer without one computes the same
            drop.add(id(bdq))
            continue
        xdq, wdq = producer.get(n.input[0]), producer.get(n.input[1])
        if xdq is None or wdq is None or xdq.op_type != "DequantizeLinear" or wdq.op_type != "DequantizeLinear":
            continue
        xs, ws, bs = xdq.input[1], wdq.input[1], bdq.input[1]
        if not all(k in consts for k in (xs, ws, bs)):
            continue
        prod = (consts[xs].astype(np.float32) * consts[ws].astype(np.float32)).astype(np.float32)
        if prod.shape == consts[bs].shape and np.array_equal(prod, consts[bs]):
            out = f"__bias_scale{len(extra)}"
            extra.append((bdq, helper.make_node("Mul", [xs, ws], [out])))
            bdq.input[1] = out
    nodes = []
    for n in keep_nodes:
        if id(n) in drop:
            continue
        nodes += [mul for b, mul in extra if b is n] + [n]
    return nodes


def _distinct(consts: dict, used: set) -> tuple[list[str], dict[str, str]]:
    """The used initializers, each distinct array once (its first name), and the aliases of the rest."""
    canon: dict[tuple, str] = {}
    alias: dict[str, str] = {}
    order = []
    for name, a in consts.items():
        if name not in used:
            continue
        key = (a.dtype.str, a.shape, a.tobytes())
        if key in canon:
            alias[name] = canon[key]
            continue
        canon[key] = name
        order.append(name)
    return order, alias


def _renamer(g, consts: dict, order: list[str], alias: dict[str, str]):
    """``rename(x)``: short names for internal tensors and small constants; graph inputs / outputs and
    weight initializers keep theirs."""
    fixed = {i.name for i in g.input} | {o.name for o in g.output} | \
        {name for name in order if consts[name].dtype == np.int8 and consts[name].ndim >= 2}
    short: dict[str, str] = {}

    def rename(x: str) -> str:
        x = alias.get(x, x)
        if not x or x in fixed:
            return x
        if x not in short:
            short[x] = f"t{len(short)}"
        return short[x]
    return rename


INT4_OPSET = 21  # Cast to and from int4 entered the standard domain in opset 21


def pack_int4(m: onnx.ModelProto) -> onnx.ModelProto:
    """Store int8 weight initializers whose codes all fit in 4 bits ([-8, 7]: 4-bit, ternary and
    binary weights) as packed INT4, two codes a byte, each followed by a Cast back to int8.

    The Cast of a constant is folded by ONNX Runtime when the session starts, so the
    ``DequantizeLinear -> Conv`` groups still fuse into the int8 kernels and compute exactly what
    they did; only the file shrinks. Needs opset 21: the graph is converted to it first. ``m`` is
    not modified: returns a new model, or ``m`` itself when nothing fits or the conversion fails."""
    from onnx import TensorProto, helper, numpy_helper, version_converter

    dq_inputs = {n.input[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    fits = [t.name for t in m.graph.initializer if t.data_type == TensorProto.INT8 and len(t.dims) >= 2
            and t.name in dq_inputs and _fits_int4(numpy_helper.to_array(t))]
    if not fits:
        return m
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < INT4_OPSET:
        try:
            m = version_converter.convert_version(m, INT4_OPSET)
        except Exception:  # noqa: BLE001 - an op without an adapter: keep the int8 file
            return m
        del m.graph.value_info[:]  # the converter infers shapes; the file does not need them
    else:
        m = copy.deepcopy(m)
    g = m.graph
    fits_set = set(fits)
    inits, casts = [], []
    for t in g.initializer:
        if t.name not in fits_set:
            inits.append(t)
            continue
        a = numpy_helper.to_array(t)
        nib = a.reshape(-1).astype(np.uint8) & 0x0F  # two's complement nibbles
        if nib.size % 2:
            nib = np.append(nib, np.uint8(0))
        packed = (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8)  # first code in the low nibble
        inits.append(helper.make_tensor(t.name + ".int4", TensorProto.INT4, a.shape, packed.tobytes(), raw=True))
        casts.append(helper.make_node("Cast", [t.name + ".int4"], [t.name], to=TensorProto.INT8))
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    m.ir_version = max(m.ir_version, 10)  # INT4 needs IR version 10
    return m


def _fits_int4(a: np.ndarray) -> bool:
    return a.size > 0 and int(a.min()) >= -8 and int(a.max()) <= 7


@torch.no_grad()
def parity(model: nn.Module, run: Any, batches: list[torch.Tensor]) -> dict:
    """Simulation vs. a runtime's Runner of its deployed file (or the file, run in the runtime its
    suffix names) on the same inputs: max abs diff (a detector's detections compared as sets, see
    runtimes.parity) and top-1 agreement."""
    if isinstance(run, (str, os.PathLike)):
        from .. import runtimes

        run = runtimes.for_artifact(run).load(run, threads=2)
    from ..runtimes.parity import max_diff

    model.eval()
    diff, agree, total = 0.0, 0, 0
    for x in batches:
        ref = model(x)
        if isinstance(ref, (tuple, list)):  # several outputs (a detector): image by image, at batch 1
            for i in range(len(x)):
                refs = [r.numpy() for r in model(x[i:i + 1])]
                diff = max(diff, max_diff(refs, run.outputs(x[i:i + 1].numpy())))
            continue
        ref, got = ref.numpy(), run(x.numpy())
        diff = max(diff, float(np.abs(ref - got).max()))
        if ref.ndim == 2:
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            total += ref.shape[0]
    return {"max_abs_diff": diff, "top1_agreement": agree / total if total else None}
