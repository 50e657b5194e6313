"""`dedup`: drop exact, near (MinHash) or semantic (embedding) duplicates, keeping the first row.

Chain several, cheapest first (exact, then minhash, then embedding). The manifest lists, for every
dropped row, the id of the kept row it duplicated and their similarity, and for the most similar
pairs both compared texts too (clipped), so a reader (and the report) can judge the threshold.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from synthkd.curate.embeddings import (
    EMBEDDED_ENCODER,
    ENCODER_DESCRIPTION,
    EmbeddingCache,
    embed_float16,
    encoder_modules,
    encoder_spec,
)
from synthkd.curate.exact import exact_duplicates
from synthkd.curate.minhash import minhash_duplicates
from synthkd.extras import SIMILARITY_SEARCH, check_installed
from synthkd.steps.base import CheckContext, Columns, Row, Step, StepContext, StepResult, require_columns
from synthkd.text import clip

DEFAULT_THRESHOLDS = {"minhash": 0.8, "embedding": 0.95}
DEFAULT_SHINGLE_SIZES = {"word": 3, "char": 5}
# The dropped text is kept for this many pairs, clipped to this many characters: enough to judge the
# threshold by, without a manifest that grows with the data.
PAIRS_WITH_TEXT = 100
PAIR_TEXT_CHARS = 300


class DedupStep(Step):
    """Keep the first of each group of duplicates, by one method."""

    step: Literal["dedup"] = "dedup"
    taxonomy: ClassVar[str] = "curation"  # duplicates removed
    citation: ClassVar[str] = """\
@inproceedings{lee2022deduplicating,
  title = {Deduplicating Training Data Makes Language Models Better},
  author = {Lee, Katherine and Ippolito, Daphne and Nystrom, Andrew and Zhang, Chiyuan and Eck, Douglas
    and Callison-Burch, Chris and Carlini, Nicholas},
  booktitle = {Proceedings of the 60th Annual Meeting of the Association for Computational Linguistics},
  year = {2022}
}
"""
    method: Literal["exact", "minhash", "embedding"] = Field(description="exact | minhash | embedding")
    columns: list[str] = Field(default_factory=lambda: ["instruction"], description="texts compared, joined")
    threshold: float | None = Field(
        None, gt=0, le=1, description="minhash: Jaccard (default 0.8); embedding: cosine (default 0.95)"
    )
    shingle: Literal["word", "char"] = Field(
        "word", description="minhash shingles: word or character n-grams"
    )
    shingle_size: int | None = Field(None, ge=1, description="n of the n-grams (word 3, char 5)")
    num_perm: int = Field(128, ge=16, description="minhash permutations")
    model: str = Field(EMBEDDED_ENCODER, description="sentence-transformers model: name, folder or embedded")
    encoder: Literal["transformer", "static"] = Field("transformer", description=ENCODER_DESCRIPTION)
    index: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto", description="faiss index; auto: flat, then ivf"
    )
    exact_max: int = Field(20_000, ge=1, description="auto uses exact search up to this many rows")
    batch_size: int = Field(64, ge=1, description="encoding batch size")

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns(set(self.columns), columns, ctx, "columns", "dedup")
        # Before any request: a core install has neither (see synthkd.extras).
        if self.method == "minhash":
            check_installed(("datasketch",), "curate", "MinHash dedup", ctx.at("method"))
        elif self.method == "embedding":
            needed = (*SIMILARITY_SEARCH, *encoder_modules(encoder_spec(self.model, self.encoder)))
            check_installed(needed, "curate", "semantic (embedding) dedup", ctx.at("method"))
        return columns

    def text(self, row: Row) -> str:
        return "\n".join(str(row.get(column) or "") for column in self.columns)

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        if not rows:  # every row dropped before this step: nothing to compare, no model to load
            return StepResult([], details={"duplicates": []})
        texts = [self.text(row) for row in rows]
        ctx.progress.set_total(len(rows))
        if self.method == "exact":
            found = {index: (first, 1.0) for index, first in exact_duplicates(texts).items()}
        elif self.method == "minhash":
            found = minhash_duplicates(
                texts,
                self.threshold or DEFAULT_THRESHOLDS["minhash"],
                self.num_perm,
                self.shingle,
                self.shingle_size or DEFAULT_SHINGLE_SIZES[self.shingle],
            )
        else:
            cache = EmbeddingCache()
            try:
                spec = encoder_spec(self.model, self.encoder)
                vectors, _ = embed_float16(texts, spec, self.batch_size, cache, ctx.encode)
            finally:
                cache.close()
            from synthkd.curate.semantic import semantic_duplicates  # numpy: when used

            found = semantic_duplicates(
                vectors, self.threshold or DEFAULT_THRESHOLDS["embedding"], self.index, self.exact_max
            )
        ctx.progress.advance(len(rows))
        result = StepResult([row for index, row in enumerate(rows) if index not in found])
        if found:
            result.dropped[f"duplicate_{self.method}"] = len(found)
        dropped = sorted(found.items())  # (index, (index of the kept row, similarity)), in row order
        pairs = [
            {"id": rows[index]["id"], "duplicate_of": rows[first]["id"], "similarity": round(score, 4)}
            for index, (first, score) in dropped
        ]
        most_similar = sorted(range(len(dropped)), key=lambda i: -dropped[i][1][1])[:PAIRS_WITH_TEXT]
        for i in most_similar:
            index, (first, _) = dropped[i]
            pairs[i]["text"] = clip(texts[index], PAIR_TEXT_CHARS)
            pairs[i]["duplicate_text"] = clip(texts[first], PAIR_TEXT_CHARS)
        result.details["duplicates"] = pairs
        return result
