"""Dedup by exact, MinHash and embedding: what is kept, what is dropped, and which row it duplicated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.curate.embeddings import EmbeddingCache, embed
from synthkd.curate.exact import exact_duplicates, normalise
from synthkd.curate.minhash import minhash_duplicates
from synthkd.curate.semantic import semantic_duplicates
from synthkd.errors import RunIncompleteError
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe

LONG = (
    "Write a detailed guide that explains to a beginner how to plant, water and prune tomatoes on a balcony"
)
ROWS = [
    {"id": "a", "instruction": "What is machine learning?"},
    {"id": "b", "instruction": "what is  MACHINE learning"},  # exact after normalising
    {"id": "c", "instruction": LONG},
    {"id": "d", "instruction": LONG + " garden"},  # a near copy: MinHash
    {"id": "e", "instruction": "How do I bake bread at home?"},
    {"id": "f", "instruction": "How can I bake bread at home?"},  # a paraphrase: embedding (cosine 0.99)
    {"id": "g", "instruction": "Explain quantum entanglement simply."},
]


def dedup_recipe(tmp_path: Path, steps: list[dict]) -> Path:
    """A recipe of `steps` over rows.jsonl in tmp_path, writing to tmp_path/out."""
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "dd",
            "teacher": {"backend": "transformers", "model": "embedded"},
            "steps": steps,
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def test_exact_normalises_case_space_and_punctuation():
    assert normalise("  What IS  machine-learning?? ") == "what is machine learning"
    assert exact_duplicates(["x y", "X, y!", "x z", "x  y"]) == {1: 0, 3: 0}


def test_minhash_finds_small_edits_only():
    found = minhash_duplicates([row["instruction"] for row in ROWS], threshold=0.8)
    assert {row: first for row, (first, _) in found.items()} == {1: 0, 3: 2}  # not the paraphrase f
    assert found[3][1] >= 0.8


def test_semantic_keeps_the_first_and_matches_only_kept_rows():
    vectors = np.eye(4, dtype=np.float32)
    vectors[1] = vectors[0]  # 1 duplicates 0
    vectors[2] = (vectors[0] + vectors[3]) / np.linalg.norm(vectors[0] + vectors[3])  # 0.707 to both
    vectors[3] = vectors[1]  # 3 duplicates 0 (and dropped 1, which does not count)
    for index in ("flat", "ivf", "hnsw"):
        found = semantic_duplicates(vectors, threshold=0.95, index=index)
        assert {row: first for row, (first, _) in found.items()} == {1: 0, 3: 0}, index


def test_embeddings_are_cached_by_model_and_text(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "e.sqlite")
    texts = [row["instruction"] for row in ROWS]
    first, encoded = embed(texts, cache=cache)
    again, encoded_again = embed(texts[::-1], cache=cache)
    assert encoded == len(texts) and encoded_again == 0
    # Kept as float16: unit length to within about 1e-4.
    assert np.array_equal(again[::-1], first) and np.allclose(np.linalg.norm(first, axis=1), 1, atol=2e-4)


@pytest.mark.parametrize(
    ("method", "options", "dropped"),
    [
        ("exact", {}, {"b": "a"}),
        ("minhash", {"threshold": 0.8}, {"b": "a", "d": "c"}),
        ("embedding", {"threshold": 0.97}, {"d": "c", "f": "e"}),
    ],
)
def test_dedup_step_records_what_each_row_duplicated(tmp_path: Path, method, options, dropped):
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    path = dedup_recipe(
        tmp_path, [{"step": "load", "path": "rows.jsonl"}, {"step": "dedup", "method": method, **options}]
    )
    result = run_recipe(load_recipe(path))
    kept = [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")]
    assert kept == [row["id"] for row in ROWS if row["id"] not in dropped]
    report = result.reports[1]
    assert report.rows_dropped == {f"duplicate_{method}": len(dropped)}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    duplicates = manifest["steps"][1]["details"]["duplicates"]
    assert {d["id"]: d["duplicate_of"] for d in duplicates} == dropped
    # The dropped row's own text is kept beside the pair, for the report and a reader to judge by.
    texts = {row["id"]: row["instruction"] for row in ROWS}
    assert {d["id"]: (d["text"], d["duplicate_text"]) for d in duplicates} == {
        d: (texts[d], texts[kept]) for d, kept in dropped.items()
    }


def test_embedding_dedup_of_no_rows(tmp_path: Path):
    vectors, encoded = embed([], cache=EmbeddingCache(tmp_path / "e.sqlite"))
    assert vectors.shape[0] == 0 and encoded == 0
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    path = dedup_recipe(
        tmp_path,
        [
            {"step": "load", "path": "rows.jsonl"},
            {"step": "filter", "column": "instruction", "min_chars": 1000},  # drops every row
            {"step": "dedup", "method": "embedding"},
        ],
    )
    # A run with no rows out fails (exit code 3), but every step ran: dedup of nothing is nothing.
    with pytest.raises(RunIncompleteError, match="step 1:filter kept none of 7") as failed:
        run_recipe(load_recipe(path))
    assert [r.rows_out for r in failed.value.result.reports] == [7, 0, 0]
    assert read_jsonl(tmp_path / "out.incomplete" / "data.jsonl") == []


def test_chained_dedup_cheapest_first(tmp_path: Path):
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    path = dedup_recipe(
        tmp_path,
        [
            {"step": "load", "path": "rows.jsonl"},
            {"step": "dedup", "method": "exact"},
            {"step": "dedup", "method": "minhash"},
            {"step": "dedup", "method": "embedding", "threshold": 0.97},
        ],
    )
    result = run_recipe(load_recipe(path))
    assert [r.rows_out for r in result.reports] == [7, 6, 5, 4]
    assert [row["id"] for row in read_jsonl(tmp_path / "out" / "data.jsonl")] == ["a", "c", "e", "g"]


def test_pair_texts_are_kept_for_the_most_similar_pairs_only_and_clipped(tmp_path: Path):
    """MinHash at a low threshold: exact copies (similarity 1) outrank near copies, and only the
    PAIRS_WITH_TEXT most similar pairs carry their texts, each clipped to PAIR_TEXT_CHARS."""
    from synthkd.steps.dedup import PAIR_TEXT_CHARS, PAIRS_WITH_TEXT

    base = " ".join(f"word{i}" for i in range(80))  # 560+ characters: clipped
    near = [  # Jaccard about 0.8 with base: never estimated as 1
        {"id": f"near-{i}", "instruction": base + "".join(f" extra{i}x{j}" for j in range(20))}
        for i in range(60)
    ]
    exact = [{"id": f"copy-{i}", "instruction": base} for i in range(PAIRS_WITH_TEXT)]
    write_jsonl(tmp_path / "rows.jsonl", [{"id": "first", "instruction": base}, *near, *exact])
    path = dedup_recipe(
        tmp_path,
        [
            {"step": "load", "path": "rows.jsonl"},
            {"step": "dedup", "method": "minhash", "threshold": 0.5},
        ],
    )
    result = run_recipe(load_recipe(path))
    pairs = result.manifest["steps"][1]["details"]["duplicates"]
    assert len(pairs) == 60 + PAIRS_WITH_TEXT
    with_text = [pair for pair in pairs if "text" in pair]
    assert {pair["id"] for pair in with_text} == {row["id"] for row in exact}  # the most similar ones
    assert all(len(p["text"]) == PAIR_TEXT_CHARS and p["text"].endswith("…") for p in with_text)
    assert all(p["duplicate_text"] == p["text"] for p in with_text)
