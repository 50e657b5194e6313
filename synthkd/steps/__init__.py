"""Every step type a recipe can name, one module each, registered once below."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

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
from synthkd.steps.preference import PreferenceStep
from synthkd.steps.quality import QualityStep
from synthkd.steps.rationale import RationaleStep
from synthkd.steps.recompute import RecomputeStep
from synthkd.steps.self_instruct import SelfInstructStep
from synthkd.steps.tool_calls import ToolCallsStep
from synthkd.steps.topics import TopicsStep

# The one list of step classes, in the order error messages and docs show them. A class carries
# its `step:` name and its taxonomy category, so nothing else needs to list the steps.
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
    CodeCheckStep,
    ClassifyStep,
    CritiqueReviseStep,
    ToolCallsStep,
    LogitsStep,
    RecomputeStep,
)

STEP_TYPES: dict[str, type[Step]] = {cls.type_name(): cls for cls in STEP_CLASSES}

# The recipe's `steps:` items: pydantic picks the class by the `step:` value.
AnyStep = Annotated[Union[STEP_CLASSES], Field(discriminator="step")]  # noqa: UP007 (a tuple of classes)

__all__ = ["STEP_CLASSES", "STEP_TYPES", "AnyStep", "Step"]
