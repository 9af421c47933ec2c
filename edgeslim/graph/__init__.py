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

__all__ = ["ChannelGraph", "ChannelGroup", "Member", "build_graph", "custom_layers", "excluded_modules",
           "SUPPORTED_TYPES"]
