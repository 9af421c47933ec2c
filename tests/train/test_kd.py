"""Distillation for every task: soft targets per pixel for segmenters, head-map distillation for
detectors, one line for a detector that cannot be distilled."""
import copy

import pytest
import torch

from edgeslim import models
from edgeslim.core.errors import UsageError
from edgeslim.testing.tasks import synthetic_batch, synthetic_loader
from edgeslim.train import fit
from edgeslim.train.kd import TaskKD, kd_loss_fn, pixel_kd_loss
from edgeslim.train.task import loss_mode


def test_pixel_kd_is_zero_for_the_teachers_own_logits_and_positive_otherwise():
    t = torch.randn(2, 5, 8, 8)
    assert float(pixel_kd_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(pixel_kd_loss(t.flip(1), t)) > 0.1
    with pytest.raises(UsageError, match="per-pixel distillation needs the same shape"):
        pixel_kd_loss(torch.randn(2, 4, 8, 8), t)


def test_segmentation_kd_mixes_the_soft_term_with_the_task_loss():
    torch.manual_seed(0)
    teacher = models.create("tinyseg", num_classes=11).eval()
    student = copy.deepcopy(teacher).eval()
    x, _, masks = synthetic_batch(n=2)
    with torch.no_grad():
        out = student(x)
    with torch.no_grad():
        hard = TaskKD("segmentation", student, alpha=0.0)(out, teacher(x), masks)
        soft = TaskKD("segmentation", student, alpha=1.0)(out, teacher(x), masks)
    assert float(soft) == pytest.approx(0.0, abs=1e-5) and float(hard) > 0.5  # the same logits: nothing to learn
    mixed = kd_loss_fn(teacher, task="segmentation", student=student, alpha=0.5)(out, masks, x)
    assert float(mixed) == pytest.approx(0.5 * float(hard), rel=1e-4)


def test_detection_kd_compares_head_maps_and_trains_the_student():
    torch.manual_seed(0)
    teacher = models.create("tinydet", num_classes=10).eval()
    x, targets, _ = synthetic_batch(n=2)
    with loss_mode(teacher), torch.no_grad():
        t_maps = teacher(x)
    same = teacher.distill_loss(t_maps, t_maps)
    assert float(same) == pytest.approx(0.0, abs=1e-6)  # a KL divergence and L1 terms: 0 when the maps agree
    other = models.create("tinydet", num_classes=10)
    with loss_mode(other), torch.no_grad():
        worse = other.distill_loss(other(x), t_maps)
    assert float(worse) > float(same)  # the teacher's own maps are the closest
    student = copy.deepcopy(other)
    loss = kd_loss_fn(teacher, task="detection", student=student, alpha=1.0)
    with loss_mode(student), torch.no_grad():
        before = float(loss(student(x), targets, x))
    fit(student, synthetic_loader("detection", n=8, batch_size=4), epochs=10, lr=0.05, optimizer="adam",
        loss_fn=loss, seed=0)
    with loss_mode(student), torch.no_grad():
        assert float(loss(student(x), targets, x)) < 0.9 * before


def test_a_detector_without_distill_loss_is_one_line():
    class NoKD(torch.nn.Module):
        task = "detection"

        def detection_loss(self, outputs, targets):
            return outputs.sum()

    with pytest.raises(UsageError, match="NoKD has no distill_loss"):
        kd_loss_fn(models.create("tinydet"), task="detection", student=NoKD())
    with pytest.raises(UsageError, match="needs the student model"):
        kd_loss_fn(models.create("tinyseg"), task="segmentation")
