"""Breadth: every torchvision classifier and one model of each of a broad set of timm families
through channel pruning, int8 PTQ and ONNX export with parity -- the cases and the check that
benchmarks/breadth.py times and tests/models/test_breadth.py (slow) asserts, one per family.

Sizes: 224 is too large for a sweep of ~110 models on 2 cores, so convolutional models run at 64x64
(96 for Inception, whose stem needs it); transformers are built for a smaller image where their
builder takes one (torchvision's ``image_size``, timm's ``img_size``), and windowed models keep a
size their windows divide. A case is (spec, input size, builder keyword arguments, kind).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

PARITY_ATOL = 1e-3  # fp32 ONNX vs PyTorch, relative to the output's scale (random weights)
INT8_PARITY = 0.05  # int8 file vs its simulation, relative to the output's scale
MIN_MACS_RATIO = 1.2  # channel pruning at ratio 0.3 must cut MACs at least this much

CONV, HYBRID, TRANSFORMER = "convolutional", "hybrid", "transformer"


def torchvision_cases() -> list[tuple[str, int, dict, str]]:
    import torchvision

    out = []
    for name in torchvision.models.list_models(module=torchvision.models):
        size, kw, kind = 64, {}, CONV
        if name.startswith("vit_"):
            size, kind = (56 if name.endswith("_14") else 64), TRANSFORMER
            kw = {"image_size": size}
        elif name.startswith("swin"):
            kind = TRANSFORMER
        elif name == "maxvit_t":
            size, kind = 224, HYBRID  # its partition size (7) must divide every stage's grid
        elif name in ("inception_v3", "googlenet"):
            size = 96 if name == "inception_v3" else 64
            kw = {"aux_logits": False, "init_weights": False}
        out.append((f"torchvision:{name}", size, kw, kind))
    return out


# the smallest member of each torchvision classification family: the slow test's cases (the benchmark runs all)
TORCHVISION_FAMILIES = {
    "alexnet": "alexnet", "convnext": "convnext_tiny", "densenet": "densenet121", "efficientnet_b": "efficientnet_b0",
    "efficientnet_v2": "efficientnet_v2_s", "googlenet": "googlenet", "inception": "inception_v3", "maxvit": "maxvit_t",
    "mnasnet": "mnasnet0_5", "mobilenet_v2": "mobilenet_v2", "mobilenet_v3": "mobilenet_v3_small",
    "regnet_x": "regnet_x_400mf", "regnet_y": "regnet_y_400mf", "resnet": "resnet18", "resnext": "resnext50_32x4d",
    "shufflenet": "shufflenet_v2_x0_5", "squeezenet": "squeezenet1_1", "swin_": "swin_t", "swin_v2": "swin_v2_t",
    "vgg": "vgg11", "vit": "vit_b_32", "wide_resnet": "wide_resnet50_2",
}


def family_of(name: str) -> str | None:
    """The TORCHVISION_FAMILIES key a torchvision classifier belongs to (the longest prefix)."""
    hits = [k for k in TORCHVISION_FAMILIES if name.startswith(k)]
    return max(hits, key=len) if hits else None


# one small member of each timm family (module), with the arguments that size it for the sweep
TIMM = [
    ("resnet18", 64, {}, CONV),
    ("efficientnet_b0", 64, {}, CONV),
    ("mobilenetv3_small_100", 64, {}, CONV),
    ("mobilenetv4_conv_small", 64, {}, CONV),
    ("regnetx_002", 64, {}, CONV),
    ("convnext_atto", 64, {}, CONV),
    ("ghostnet_100", 64, {}, CONV),
    ("dla46_c", 64, {}, CONV),
    ("densenet121", 64, {}, CONV),
    ("dpn68", 64, {}, CONV),
    ("hrnet_w18_small", 64, {}, CONV),
    ("rexnet_100", 64, {}, CONV),
    ("repvgg_a0", 64, {}, CONV),
    ("cs3darknet_s", 64, {}, CONV),
    ("vgg11", 64, {}, CONV),
    ("res2net50_14w_8s", 64, {}, CONV),
    ("inception_v3", 96, {}, CONV),
    ("xception41", 64, {}, CONV),
    ("selecsls42b", 64, {}, CONV),
    ("hgnetv2_b0", 64, {}, CONV),
    ("nf_regnet_b0", 64, {}, CONV),
    ("repvit_m1", 64, {}, CONV),
    ("mobileone_s0", 64, {}, CONV),
    ("fastvit_t8", 64, {}, HYBRID),
    ("efficientformer_l1", 224, {}, HYBRID),  # its attention bias is sized for 224
    ("mobilevit_xxs", 64, {}, HYBRID),
    ("edgenext_xx_small", 64, {}, HYBRID),
    ("efficientvit_b0", 64, {}, HYBRID),
    ("coatnet_nano_rw_224", 64, {"img_size": 64}, HYBRID),
    ("levit_128s", 64, {"img_size": 64}, TRANSFORMER),
    ("vit_tiny_patch16_224", 64, {"img_size": 64}, TRANSFORMER),
    ("deit_tiny_patch16_224", 64, {"img_size": 64}, TRANSFORMER),
    ("swin_tiny_patch4_window7_224", 112, {"img_size": 112}, TRANSFORMER),
    ("pvt_v2_b0", 64, {}, TRANSFORMER),
    ("poolformerv2_s12", 64, {}, TRANSFORMER),
    ("cait_xxs24_224", 64, {"img_size": 64}, TRANSFORMER),
    ("xcit_nano_12_p16_224", 64, {"img_size": 64}, TRANSFORMER),
    ("tiny_vit_5m_224", 224, {}, TRANSFORMER),
    ("mixer_s32_224", 64, {"img_size": 64}, TRANSFORMER),
]


def timm_cases() -> list[tuple[str, int, dict, str]]:
    return [(f"timm:{n}", s, kw, k) for n, s, kw, k in TIMM]


def stage(row: dict, name: str) -> None:
    row["stage"] = name
    row.setdefault("seconds", {})[name] = time.time()


def check_model(row: dict, spec: str, size: int, kw: dict, directory) -> dict[str, Path]:
    """Build ``spec`` (random weights, 10 classes) at ``size``; prune 0.3; export the fp32 original and
    the pruned model (each checked against PyTorch); int8 PTQ of the pruned model, its QDQ file checked
    against the simulation. Fills ``row`` (``row['stage']``: the step running when one raises) and
    returns the three files {"fp32", "pruned", "int8"} under ``directory``."""
    import warnings

    import torch

    import edgeslim
    from edgeslim.core.registry import Context, run
    from edgeslim.models.spec import create
    from edgeslim.pruning import ChannelPrune
    from edgeslim.quantization import PTQ
    from edgeslim.quantization.onnx_qdq import parity

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    row.update(model=spec, input=size)
    shape = (3, size, size)
    stage(row, "build")
    model = create(spec, num_classes=10, **kw).eval()
    stage(row, "prune")
    small, details = run(model, ChannelPrune(ratio=0.3), Context(input_shape=shape, progress=False))
    row["macs"], row["macs_pruned"] = details["macs_before"], details["macs_after"]
    notes = [re.sub(r"'[^']*'", "L", r["note"]) for r in details["layers"] if r["note"]]
    row["kept"] = {n: notes.count(n) for n in sorted(set(notes))}  # why groups stayed whole (L: the layer)
    row["groups"], row["groups_kept"] = len(details["layers"]), len(notes)
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(1))
    files = {k: Path(directory) / f"{k}.onnx" for k in ("fp32", "pruned", "int8")}
    stage(row, "export")
    for key, m in (("fp32", model), ("pruned", small)):
        with torch.no_grad():
            scale = float(m(x).abs().max().clamp(min=1.0))
        r = edgeslim.runtimes.export_onnx(m, files[key], x, atol=PARITY_ATOL * scale)
        row[f"parity_{key}"] = r["max_abs_diff"] / scale
    stage(row, "int8")
    calib = torch.cat([torch.randn(8, *shape, generator=torch.Generator().manual_seed(10 + i)) for i in range(4)])
    q = edgeslim.quantize(small, PTQ(bits=8), data=calib, progress=False)
    stage(row, "int8-export")
    edgeslim.quantization.export(q, files["int8"], x)
    # image by image: a file may keep the batch of 1 it was traced at (attention reshapes)
    p = parity(q, files["int8"], [torch.randn(1, *shape, generator=torch.Generator().manual_seed(99 + i))
                                  for i in range(4)])
    row["parity_int8_top1"] = p["top1_agreement"]
    with torch.no_grad():
        row["parity_int8"] = p["max_abs_diff"] / float(q(x).abs().max().clamp(min=1.0))
    size = edgeslim.runtimes.get("onnxruntime").size  # the file and, past 2 GB, its data file
    row["size"] = {k: size(f) for k, f in files.items()}
    return files


def passed(row: dict) -> bool:
    return bool(row.get("ok")) and row["macs"] / row["macs_pruned"] >= MIN_MACS_RATIO \
        and row["parity_int8"] <= INT8_PARITY
