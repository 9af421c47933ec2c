"""The models of the breadth benchmark (issue 21): every torchvision classifier and one model of
each of a broad set of timm families, each with the input size and builder arguments it runs at.

Sizes: 224 is too large for a sweep of ~110 models on 2 cores, so convolutional models run at 64x64
(96 for Inception, whose stem needs it); transformers are built for a smaller image where their
builder takes one (torchvision's ``image_size``, timm's ``img_size``), and windowed models keep a
size their windows divide. A case is (spec, input size, builder keyword arguments, kind).
"""
from __future__ import annotations

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
