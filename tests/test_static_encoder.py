"""The static encoder (`encoder: static`): distilled from the shipped MiniLM offline, cached vectors
reused by every step that embeds, and chunked dedup deciding as the in-memory path does."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.cli import main
from synthkd.curate.embeddings import (
    EMBEDDED_ENCODER,
    EmbeddingCache,
    _model_source,
    embed,
    embed_float16,
    encoder_spec,
    load_encoder,
)
from synthkd.curate.semantic import semantic_duplicates
from synthkd.curate.static_encoder import RECIPE, distil, encoder_dir

STATIC = encoder_spec(EMBEDDED_ENCODER, "static")
ROWS = [
    {"id": "a", "instruction": "How do I bake bread at home?"},
    {"id": "b", "instruction": "How can I bake bread at home?"},  # a paraphrase of a
    {"id": "c", "instruction": "What is the capital of France?"},
    {"id": "d", "instruction": "Explain the risks of solar power for a child."},
    {"id": "e", "instruction": "Name three rivers of Africa and their lengths."},
    {"id": "f", "instruction": "Write a short poem about autumn leaves."},
    {"id": "g", "instruction": "Which planets have rings around them?"},
    {"id": "h", "instruction": "Summarise the plot of Hamlet in two sentences."},
]
EVAL = [{"question": "What is the capital city of France?"}]


@pytest.fixture(scope="module")
def small_static(tmp_path_factory) -> Path:
    """A static encoder distilled from the shipped MiniLM for only the tokens of these texts (a
    second, not the full vocabulary's 15 s), with the Hub offline (conftest)."""
    from tokenizers import Tokenizer

    source = _model_source(EMBEDDED_ENCODER)
    tokenizer = Tokenizer.from_file(str(Path(source) / "tokenizer.json"))
    texts = [row["instruction"] for row in ROWS] + [row["question"] for row in EVAL]
    ids = sorted({i for text in texts for i in tokenizer.encode(text, add_special_tokens=False).ids})
    folder = tmp_path_factory.mktemp("static") / "encoder"
    distil(source, folder, only=ids)
    return folder


@pytest.fixture
def static_in_cache(small_static: Path, private_cache: Path):
    """The small static encoder where `encoder: static` looks for it, in this test's cache folder."""
    folder = encoder_dir(EMBEDDED_ENCODER)
    shutil.copytree(small_static, folder)
    load_encoder.cache_clear()
    yield folder
    load_encoder.cache_clear()


def test_the_static_encoder_is_distilled_offline_and_ranks_a_paraphrase_first(static_in_cache: Path):
    assert RECIPE in static_in_cache.name and (static_in_cache / "model.safetensors").exists()
    vectors, encoded = embed([row["instruction"] for row in ROWS], STATIC)
    assert encoded == len(ROWS) and vectors.shape == (len(ROWS), 256)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=2e-3)
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    assert int(similarity[0].argmax()) == 1 and similarity[0, 1] > 0.9  # the paraphrase, not another


@pytest.mark.slow
def test_the_whole_vocabulary_is_distilled_offline(tmp_path: Path, private_cache: Path):
    """What `encoder: static` makes on first use: every token of MiniLM's vocabulary (about 15 s)."""
    load_encoder.cache_clear()
    try:
        vectors, encoded = embed([row["instruction"] for row in ROWS], STATIC)
    finally:
        load_encoder.cache_clear()
    folder = encoder_dir(EMBEDDED_ENCODER)
    from model2vec import StaticModel

    table = StaticModel.from_pretrained(str(folder)).embedding
    assert table.shape == (30522, 256) and np.count_nonzero(np.abs(table).sum(axis=1)) > 30_000
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -1)
    assert encoded == len(ROWS) and int(similarity[0].argmax()) == 1


def test_every_embedding_step_reuses_cached_vectors(tmp_path: Path, static_in_cache: Path, capsys):
    """Dedup, decontamination and the report's map with the static encoder: a rerun reads every
    vector from the cache, so it loads no encoder. Shown by removing the encoder after the first
    run: had anything been encoded, it would have been distilled again (and said so)."""
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    write_jsonl(tmp_path / "eval.jsonl", EVAL)
    steps = [
        {"step": "load", "path": "rows.jsonl"},
        {"step": "dedup", "method": "embedding", "encoder": "static", "threshold": 0.9},
        {
            "step": "decontaminate",
            "eval_sets": [{"path": "eval.jsonl", "columns": ["question"]}],
            "columns": ["instruction"],
            "embedding_threshold": 0.9,
            "encoder": "static",
        },
    ]
    # The run draws the map too (report: full), with the encoder the recipe names.
    output = {"dir": "out", "report": "full", "report_encoder": "static"}
    recipe = write_recipe(tmp_path / "r.yaml", {"name": "static", "steps": steps, "output": output})
    kept = []
    for attempt in range(2):
        assert main(["run", str(recipe), "--output", str(tmp_path / "out")]) == 0
        assert main(["report", str(tmp_path / "out"), "--map", "--encoder", "static"]) == 0
        kept.append([row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")])
        if attempt == 0:
            shutil.rmtree(static_in_cache)
            load_encoder.cache_clear()
            capsys.readouterr()
    assert kept[0] == kept[1] == ["a", "d", "e", "f", "g", "h"]  # b: a's paraphrase; c: the eval question
    assert not static_in_cache.exists() and "distilling" not in capsys.readouterr().err
    assert "Instruction map: 6 instructions embedded" in (tmp_path / "out" / "report.html").read_text()


def test_vectors_are_cached_by_encoder(static_in_cache: Path, tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    texts = [row["instruction"] for row in ROWS]
    try:
        static, encoded = embed(texts, STATIC, cache=cache)
        _, encoded_again = embed(texts, STATIC, cache=cache)
        chunked, encoded_chunked = embed_float16(texts[::-1], STATIC, cache=cache, chunk=3)
    finally:
        cache.close()
    assert (encoded, encoded_again, encoded_chunked) == (len(texts), 0, 0)
    assert np.array_equal(chunked[::-1].astype(np.float32), static)


def planted_vectors(count: int = 600, dim: int = 32) -> np.ndarray:
    """Random unit vectors, a fifth of them near copies of earlier ones (cosine ~0.97-0.999),
    some copies of copies, float16 as the embedding cache keeps them."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((count, dim))
    for row in rng.choice(np.arange(10, count), count // 5, replace=False):
        source = rng.integers(0, row)
        vectors[row] = vectors[source] + rng.uniform(0.02, 0.25) * rng.standard_normal(dim) / np.sqrt(dim)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float16)


@pytest.mark.parametrize("index", ["flat", "ivf", "hnsw"])
def test_chunked_dedup_decides_as_the_in_memory_path(index: str):
    vectors = planted_vectors()
    whole = semantic_duplicates(vectors, threshold=0.97, index=index, chunk=len(vectors))
    assert len(whole) > 60  # the planted copies (not all of them reach 0.97)
    for chunk in (7, 128):
        assert semantic_duplicates(vectors, threshold=0.97, index=index, chunk=chunk) == whole
    if index == "flat":  # and as float32 vectors of the same values do
        assert semantic_duplicates(vectors.astype(np.float32), threshold=0.97, index="flat") == whole
