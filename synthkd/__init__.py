"""synthkd: one YAML recipe to a knowledge-distillation dataset and a trained student.

From Python (see `synthkd.api`):

    import synthkd
    ds = synthkd.run("recipes/quickstart.yaml", overrides=["steps.0.limit=8"])
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from synthkd.version import __version__

# litellm fetches its model price map from the network at import unless told otherwise; synthkd
# must work offline, and the map shipped inside litellm is recent enough for cost estimates.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# The public API, imported when first used so that `import synthkd` (and the command line's
# first request) stays fast: name -> the module that defines it.
_PUBLIC = {
    "run": "synthkd.api",
    "run_async": "synthkd.api",
    "run_step": "synthkd.api",
    "train": "synthkd.api",
    "load_recipe": "synthkd.api",
    "Reporter": "synthkd.reporter",
    "register_step": "synthkd.recipe",
    "Recipe": "synthkd.recipe",
    "LoadedRecipe": "synthkd.recipe",
    "register_parser": "synthkd.steps.parsing",
    "ParseError": "synthkd.steps.parsing",
    "Step": "synthkd.steps.base",
    "TeacherStep": "synthkd.steps.base",
    "StepResult": "synthkd.steps.base",
    "StepContext": "synthkd.steps.base",
    "CheckContext": "synthkd.steps.base",
    "Failure": "synthkd.steps.base",
    "TeacherConfig": "synthkd.teachers.config",
    "SynthkdError": "synthkd.errors",
    "RecipeError": "synthkd.errors",
    "RunIncompleteError": "synthkd.errors",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'synthkd' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
