"""Curation primitives: pure functions and indexes that steps call."""
