"""Teacher backends behind one protocol (see `base.Teacher`), listed in `registry`."""

from __future__ import annotations

from synthkd.teachers.base import Capabilities, ChatRequest, Completion, ScoreRequest, Teacher, TeacherError
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import backend_spec, build_teacher, capabilities_of, teacher_label

__all__ = [
    "Capabilities",
    "ChatRequest",
    "Completion",
    "ScoreRequest",
    "Teacher",
    "TeacherConfig",
    "TeacherError",
    "backend_spec",
    "build_teacher",
    "capabilities_of",
    "teacher_label",
]
