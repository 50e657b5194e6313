"""ROUGE-L near-duplicate filtering: synthkd's RougeLPool against the `rouge-score` package.

    python bench/rouge.py [--pool 10000] [--candidates 10000] [--sample 100] [--no-full-check]

Builds a pool and candidates deterministically from the 175 Self-Instruct seed instructions
(thirds of three seeds recombined, a few words swapped for others; 10% of the candidates are
planted near-duplicates of pool items), then decides for every candidate whether its best ROUGE-L
F1 against the whole, fixed pool is >= 0.7, as Self-Instruct does. rouge-score over all pool x
candidate pairs would take hours, so it runs on `--sample` candidates against the whole pool: its
time is measured there and extrapolated, and the decisions on those candidates must be identical.

The full check then verifies every candidate's decision independently of RougeLPool's code:
rouge-score's own tokeniser, a dense matrix product for the bag-overlap bound on all pairs, and
rouge-score's scorer on each pair that bound cannot rule out.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from rouge_score import rouge_scorer
from rouge_score import tokenize as rouge_tokenize

from synthkd.curate.rouge import RougeLPool

THRESHOLD = 0.7
# All 175 Self-Instruct seed tasks, shipped with the self_instruct recipe (Apache-2.0, see its README).
SEEDS = Path(__file__).resolve().parents[1] / "recipes/self_instruct/seed_tasks.jsonl"


def seed_instructions() -> list[str]:
    return [json.loads(line)["instruction"] for line in SEEDS.read_text().splitlines() if line.strip()]


def recombine(rng: random.Random, seeds: list[str], vocabulary: list[str]) -> str:
    """A new instruction: the k-th third of a random seed for k = 0, 1, 2, a few words swapped.

    Thirds of three seeds rather than halves of two: with only 175 seeds, halves collide so often
    that a third of unplanted candidates are near-duplicates; thirds give a realistic ~5%.
    """
    words: list[str] = []
    for k in range(3):
        seed = rng.choice(seeds).split()
        words += seed[k * len(seed) // 3 : (k + 1) * len(seed) // 3]
    words = words or [rng.choice(vocabulary)]
    for _ in range(rng.randint(1, 4)):
        words[rng.randrange(len(words))] = rng.choice(vocabulary)
    return " ".join(words)


def near_copy(rng: random.Random, text: str) -> str:
    """A small edit: drop or swap a word, change case or punctuation."""
    words = text.split()
    edit = rng.randrange(3)
    if edit == 0 and len(words) > 4:
        del words[rng.randrange(len(words))]
    elif edit == 1 and len(words) > 2:
        i = rng.randrange(len(words) - 1)
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        words = [word.upper() if rng.random() < 0.2 else word for word in words] + ["!"]
    return " ".join(words)


def build(pool_size: int, candidate_count: int) -> tuple[list[str], list[str]]:
    rng = random.Random(0)
    seeds = seed_instructions()
    vocabulary = sorted({word for seed in seeds for word in seed.split()})
    pool = [recombine(rng, seeds, vocabulary) for _ in range(pool_size)]
    candidates = [
        near_copy(rng, rng.choice(pool)) if rng.random() < 0.1 else recombine(rng, seeds, vocabulary)
        for _ in range(candidate_count)
    ]
    return pool, candidates


def _bag_columns(tokens: list[str], columns: dict[tuple[str, int], int]) -> list[int]:
    """One column per (token, k-th occurrence): the multiset overlap of two texts is then the
    number of columns they share, i.e. a dot product of 0/1 rows."""
    seen: dict[str, int] = {}
    result = []
    for token in tokens:
        occurrence = seen.get(token, 0)
        seen[token] = occurrence + 1
        result.append(columns.setdefault((token, occurrence), len(columns)))
    return result


def _indicator(rows: list[list[int]], width: int) -> np.ndarray:
    matrix = np.zeros((len(rows), width), dtype=np.float32)  # counts <= 2**24 stay exact in float32
    for i, row in enumerate(rows):
        matrix[i, row] = 1.0
    return matrix


def full_check(pool: list[str], candidates: list[str], ours: list[bool]) -> tuple[int, float, bool]:
    """Every candidate's decision, recomputed without RougeLPool: (pairs scored, seconds, identical).

    LCS <= min(lengths) and LCS <= the bag overlap, so F1 <= 2 * bound / (len_a + len_b); a pair whose
    bound is below the threshold cannot be a near-duplicate. The bound comes from a dense matrix
    product over all pairs, and rouge-score's public scorer decides every pair the bound keeps.
    """
    clock = time.perf_counter()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool_tokens = [rouge_tokenize.tokenize(text, None) for text in pool]
    candidate_tokens = [rouge_tokenize.tokenize(text, None) for text in candidates]
    columns: dict[tuple[str, int], int] = {}
    pool_rows = [_bag_columns(tokens, columns) for tokens in pool_tokens]
    candidate_rows = [_bag_columns(tokens, columns) for tokens in candidate_tokens]
    pool_matrix = _indicator(pool_rows, len(columns))
    pool_lengths = np.array([len(tokens) for tokens in pool_tokens], dtype=np.float64)
    candidate_lengths = np.array([len(tokens) for tokens in candidate_tokens], dtype=np.float64)
    decisions = [False] * len(candidates)
    scored = 0
    for start in range(0, len(candidates), 1000):  # 1000 x pool floats at a time bounds the memory
        stop = min(start + 1000, len(candidates))
        overlap = _indicator(candidate_rows[start:stop], len(columns)) @ pool_matrix.T
        lengths = candidate_lengths[start:stop, None]
        bound = np.minimum(overlap, np.minimum(lengths, pool_lengths[None, :]))
        # Slack: the bound and rouge-score's F1 are rounded differently; rouge-score decides.
        upper = 2.0 * bound / (lengths + pool_lengths[None, :])
        for offset, row in np.argwhere(upper >= THRESHOLD - 1e-9):
            i = start + int(offset)
            scored += 1
            decisions[i] |= scorer.score(pool[int(row)], candidates[i])["rougeL"].fmeasure >= THRESHOLD
    return scored, time.perf_counter() - clock, decisions == ours


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=int, default=10_000, help="instructions in the fixed pool")
    parser.add_argument("--candidates", type=int, default=10_000, help="candidates to decide on")
    parser.add_argument(
        "--sample", type=int, default=100, help="candidates rouge-score decides, timed and extrapolated"
    )
    parser.add_argument(
        "--no-full-check",
        dest="full_check",
        action="store_false",
        help="skip the independent check of every candidate's decision (a few seconds)",
    )
    args = parser.parse_args()
    pool, candidates = build(args.pool, args.candidates)

    clock = time.perf_counter()
    index = RougeLPool(pool)
    ours = [index.is_near_duplicate(candidate, THRESHOLD) for candidate in candidates]
    ours_seconds = time.perf_counter() - clock

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    sample = random.Random(1).sample(range(len(candidates)), min(args.sample, len(candidates)))
    clock = time.perf_counter()
    theirs = {
        i: max(scorer.score(reference, candidates[i])["rougeL"].fmeasure for reference in pool) >= THRESHOLD
        for i in sample
    }
    sample_seconds = time.perf_counter() - clock
    theirs_seconds = sample_seconds * len(candidates) / len(sample)
    identical = all(ours[i] == theirs[i] for i in sample)

    full = full_check(pool, candidates, ours) if args.full_check else None

    pairs = len(pool) * len(candidates)
    print(
        f"pool {len(pool):,}, candidates {len(candidates):,}, threshold {THRESHOLD}; RougeLPool drops "
        f"{sum(ours):,} candidates ({sum(ours) / len(candidates):.1%}); rouge-score drops "
        f"{sum(theirs.values())} of the {len(sample)} sampled\n"
    )
    print("| method | pairs | seconds | pairs/s | speed-up | decisions identical |")
    print("|---|---:|---:|---:|---:|---|")
    print(
        f"| rouge-score `RougeScorer(['rougeL'])` | {pairs:,} | {theirs_seconds:,.0f} (extrapolated from "
        f"{len(sample)} candidates, {sample_seconds:.1f} s measured) | {pairs / theirs_seconds:,.0f} | 1x | "
        "reference |"
    )
    print(
        f"| synthkd `RougeLPool` | {pairs:,} | {ours_seconds:.2f} (measured) | {pairs / ours_seconds:,.0f} | "
        f"{theirs_seconds / ours_seconds:,.0f}x | {'yes' if identical else 'NO'}, on the {len(sample)} "
        "sampled candidates |"
    )
    if full is not None:
        checked_pairs, full_seconds, full_identical = full
        print(
            f"| independent full check (dense bag bound + rouge-score on the {checked_pairs:,} pairs it "
            f"cannot rule out) | {pairs:,} | {full_seconds:.1f} (measured) | {pairs / full_seconds:,.0f} | "
            f"{theirs_seconds / full_seconds:,.0f}x | {'yes' if full_identical else 'NO'}, on all "
            f"{len(candidates):,} candidates |"
        )
    if not identical or (full is not None and not full[2]):
        raise SystemExit("decisions differ from rouge-score")


if __name__ == "__main__":
    main()
