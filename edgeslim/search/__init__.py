"""Recipes (``compress``) and the SLA search (``auto``).

    small = edgeslim.compress(model, "recipe.yaml", data=data)
    res = edgeslim.auto(model, data, max_drop=0.5, objective="size", budget="30m", out="runs/auto")
"""
from .auto import AutoResult, auto
from .config import AutoConfig, parse_budget
from .recipe import Finetune, compress, load_recipe, recipe_yaml, run_steps
from .space import SearchSpace, load_space

__all__ = ["AutoConfig", "AutoResult", "Finetune", "SearchSpace", "auto", "compress", "load_recipe", "load_space", "parse_budget",
           "recipe_yaml", "run_steps"]
