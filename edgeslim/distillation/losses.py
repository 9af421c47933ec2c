"""Distillation losses and the teacher/student plumbing that feeds them.

- ``kd_loss``: Hinton et al. (2015) soft targets, ``T^2 * KL(softmax(t/T) || softmax(s/T))``; the
  T^2 keeps the gradient scale independent of T. ``KDLoss`` mixes it with the hard-label cross
  entropy: ``alpha * soft + (1 - alpha) * hard``. Unlabelled samples (label -1) take the teacher's
  argmax as their hard label (or only the soft term), so distillation works on unlabelled data.
- FitNets hints (Romero et al., 2015): MSE between a teacher layer's output and a student
  layer's output passed through a 1x1 conv (or Linear) adapter when the channels differ;
  spatial sizes are matched by adaptive average pooling.
- Attention transfer (Zagoruyko & Komodakis, 2017): MSE between the L2-normalised spatial maps
  ``mean_c(f^2)`` of paired layers, weighted by beta (1000 in the paper).

Everything plugs into ``edgeslim.train.fit`` as its ``loss_fn(outputs, targets, inputs)``:
``Distiller`` wraps the student (forward = the student's) so that the adapters are trained
with it, runs the teacher inside the loss, and collects layer outputs with forward hooks.
"""
from __future__ import annotations

import difflib
import re
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UsageError
from ..train.kd import TaskKD, kd_loss, kd_loss_fn, soft_hard_loss, teacher_runner
from ..train.task import loss_mode

__all__ = ["Distiller", "attention_loss", "attention_map", "check_outputs_match", "find_module", "kd_loss",
           "kd_loss_fn", "parse_pairs", "soft_hard_loss", "teacher_runner"]


# ---------------------------------------------------------------------------- logit losses
# kd_loss / soft_hard_loss / kd_loss_fn / teacher_runner live with the one fine-tuning trainer
# (edgeslim.train.finetune), which uses them without depending on this package.


def attention_map(f: torch.Tensor) -> torch.Tensor:
    """L2-normalised spatial attention ``mean_c(f^2)`` flattened per sample (Zagoruyko, p=2)."""
    a = f.pow(2).mean(1) if f.dim() > 2 else f.pow(2)
    return F.normalize(a.reshape(a.shape[0], -1), dim=1)


def attention_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    s, t = _match_spatial(student_feat, teacher_feat)
    return (attention_map(s) - attention_map(t)).pow(2).mean()


def _match_spatial(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if s.dim() == 4 and t.dim() == 4 and s.shape[2:] != t.shape[2:]:
        hw = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
        s = F.adaptive_avg_pool2d(s, hw) if s.shape[2:] != hw else s
        t = F.adaptive_avg_pool2d(t, hw) if t.shape[2:] != hw else t
    return s, t


def _to_device(module: nn.Module, device: torch.device) -> None:
    p = next(module.parameters(), None)
    if p is not None and p.device != device:
        module.to(device)


# ---------------------------------------------------------------------------- feature plumbing
def parse_pairs(specs: Iterable[str], what: str = "--features") -> list[tuple[str, str]]:
    """"t.layer3:s.layer3" (or "layer3:layer3") -> [("layer3", "layer3")]."""
    out = []
    for spec in specs:
        if not isinstance(spec, str) or spec.count(":") != 1:
            raise UsageError(f"bad {what} pair {spec!r}", hint="write TEACHER_LAYER:STUDENT_LAYER, e.g. t.layer3:s.layer3")
        t, s = (p.strip() for p in spec.split(":"))
        t = re.sub(r"^t\.", "", t)
        s = re.sub(r"^s\.", "", s)
        if not t or not s:
            raise UsageError(f"bad {what} pair {spec!r}", hint="write TEACHER_LAYER:STUDENT_LAYER, e.g. t.layer3:s.layer3")
        out.append((t, s))
    return out


def find_module(model: nn.Module, name: str, who: str) -> nn.Module:
    mods = dict(model.named_modules())
    if name not in mods or not name:
        names = [n for n in mods if n]
        close = difflib.get_close_matches(name, names, n=4, cutoff=0.4)
        raise UsageError(
            f"the {who} has no layer named {name!r}",
            hint=(f"did you mean {', '.join(close)}?" if close else f"layers include: {', '.join(names[:10])}")
            + " (list all with `edgeslim profile MODEL`)",
        )
    return mods[name]


class _Capture:
    """Forward hook keeping the last output of a module."""

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, mod, inp, out):
        self.value = out[0] if isinstance(out, (tuple, list)) else out

    def remove(self) -> None:
        self.handle.remove()


def _adapter(s_shape: torch.Size, t_shape: torch.Size) -> nn.Module:
    if len(s_shape) == 4 and len(t_shape) == 4:
        if s_shape[1] == t_shape[1]:
            return nn.Identity()
        return nn.Conv2d(s_shape[1], t_shape[1], 1, bias=False)
    if len(s_shape) == 2 and len(t_shape) == 2:
        return nn.Identity() if s_shape[1] == t_shape[1] else nn.Linear(s_shape[1], t_shape[1], bias=False)
    raise UsageError(f"cannot pair a student feature of shape {list(s_shape)} with a teacher feature of shape "
                     f"{list(t_shape)}", hint="pair layers that both give (N,C,H,W) or both (N,C) outputs")


class Distiller(nn.Module):
    """The student plus what distillation trains alongside it (the hint adapters).

    ``forward`` is the student's; ``loss_fn`` is what ``fit`` calls. The teacher is held outside
    the module tree so it is neither trained nor saved. Call ``close()`` to remove the hooks.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, example: torch.Tensor, *, temperature: float = 4.0,
                 alpha: float = 0.9, features: Iterable[str] = (), feature_weight: float = 1.0,
                 attention: Iterable[str] = (), attention_weight: float = 1000.0, pseudo_labels: bool = True,
                 task: str = "classification"):
        super().__init__()
        self.student = student
        self.kd = TaskKD(task, student, temperature=temperature, alpha=alpha, pseudo_labels=pseudo_labels)
        self._teacher = [teacher]  # a list hides it from .parameters() / .state_dict()
        self.feature_weight, self.attention_weight = feature_weight, attention_weight
        self.hint_pairs = parse_pairs(features, "--features")
        self.at_pairs = parse_pairs(attention, "--attention")
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self._t_caps: dict[str, _Capture] = {}
        self._s_caps: dict[str, _Capture] = {}
        for t, s in self.hint_pairs + self.at_pairs:
            if t not in self._t_caps:
                self._t_caps[t] = _Capture(find_module(teacher, t, "teacher"))
            if s not in self._s_caps:
                self._s_caps[s] = _Capture(find_module(student, s, "student"))
        # one probe forward: outputs must match, and adapters need the feature shapes
        was = student.training
        student.eval()
        try:
            with torch.no_grad():
                t_out, s_out = self._teacher_out(example), self._student_out(example)
        finally:
            student.train(was)
        check_outputs_match(t_out, s_out)
        self.adapters = nn.ModuleDict()
        for i, (t, s) in enumerate(self.hint_pairs):
            tv, sv = self._t_caps[t].value, self._s_caps[s].value
            self.adapters[f"hint{i}"] = _adapter(sv.shape, tv.shape)

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    @property
    def task(self) -> str:
        return self.kd.task

    def detection_loss(self, outputs, targets):
        """The student's own task loss (fit's validation loss on detection data)."""
        return self.student.detection_loss(outputs, targets)

    def segmentation_loss(self, outputs, targets):
        from ..train.task import loss_for

        return loss_for(self.student, "segmentation")(outputs, targets)

    def _teacher_out(self, x: torch.Tensor):
        """The teacher's outputs the task's loss compares (training-mode ones for a detector)."""
        if not self.kd.training_outputs:
            return self.teacher(x)
        with loss_mode(self.teacher):
            return self.teacher(x)

    def _student_out(self, x: torch.Tensor):
        if not self.kd.training_outputs:
            return self.student(x)
        with loss_mode(self.student):
            return self.student(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        _to_device(self.teacher, inputs.device)
        with torch.no_grad():
            t_out = self._teacher_out(inputs)
        loss = self.kd(outputs, t_out, targets)
        for i, (t, s) in enumerate(self.hint_pairs):
            sf = self.adapters[f"hint{i}"](self._s_caps[s].value)
            sf, tf = _match_spatial(sf, self._t_caps[t].value)
            loss = loss + self.feature_weight * F.mse_loss(sf, tf)
        for t, s in self.at_pairs:
            loss = loss + self.attention_weight / 2 * attention_loss(self._s_caps[s].value, self._t_caps[t].value)
        return loss

    def close(self) -> None:
        for c in list(self._t_caps.values()) + list(self._s_caps.values()):
            c.remove()
        self._t_caps, self._s_caps = {}, {}


def check_outputs_match(t_out: Any, s_out: Any) -> None:
    if isinstance(t_out, (tuple, list)) and isinstance(s_out, (tuple, list)):  # a detector's head maps
        t_shapes = [tuple(t.shape) for t in t_out if isinstance(t, torch.Tensor)]
        s_shapes = [tuple(t.shape) for t in s_out if isinstance(t, torch.Tensor)]
        if t_shapes != s_shapes:
            raise UsageError(f"teacher and student outputs do not match: {t_shapes} vs {s_shapes}",
                             hint="build the student with the teacher's number of classes (--num-classes)")
        return
    if not isinstance(t_out, torch.Tensor) or not isinstance(s_out, torch.Tensor):
        raise UsageError("teacher and student must each return one tensor of logits")
    if t_out.shape != s_out.shape:
        if t_out.dim() == 2 and s_out.dim() == 2:
            raise UsageError(
                f"teacher and student outputs do not match: the teacher predicts {t_out.shape[1]} classes, "
                f"the student {s_out.shape[1]}",
                hint="build the student with the teacher's number of classes (--num-classes)",
            )
        raise UsageError(f"teacher and student outputs do not match: {list(t_out.shape)} vs {list(s_out.shape)}")
