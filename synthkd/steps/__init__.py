"""Every step type a recipe can name, one module each."""

from __future__ import annotations

from typing import Annotated

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
from synthkd.steps.tool_use import ToolCallsStep
from synthkd.steps.topics import TopicsStep

STEP_TYPES: dict[str, type[Step]] = {
    "load": LoadStep,
    "label": LabelStep,
    "filter": FilterStep,
    "self_instruct": SelfInstructStep,
    "magpie": MagpieStep,
    "evol_instruct": EvolInstructStep,
    "rationale": RationaleStep,
    "doc_qa": DocQAStep,
    "dialogue": DialogueStep,
    "topics": TopicsStep,
    "dedup": DedupStep,
    "decontaminate": DecontaminateStep,
    "quality": QualityStep,
    "judge": JudgeStep,
    "preference": PreferenceStep,
    "code_check": CodeCheckStep,
    "classify": ClassifyStep,
    "critique_revise": CritiqueReviseStep,
    "tool_calls": ToolCallsStep,
    "logits": LogitsStep,
    "recompute": RecomputeStep,
}

AnyStep = Annotated[
    LoadStep
    | LabelStep
    | FilterStep
    | SelfInstructStep
    | MagpieStep
    | EvolInstructStep
    | RationaleStep
    | DocQAStep
    | DialogueStep
    | TopicsStep
    | DedupStep
    | DecontaminateStep
    | QualityStep
    | JudgeStep
    | PreferenceStep
    | CodeCheckStep
    | ClassifyStep
    | CritiqueReviseStep
    | ToolCallsStep
    | LogitsStep
    | RecomputeStep,
    Field(discriminator="step"),
]

__all__ = ["STEP_TYPES", "AnyStep", "Step"]
