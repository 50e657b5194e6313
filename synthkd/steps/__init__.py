"""Every step type a recipe can name, one module each, registered once below."""

from __future__ import annotations

from typing import Any, Literal, get_args, get_origin

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from synthkd.errors import RecipeError
from synthkd.steps.base import Step
from synthkd.steps.classify import ClassifyStep
from synthkd.steps.code_check import CodeCheckStep
from synthkd.steps.critique_revise import CritiqueReviseStep
from synthkd.steps.decontaminate import DecontaminateStep
from synthkd.steps.dedup import DedupStep
from synthkd.steps.dialogue import DialogueStep
from synthkd.steps.doc_qa import DocQAStep
from synthkd.steps.evol_instruct import EvolInstructStep
from synthkd.steps.filter import FilterStep
from synthkd.steps.judge import JudgeStep
from synthkd.steps.label import LabelStep
from synthkd.steps.load import LoadStep
from synthkd.steps.logits import LogitsStep
from synthkd.steps.magpie import MagpieStep
from synthkd.steps.pair import PairStep
from synthkd.steps.preference import PreferenceStep
from synthkd.steps.quality import QualityStep
from synthkd.steps.rationale import RationaleStep
from synthkd.steps.recompute import RecomputeStep
from synthkd.steps.self_instruct import SelfInstructStep
from synthkd.steps.tool_calls import ToolCallsStep
from synthkd.steps.topics import TopicsStep

# The one list of shipped step classes, in the order error messages and docs show them. A class
# carries its `step:` name and its taxonomy category, so nothing else needs to list the steps.
STEP_CLASSES: tuple[type[Step], ...] = (
    LoadStep,
    LabelStep,
    FilterStep,
    SelfInstructStep,
    MagpieStep,
    EvolInstructStep,
    RationaleStep,
    DocQAStep,
    DialogueStep,
    TopicsStep,
    DedupStep,
    DecontaminateStep,
    QualityStep,
    JudgeStep,
    PreferenceStep,
    PairStep,
    CodeCheckStep,
    ClassifyStep,
    CritiqueReviseStep,
    ToolCallsStep,
    LogitsStep,
    RecomputeStep,
)

# Every step a recipe can name: the shipped ones, then those registered from Python or by a
# package's `synthkd.steps` entry point (`add_step_class`).
STEP_TYPES: dict[str, type[Step]] = {cls.type_name(): cls for cls in STEP_CLASSES}


def add_step_class(cls: type[Step]) -> str:
    """Make a step class nameable in recipes; returns its `step:` name. The recipe schema must be
    rebuilt afterwards (`synthkd.recipe.register_step` does both)."""
    if not isinstance(cls, type) or not issubclass(cls, Step):
        raise RecipeError(f"{cls!r} is not a subclass of synthkd.steps.Step", where="register_step")
    annotation = cls.model_fields["step"].annotation if "step" in cls.model_fields else None
    names = get_args(annotation) if get_origin(annotation) is Literal else ()
    if len(names) != 1 or not isinstance(names[0], str):
        raise RecipeError(
            f'{cls.__name__} needs a field `step: Literal["<name>"]` naming it in recipes',
            where="register_step",
        )
    name = names[0]
    known = STEP_TYPES.get(name)
    # A class defined again (a notebook cell run twice) replaces itself; nothing replaces another.
    redefined = known is not None and known not in STEP_CLASSES and _qualified(known) == _qualified(cls)
    if known is not None and known is not cls and not redefined:
        raise RecipeError(
            f"a step named {name!r} exists already ({known.__module__}.{known.__name__}); "
            f"give {cls.__name__} another `step:` name",
            where="register_step",
        )
    STEP_TYPES[name] = cls
    return name


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class AnyStep:
    """The type of a recipe's `steps:` items: pydantic picks the class by the `step:` value among
    the classes in STEP_TYPES when the schema is built (again after `add_step_class`)."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        choices = {name: handler.generate_schema(step_class) for name, step_class in STEP_TYPES.items()}
        return core_schema.tagged_union_schema(choices, discriminator="step")


__all__ = ["STEP_CLASSES", "STEP_TYPES", "AnyStep", "Step", "add_step_class"]
