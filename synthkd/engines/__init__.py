"""Where a recipe's row-wise steps run (`engine:`): in this process (the default), or spread over
a Ray cluster (`engine: ray`, the `ray` extra; see `ray_engine`)."""

from __future__ import annotations

from synthkd.pipeline import StepsEngine
from synthkd.recipe import EngineConfig


def engine_for(config: EngineConfig, *, use_cache: bool = True) -> StepsEngine | None:
    """The engine a recipe's `engine:` names; None for the local one (the pipeline itself)."""
    if config.name == "ray":
        from synthkd.engines.ray_engine import RayEngine

        return RayEngine(config, use_cache=use_cache)
    return None
