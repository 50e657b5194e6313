"""ROUGE-L near-duplicate filtering: synthkd's RougeLPool against the `rouge-score` package.

    python bench/rouge.py [--pool 10000] [--candidates 10000] [--sample 100]

Builds a pool and candidates deterministically from the 175 Self-Instruct seed instructions
(recombined halves and word swaps, with planted near-duplicates of pool items), then decides for
every candidate whether its best ROUGE-L F1 against the whole pool is >= 0.7, as Self-Instruct
does. rouge-score over all pool x candidate pairs would take hours, so it runs on `--sample`
candidates against the whole pool: its time is measured there and extrapolated, and the decisions
on those candidates must be identical.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from rouge_score import rouge_scorer

from synthkd.curate.rouge import RougeLPool

THRESHOLD = 0.7
SEEDS = Path(__file__).resolve().parents[2] / "shared/data/self-instruct/seed_tasks.jsonl"
LOCAL_SEEDS = Path(__file__).resolve().parents[1] / "recipes/self_instruct/seed_tasks.jsonl"


def seed_instructions() -> list[str]:
    path = SEEDS if SEEDS.exists() else LOCAL_SEEDS
    return [json.loads(line)["instruction"] for line in path.read_text().splitlines() if line.strip()]


def recombine(rng: random.Random, seeds: list[str], vocabulary: list[str]) -> str:
    """A new instruction: half of one seed, half of another, a few words swapped for others."""
    first, second = rng.choice(seeds).split(), rng.choice(seeds).split()
    words = first[: max(1, len(first) // 2)] + second[len(second) // 2 :]
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pool", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=100, help="candidates checked with rouge-score")
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

    pairs = len(pool) * len(candidates)
    print(
        f"pool {len(pool)}, candidates {len(candidates)}, threshold {THRESHOLD}; "
        f"synthkd drops {sum(ours)} candidates ({sum(theirs.values())} of the {len(sample)} sampled)\n"
    )
    print("| method | pairs | seconds | pairs/s | speed-up | same decisions |")
    print("|---|---:|---:|---:|---:|---|")
    print(
        f"| synthkd RougeLPool (measured) | {pairs:,} | {ours_seconds:.1f} | {pairs / ours_seconds:,.0f} | "
        f"{theirs_seconds / ours_seconds:.0f}x | {'yes' if identical else 'NO'} ({len(sample)} candidates) |"
    )
    print(
        f"| rouge-score (measured on {len(sample)} candidates, extrapolated) | {pairs:,} | "
        f"{theirs_seconds:.0f} | {pairs / theirs_seconds:,.0f} | 1x | |"
    )
    if not identical:
        raise SystemExit("decisions differ from rouge-score")


if __name__ == "__main__":
    main()
