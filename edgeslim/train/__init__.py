"""Training and evaluation loops shared by every technique that fine-tunes."""
from .loop import (FitStats, TrainingDiverged, TrainingStopped, bn_report, evaluate, fit, fit_stats, pick_device,
                   recalibrate_bn, record_bn, record_fits, recorded_fits,
                   seed_everything)

__all__ = ["FitStats", "TrainingDiverged", "TrainingStopped", "bn_report", "evaluate", "fit", "fit_stats",
           "pick_device", "recalibrate_bn", "record_bn", "record_fits", "recorded_fits",
           "seed_everything"]
