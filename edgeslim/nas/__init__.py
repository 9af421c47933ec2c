"""Neural architecture search for the target runtime: one weight-sharing supernet trained once, its
subnets searched (evolution, NSGA-II, REINFORCE, differentiable, random) under latency measured in
the runtime, the winner extracted as a plain network and fine-tuned (see engine.py, docs/nas.md)."""
from __future__ import annotations

from .config import NasConfig
from .engine import NasResult, nas
from .space import Space, load as load_space

__all__ = ["NasConfig", "NasResult", "Space", "load_space", "nas"]
