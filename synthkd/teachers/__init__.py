"""Teacher backends behind one protocol (see `base.Teacher`)."""

from __future__ import annotations

from synthkd.teachers.base import ChatRequest, Completion, Teacher, TeacherError
from synthkd.teachers.config import TeacherConfig


def build_teacher(config: TeacherConfig, seed: int = 0) -> Teacher:
    """Create the backend a teacher config names. Local models are loaded here."""
    if config.backend == "openai":
        from synthkd.teachers.openai_backend import OpenAITeacher

        return OpenAITeacher(config)
    if config.backend == "litellm":
        from synthkd.teachers.litellm_backend import LiteLLMTeacher

        return LiteLLMTeacher(config)
    from synthkd.teachers.transformers_backend import TransformersTeacher

    return TransformersTeacher(config, seed=seed)


__all__ = ["ChatRequest", "Completion", "Teacher", "TeacherConfig", "TeacherError", "build_teacher"]
