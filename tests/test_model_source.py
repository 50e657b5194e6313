"""A model, tokenizer or encoder name is a local folder when one exists (with `~` expanded), else a
Hub id: one resolver, used by the teachers, training, doc_qa's tokenizer and the dedup encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_model import build_tiny_model


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def test_doc_qa_tokenizer_under_home_is_the_local_folder(home: Path):
    from transformers import AutoTokenizer

    from synthkd.chunking import token_counter

    folder = build_tiny_model(home / "tok")
    count = token_counter("~/tok")  # was taken for a Hub id (offline: an error)
    text = "The quick brown fox jumps over the lazy dog."
    local = AutoTokenizer.from_pretrained(folder)
    assert count(text) == len(local.encode(text, add_special_tokens=False)) > 0


def test_local_or_hub(home: Path):
    from synthkd.model_source import local_or_hub

    (home / "model").mkdir()
    assert local_or_hub("~/model") == str(home / "model")
    assert local_or_hub(str(home / "model")) == str(home / "model")
    assert local_or_hub("~/missing") == "~/missing"
    assert local_or_hub("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_every_resolver_expands_home(home: Path):
    from synthkd.curate.embeddings import _model_source
    from synthkd.teachers.embedded import resolve_model_source

    (home / "model").mkdir()
    assert resolve_model_source("~/model") == _model_source("~/model") == str(home / "model")
