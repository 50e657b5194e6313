"""Dedup methods on short instructions with planted near-duplicates, side by side with semhash.

    python bench/dedup.py [--rows 1000000] [--methods exact,minhash,static,static-cached,semhash]
                          [--minilm-rows 100000]

Instructions are generated deterministically from word lists; 10% are planted copies of earlier
rows: a third differ only in case and punctuation, a third by a small edit (a word dropped, two
swapped, one added), a third by a synonym swap (a paraphrase). Each method runs in its own process,
so its peak memory (max RSS) is its own. Recall: planted copies dropped; precision: dropped rows
that are planted copies.

Methods: `exact`, `minhash` (Jaccard 0.7), `static` and `minilm` (embedding dedup at cosine 0.95
with the static encoder distilled from the embedded MiniLM, or MiniLM itself: encode, then an
IVF index over float16 vectors, searched in chunks; the vectors are written to a fresh embedding
cache), `static-cached` (the same, reading the vectors `static` cached: what a rerun or a later
step pays), and `semhash` (semhash 0.5 with the same static encoder, its own usearch index).
MiniLM encodes about 500 texts/s on 2 cores, so it runs on the first `--minilm-rows` rows only, and
`static` is run there too (`static@<n>`), for a recall comparison on the same rows. `static-0.93`
(any number) is the static encoder at another cosine threshold (0.95 otherwise).

semhash is not a dependency of synthkd (not even of an extra: only this benchmark uses it); install
it beside synthkd first: pip install semhash==0.5.0
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


def run_method(method: str, rows: int, cache_dir: str, queue: multiprocessing.Queue) -> None:
    import os

    os.environ["SYNTHKD_CACHE_DIR"] = cache_dir  # the distilled encoder is kept there too
    texts, _ = build(rows)
    report: dict = {"method": method}
    clock = time.perf_counter()
    if method == "exact":
        from synthkd.curate.exact import exact_duplicates

        found = exact_duplicates(texts)
    elif method == "minhash":
        from synthkd.curate.minhash import minhash_duplicates

        found = minhash_duplicates(texts, threshold=0.7)
    elif method == "semhash":
        found = semhash_duplicates(texts, report)
    elif method == "distil":  # once, in its own process: the rows below time encoding, not this
        from synthkd.curate.embeddings import EMBEDDED_ENCODER, load_encoder

        load_encoder(f"static:{EMBEDDED_ENCODER}")
        found = {}
    else:
        from pathlib import Path

        from synthkd.curate.embeddings import EMBEDDED_ENCODER, EmbeddingCache, embed_float16, load_encoder
        from synthkd.curate.semantic import semantic_duplicates

        name, _, threshold = method.partition("-")  # static-0.93: another cosine threshold
        spec = EMBEDDED_ENCODER if name == "minilm" else f"static:{EMBEDDED_ENCODER}"
        load_encoder(spec)  # distilled (or loaded) before the clock starts: made once, not per run
        cache = EmbeddingCache(Path(cache_dir) / f"embeddings-{rows}.sqlite")
        clock = time.perf_counter()
        vectors, encoded = embed_float16(texts, spec, 128, cache)
        cache.close()
        report["encode_seconds"] = time.perf_counter() - clock
        report["encoded"] = encoded
        search = time.perf_counter()
        found = semantic_duplicates(vectors, threshold=float(threshold or 0.95), index="ivf")
        report["search_seconds"] = time.perf_counter() - search
    report["seconds"] = time.perf_counter() - clock
    report["dropped"] = sorted(found)
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(report)


def semhash_duplicates(texts: list[str], report: dict) -> set[int]:
    """semhash's self-deduplication at cosine 0.95 with our static encoder (semhash's own default
    encoder would be downloaded)."""
    from semhash import SemHash

    from synthkd.curate.embeddings import EMBEDDED_ENCODER, load_encoder

    model = load_encoder(f"static:{EMBEDDED_ENCODER}")
    clock = time.perf_counter()
    records = [{"id": str(i), "text": text} for i, text in enumerate(texts)]
    index = SemHash.from_records(records, columns=["text"], model=model)
    report["encode_seconds"] = time.perf_counter() - clock  # encode + index build
    search = time.perf_counter()
    result = index.self_deduplicate(threshold=0.95)
    report["search_seconds"] = time.perf_counter() - search
    return {int(duplicate.record["id"]) for duplicate in result.filtered}


def run_in_own_process(method: str, rows: int, cache_dir: str) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=run_method, args=(method, rows, cache_dir, queue))
    process.start()
    report = queue.get()
    process.join()
    return report


def print_row(label: str, report: dict, planted: dict[int, tuple[int, str]]) -> None:
    dropped = set(report["dropped"])
    recall = len(dropped & set(planted)) / len(planted)
    precision = len(dropped & set(planted)) / max(1, len(dropped))
    by_kind = []
    for kind in ("format", "edit", "paraphrase"):
        of_kind = {i for i, (_, k) in planted.items() if k == kind}
        by_kind.append(f"{len(dropped & of_kind) / len(of_kind):.3f}")
    encode = f"{report['encode_seconds']:.1f}" if "encode_seconds" in report else "-"
    search = f"{report['search_seconds']:.1f}" if "search_seconds" in report else "-"
    print(
        f"| {label} | {report['seconds']:.1f} | {encode} | {search} | {report['peak_rss_mb']:.0f} | "
        f"{len(dropped)} | {recall:.3f} | {precision:.3f} | {' / '.join(by_kind)} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--methods", default="exact,minhash,static,static-cached,semhash,minilm")
    parser.add_argument(
        "--minilm-rows", type=int, default=100_000, help="rows MiniLM (and static beside it) run on"
    )
    args = parser.parse_args()
    import tempfile

    cache_dir = tempfile.mkdtemp(prefix="synthkd-bench-dedup-")
    print(
        "| method | total s | encode s | search s | peak RSS MB | dropped | recall (planted) | precision | "
        "recall by kind (format / edit / paraphrase) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    distilled = run_in_own_process("distil", 10, cache_dir)
    print(
        f"| distil the static encoder (once) | {distilled['seconds']:.1f} | | | "
        f"{distilled['peak_rss_mb']:.0f} | | | | |"
    )
    for method in args.methods.split(","):
        rows = min(args.rows, args.minilm_rows) if method == "minilm" else args.rows
        names = ["static", method] if method == "minilm" and rows < args.rows else [method]
        for name in names:
            _, planted = build(rows)
            report = run_in_own_process(name.replace("-cached", ""), rows, cache_dir)
            label = f"{name}@{rows:,}" if rows != args.rows else name
            print_row(label, report, planted)
    print(f"\n{args.rows:,} rows; {cache_dir} holds the distilled encoder and the embedding caches")


if __name__ == "__main__":
    main()
