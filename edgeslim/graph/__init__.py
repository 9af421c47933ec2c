"""Channel-dependency groups for structured pruning (wraps Torch-Pruning's dependency graph)."""
from .dependency import (  # noqa: F401
    SUPPORTED_TYPES,
    ChannelGraph,
    ChannelGroup,
    Member,
    build_graph,
    custom_layers,
    excluded_modules,
)
from .probe import forward_problem, output_shape, unsafe_groups  # noqa: F401

__all__ = ["ChannelGraph", "ChannelGroup", "Member", "build_graph", "custom_layers", "excluded_modules",
           "forward_problem", "output_shape", "unsafe_groups", "SUPPORTED_TYPES"]
