"""edgeslim: the smallest or fastest deployable model that meets your accuracy SLA."""
from __future__ import annotations

__version__ = "0.1.0"

from .core.report import Report  # noqa: E402
from .codec import deep_compress  # noqa: E402
from .quant import quantize  # noqa: E402
from .prune import prune  # noqa: E402  (the verb; `from edgeslim.prune import ChannelPrune` still works)
from .distill import distill  # noqa: E402
from .lowrank import factorize  # noqa: E402
from .reparam import reparam  # noqa: E402
from .search import auto, compress  # noqa: E402

__all__ = ["Report", "__version__"]
