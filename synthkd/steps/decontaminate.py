"""`decontaminate`: drop rows that overlap an evaluation set, so the student is not trained on the test."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.config_base import StrictModel
from synthkd.curate.decontamination import NgramIndex
from synthkd.curate.embeddings import ENCODER_DESCRIPTION, Encoder, encoder_modules, encoder_spec
from synthkd.data_files import read_rows
from synthkd.errors import RecipeError
from synthkd.extras import SIMILARITY_SEARCH, check_installed, require
from synthkd.hub_ids import is_hub_dataset_id
from synthkd.shipped import not_found
from synthkd.steps.base import CheckContext, Columns, Row, Step, StepContext, StepResult, require_columns


class EvalSet(StrictModel):
    path: str = Field(description="a local file or save_to_disk folder, or a Hub dataset id")
    columns: list[str] = Field(description="text columns of the evaluation set to check against")
    split: str = Field("test", description="split of a Hub dataset or DatasetDict folder")
    name: str | None = Field(None, description="name used in the report (default: the path)")


class DecontaminateStep(Step):
    """Drop rows sharing an n-gram (or a whole short question) with any evaluation set."""

    step: Literal["decontaminate"] = "decontaminate"
    taxonomy: ClassVar[str] = "curation"  # benchmark overlap removed
    citation: ClassVar[str] = """\
@inproceedings{brown2020gpt3,
  title = {Language Models are Few-Shot Learners},
  author = {Brown, Tom B. and Mann, Benjamin and Ryder, Nick and Subbiah, Melanie and Kaplan, Jared and
    others},
  booktitle = {Advances in Neural Information Processing Systems},
  year = {2020}
}
"""
    eval_sets: list[EvalSet] = Field(min_length=1, description="evaluation sets to protect")
    columns: list[str] = Field(
        default_factory=lambda: ["instruction", "response"], description="row texts checked"
    )
    ngram: int = Field(13, ge=3, description="n-gram length (GPT-3 used 13)")
    min_words: int = Field(8, ge=1, description="shorter evaluation texts are matched whole, if this long")
    embedding_threshold: float | None = Field(
        None, gt=0, le=1, description="also drop rows this cosine-similar to an evaluation text (paraphrases)"
    )
    model: str = Field("embedded", description="sentence-transformers model for the embedding check")
    encoder: Literal["transformer", "static"] = Field("transformer", description=ENCODER_DESCRIPTION)

    _index: NgramIndex | None = PrivateAttr(None)
    _eval_texts: list[tuple[str, str]] = PrivateAttr(default_factory=list)
    _hub_sets: list[EvalSet] = PrivateAttr(default_factory=list)

    def check(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns(set(self.columns), columns, ctx, "columns", "decontaminate")
        if self.embedding_threshold:  # before any request: a core install has no encoder
            needed = (*SIMILARITY_SEARCH, *encoder_modules(encoder_spec(self.model, self.encoder)))
            check_installed(needed, "curate", "decontamination by embeddings", ctx.at("embedding_threshold"))
        self._index = NgramIndex(self.ngram, self.min_words)
        for position, eval_set in enumerate(self.eval_sets):
            # Found, not recorded as the recipe's data (`local_file`): an evaluation set published
            # beside the training data would no longer be held out.
            source = ctx.find_file(eval_set.path, "eval_sets")
            if source is None:
                if is_hub_dataset_id(eval_set.path):
                    self._hub_sets.append(eval_set)  # loaded at run time
                    continue
                raise RecipeError(
                    not_found("evaluation set", eval_set.path, ctx.recipe_dir), where=ctx.at("eval_sets")
                )
            self._add(eval_set, read_rows(source, eval_set.split), ctx.at("eval_sets") + f".{position}")
        return columns

    def _add(self, eval_set: EvalSet, rows: list[Row], where: str) -> None:
        assert self._index is not None
        name = eval_set.name or eval_set.path
        missing = [c for c in eval_set.columns if rows and c not in rows[0]]
        if missing:
            raise RecipeError(
                f"evaluation set {name} has no column(s) {missing}; it has {sorted(rows[0])}", where=where
            )
        texts = [(str(row.get(c) or ""), name) for row in rows for c in eval_set.columns]
        self._index.add_all(texts)
        self._eval_texts += [(text, source) for text, source in texts if text.strip()]

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        assert self._index is not None
        for eval_set in self._hub_sets:
            from datasets import load_dataset

            self._add(
                eval_set, [dict(r) for r in load_dataset(eval_set.path, split=eval_set.split)], eval_set.path
            )
        self._hub_sets = []
        ctx.progress.set_total(len(rows))
        result = StepResult([])
        removed = []
        texts = ["\n".join(str(row.get(c) or "") for c in self.columns) for row in rows]
        similar = self._embedding_matches(texts, ctx.encode) if self.embedding_threshold else {}
        for index, row in enumerate(rows):
            hit = self._index.match(texts[index]) or similar.get(index)
            if hit is None:
                result.rows.append(row)
            else:
                result.dropped["contaminated"] += 1
                removed.append({"id": row["id"], "eval_set": hit[0], "overlap": hit[1]})
        ctx.progress.advance(len(rows))
        result.details["checked"] = [eval_set.name or eval_set.path for eval_set in self.eval_sets]
        result.details["method"] = f"{self.ngram}-gram" + (
            f" + embedding cosine >= {self.embedding_threshold}" if self.embedding_threshold else ""
        )
        result.details["removed"] = removed
        return result

    def _embedding_matches(self, texts: list[str], encode: Encoder | None) -> dict[int, tuple[str, str]]:
        """{row index: (evaluation set, the evaluation text)} for rows close to an evaluation text."""
        from synthkd.curate.embeddings import EmbeddingCache, embed

        if not texts or not self._eval_texts:
            return {}
        faiss = require("faiss", "curate", "decontamination by embeddings")
        cache = EmbeddingCache()
        try:
            spec = encoder_spec(self.model, self.encoder)
            eval_vectors, _ = embed([text for text, _ in self._eval_texts], spec, cache=cache)
            row_vectors, _ = embed(texts, spec, cache=cache, encode=encode)
        finally:
            cache.close()
        index = faiss.IndexFlatIP(eval_vectors.shape[1])
        index.add(eval_vectors)
        scores, labels = index.search(row_vectors, 1)
        assert self.embedding_threshold is not None
        return {
            row: (self._eval_texts[int(labels[row, 0])][1], self._eval_texts[int(labels[row, 0])][0])
            for row in range(len(texts))
            if scores[row, 0] >= self.embedding_threshold
        }
