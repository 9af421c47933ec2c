"""edgeslim: the smallest or fastest deployable model that meets your accuracy SLA."""
from __future__ import annotations

__version__ = "0.1.0"

from .core.report import Report  # noqa: E402
from .codec import deep_compress  # noqa: E402
from .quantization import quantize  # noqa: E402
from .pruning import prune  # noqa: E402
from .distillation import distill  # noqa: E402
from .lowrank import factorize  # noqa: E402
from .reparameterization import reparam  # noqa: E402
from .search import auto, compress  # noqa: E402
from .runtimes import export  # noqa: E402

# packages are nouns (edgeslim.pruning, edgeslim.quantization, ...), verbs are these functions: a verb
# never shadows a package, so `import edgeslim.distillation.losses` always works
__all__ = ["Report", "__version__", "auto", "compress", "deep_compress", "distill", "export", "factorize", "prune", "quantize",
           "reparam"]
