"""Training and evaluation loops shared by every technique that fine-tunes."""
from .loop import evaluate, fit, pick_device, recalibrate_bn, seed_everything

__all__ = ["evaluate", "fit", "pick_device", "recalibrate_bn", "seed_everything"]
