"""YAML recipes: the paper's experiments as data, and the runner that turns one into a run folder."""

from neuroplastic.recipes.config import RecipeError, apply_overrides, is_epoch_key, scale_epochs, validate
from neuroplastic.recipes.runner import execute, find_recipe, prepare, resolve, shipped_recipes

__all__ = [
    "RecipeError",
    "apply_overrides",
    "execute",
    "find_recipe",
    "is_epoch_key",
    "prepare",
    "resolve",
    "scale_epochs",
    "shipped_recipes",
    "validate",
]
