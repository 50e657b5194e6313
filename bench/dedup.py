"""Dedup methods on 100,000 short instructions with planted near-duplicates.

    python bench/dedup.py [--rows 100000] [--methods exact,minhash,embedding]

Instructions are generated deterministically from word lists; 10% are planted copies of earlier
rows: a third differ only in case and punctuation, a third by a small edit (a word dropped, two
swapped, one added), a third by a synonym swap (a paraphrase). Each method runs in its own process,
so its peak memory (max RSS) is its own. For the embedding method, encoding time is reported apart
from index and search time, and the approximate index's drops are compared with exact search on the
same vectors. Recall: planted copies dropped; precision: dropped rows that are planted copies.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import time

VERBS = [
    "Explain",
    "Describe",
    "Summarise",
    "Compare",
    "List",
    "Outline",
    "Evaluate",
    "Illustrate",
    "Analyse",
    "Define",
]
ADJECTIVES = [
    "practical",
    "historical",
    "common",
    "surprising",
    "basic",
    "advanced",
    "hidden",
    "modern",
    "ethical",
    "economic",
    "simple",
    "lesser-known",
    "key",
    "typical",
    "recent",
]
NOUNS = [
    "causes",
    "effects",
    "benefits",
    "risks",
    "methods",
    "principles",
    "mistakes",
    "trends",
    "limits",
    "uses",
    "origins",
    "costs",
    "rules",
    "tools",
    "myths",
]
TOPICS = [
    "solar power",
    "urban gardening",
    "machine translation",
    "sleep hygiene",
    "bread baking",
    "river ecology",
    "credit scores",
    "vaccine trials",
    "chess openings",
    "cloud storage",
    "bird migration",
    "tax returns",
    "remote work",
    "coral reefs",
    "electric cars",
    "jazz harmony",
    "food safety",
    "password managers",
    "volcanoes",
    "public libraries",
    "marathon training",
    "data privacy",
    "compost",
    "tea ceremonies",
]
AUDIENCES = [
    "for a child",
    "for a beginner",
    "for an expert",
    "for a manager",
    "in two sentences",
    "with an example",
    "step by step",
    "in plain words",
    "for a student",
    "as a table",
]
SYNONYMS = {
    "Explain": "Clarify",
    "Describe": "Depict",
    "List": "Enumerate",
    "Compare": "Contrast",
    "common": "frequent",
    "basic": "fundamental",
    "advanced": "sophisticated",
    "benefits": "advantages",
    "risks": "dangers",
    "methods": "techniques",
    "mistakes": "errors",
    "uses": "applications",
    "a beginner": "a novice",
    "a child": "a kid",
    "an example": "an illustration",
}


def build(rows: int, seed: int = 0) -> tuple[list[str], dict[int, tuple[int, str]]]:
    """Instructions and the planted copies: {index: (source index, kind)}."""
    rng = random.Random(seed)
    texts: list[str] = []
    planted: dict[int, tuple[int, str]] = {}
    seen: set[str] = set()
    while len(texts) < rows:
        if texts and rng.random() < 0.1:
            source = rng.randrange(len(texts))
            kind = ("format", "edit", "paraphrase")[len(planted) % 3]
            copy = plant(rng, texts[source], kind)
            if copy is not None and copy != texts[source]:
                planted[len(texts)] = (source, kind)
                texts.append(copy)
            continue
        text = (
            f"{rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} of {rng.choice(TOPICS)} "
            f"and {rng.choice(TOPICS)} {rng.choice(AUDIENCES)}."
        )
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts, planted


def plant(rng: random.Random, text: str, kind: str) -> str | None:
    words = text.rstrip(".").split()
    if kind == "format":
        return " ".join(w.upper() if rng.random() < 0.3 else w for w in words) + "!"
    if kind == "edit":
        i = rng.randrange(len(words) - 1)
        choice = rng.randrange(3)
        if choice == 0:
            words.insert(i, "really")
        elif choice == 1:
            words[i], words[i + 1] = words[i + 1], words[i]
        else:
            words.append("please")
        return " ".join(words) + "."
    swapped = text
    for word, synonym in SYNONYMS.items():
        if word in swapped:
            return swapped.replace(word, synonym, 1)
    return None


def run_method(method: str, rows: int, queue: multiprocessing.Queue) -> None:
    texts, _ = build(rows)
    report: dict = {"method": method}
    clock = time.perf_counter()
    if method == "exact":
        from synthkd.curate.exact import exact_duplicates

        found = exact_duplicates(texts)
    elif method == "minhash":
        from synthkd.curate.minhash import minhash_duplicates

        found = minhash_duplicates(texts, threshold=0.7)
    else:
        from synthkd.curate.embeddings import embed
        from synthkd.curate.semantic import semantic_duplicates

        vectors, _ = embed(texts, batch_size=128)
        report["encode_seconds"] = time.perf_counter() - clock
        clock = time.perf_counter()
        found = semantic_duplicates(vectors, threshold=0.95, index="ivf")
        report["search_seconds"] = time.perf_counter() - clock
        exact_clock = time.perf_counter()
        exact = semantic_duplicates(vectors, threshold=0.95, index="flat")
        report["exact_search_seconds"] = time.perf_counter() - exact_clock
        report["ivf_recall_of_exact"] = len(set(found) & set(exact)) / max(1, len(exact))
        clock = time.perf_counter() - report["search_seconds"]  # total below = search only
    report["seconds"] = report.get("search_seconds", time.perf_counter() - clock)
    report["dropped"] = sorted(found)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(report)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--methods", default="exact,minhash,embedding")
    args = parser.parse_args()
    _, planted = build(args.rows)
    kinds = ("format", "edit", "paraphrase")
    counts = ", ".join(f"{k} {sum(1 for _, kind in planted.values() if kind == k)}" for k in kinds)
    print(f"{args.rows} rows, {len(planted)} planted copies ({counts})\n")
    print(
        "| method | seconds (search) | encode s | peak RSS MB | dropped | recall (planted) | precision | "
        "recall by kind (format / edit / paraphrase) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    context = multiprocessing.get_context("spawn")
    for method in args.methods.split(","):
        queue = context.Queue()
        process = context.Process(target=run_method, args=(method, args.rows, queue))
        process.start()
        report = queue.get()
        process.join()
        dropped = set(report["dropped"])
        recall = len(dropped & set(planted)) / len(planted)
        precision = len(dropped & set(planted)) / max(1, len(dropped))
        by_kind = []
        for kind in ("format", "edit", "paraphrase"):
            of_kind = {i for i, (_, k) in planted.items() if k == kind}
            by_kind.append(f"{len(dropped & of_kind) / len(of_kind):.2f}")
        encode = f"{report['encode_seconds']:.0f}" if "encode_seconds" in report else "-"
        memory = report["peak_rss_mb"]
        print(
            f"| {method} | {report['seconds']:.1f} | {encode} | {memory:.0f} | {len(dropped)} | "
            f"{recall:.3f} | {precision:.3f} | {' / '.join(by_kind)} |",
            flush=True,
        )
        if "ivf_recall_of_exact" in report:
            agreement = report["ivf_recall_of_exact"]
            print(
                f"|   (embedding: approximate IVF drops vs exact flat search: recall {agreement:.4f}; "
                f"exact search took {report['exact_search_seconds']:.0f} s) | | | | | | | |"
            )


if __name__ == "__main__":
    main()
