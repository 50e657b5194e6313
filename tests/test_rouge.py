"""RougeLPool decides exactly as the rouge-score package does."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize

from synthkd.curate.rouge import RougeLPool, f1_from_lcs, lcs_length, rouge_tokens

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
SEEDS = [
    json.loads(line)["instruction"]
    for line in (Path(__file__).resolve().parents[1] / "recipes/self_instruct/seed_tasks.jsonl")
    .read_text()
    .splitlines()
]
EDGE_CASES = [
    "",
    "!!! ???",
    "Café crème, s'il vous plaît",
    "the the the the",
    "The THE the.",
    "a b a b a",
    "b a b",
    "東京 東京",  # no ASCII letters or digits: zero tokens, so F1 0 even against itself
    "naïve don't",  # non-ASCII letters split a word: na / ve
    "\u212a-means K",  # the Kelvin sign lowercases to an ASCII k
    "İstanbul snake_case ＡＢ１",  # İ lowercases to i + a combining dot; full-width and _ separate
    "tab\tnew\nline\u00a0nbsp 700-1000",
]


def reference_f1(candidate: str, reference: str) -> float:
    return SCORER.score(reference, candidate)["rougeL"].fmeasure


def edits(rng: random.Random, text: str) -> str:
    """A planted near-duplicate: words dropped or swapped, case and punctuation changed."""
    words = text.split()
    for _ in range(rng.randint(0, 3)):
        edit = rng.random()
        if len(words) > 2 and edit < 0.4:
            del words[rng.randrange(len(words))]
        elif len(words) > 1 and edit < 0.8:
            i = rng.randrange(len(words) - 1)
            words[i], words[i + 1] = words[i + 1], words[i]
        elif words:
            i = rng.randrange(len(words))
            words[i] = words[i].upper() if rng.random() < 0.5 else words[i].strip(".,?!") + ","
    return " ".join(words) + rng.choice(["", ".", " !", "?"])


def test_tokens_equal_rouge_score_tokens():
    for text in EDGE_CASES + SEEDS:
        assert rouge_tokens(text) == rouge_tokenize.tokenize(text, None)


def test_f1_equals_rouge_score_to_the_last_bit():
    rng = random.Random(0)
    texts = EDGE_CASES + SEEDS[:40] + [edits(rng, rng.choice(SEEDS)) for _ in range(40)]
    vocabulary: dict[str, int] = {}
    for candidate in texts:
        for reference in rng.sample(texts, 12):
            a = [vocabulary.setdefault(t, len(vocabulary)) for t in rouge_tokens(candidate)]
            b = [vocabulary.setdefault(t, len(vocabulary)) for t in rouge_tokens(reference)]
            assert f1_from_lcs(lcs_length(a, b), len(a), len(b)) == reference_f1(candidate, reference)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.9])
def test_filter_keeps_and_drops_exactly_like_brute_force(threshold: float):
    rng = random.Random(threshold)
    candidates = [
        edits(rng, rng.choice(SEEDS)) if rng.random() < 0.5 else rng.choice(SEEDS) for _ in range(150)
    ]
    candidates += [" ".join(rng.sample(" ".join(SEEDS).split(), 9)) for _ in range(150)] + EDGE_CASES
    pool_texts = SEEDS[:60]
    expected, kept = [], list(pool_texts)
    for candidate in candidates:
        keep = max((reference_f1(candidate, text) for text in kept), default=0.0) < threshold
        expected.append(keep)
        if keep:
            kept.append(candidate)
    decisions = RougeLPool(pool_texts).filter_candidates(candidates, threshold)
    assert decisions == expected
    assert 0 < sum(decisions) < len(decisions)  # the sample exercises both outcomes


def test_max_f1_is_exact_above_the_threshold():
    pool = RougeLPool(SEEDS)
    for text in SEEDS[:20]:
        assert pool.max_f1(text, 0.7) == 1.0
    rng = random.Random(1)
    probes = ["Write a short story about a robot who learns to paint."] + [
        edits(rng, rng.choice(SEEDS)) for _ in range(5)
    ]
    for probe in probes:
        assert pool.max_f1(probe) == max(reference_f1(probe, seed) for seed in SEEDS)
