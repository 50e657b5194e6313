"""`doc_qa`: question-answer pairs grounded in documents, for retrieval-augmented skills.

Documents are split into chunks of at most `chunk_tokens` tokens. For each chunk the teacher
writes question/answer pairs with the passage text that supports each answer. A pair is kept only
when that evidence really is in the chunk and the answer's words are found in it, so the student
learns to answer from the context rather than from memory. Each row keeps its document, chunk id,
the chunk text as `context`, and the evidence span's offsets in the chunk.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr

from synthkd.cache import ResponseCache
from synthkd.chunking import check_tokenizer_installed, chunk_text, token_counter
from synthkd.data_files import read_rows
from synthkd.errors import RecipeError
from synthkd.shipped import not_found
from synthkd.steps.base import (
    CheckContext,
    Columns,
    Row,
    StepContext,
    StepPlan,
    StepResult,
    TeacherStep,
    exact_plan,
)
from synthkd.steps.parsing import ParseError, ask_parsed, failure_of, reask_prompt_field, strip_code_fence
from synthkd.steps.sources import SeedSource
from synthkd.teachers.base import ChatRequest
from synthkd.teachers.config import EMBEDDED_MODEL

TEXT_SUFFIXES = (".txt", ".md", ".markdown")
_WORD = re.compile(r"[a-z0-9]+")
# Words too common to show that an answer comes from the passage.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "and",
        "or",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "it",
        "its",
        "this",
        "that",
        "as",
    ]
)


class DocQAStep(TeacherStep, SeedSource):
    """Chunk documents, ask for grounded QA pairs, keep only the pairs the chunk supports."""

    step: Literal["doc_qa"] = "doc_qa"
    taxonomy: ClassVar[str] = "curation"  # questions grounded in a document collection
    documents: str = Field(
        description="a .jsonl/.json/.csv/.parquet of documents, a .txt/.md file, or a folder"
    )
    text_column: str = Field("text", description="column with the document text (tabular files)")
    title_column: str | None = Field("title", description="column with a title, if any")
    chunk_tokens: int = Field(256, ge=16, description="maximum tokens per chunk")
    chunk_overlap: int = Field(0, ge=0, description="tokens shared by consecutive chunks")
    tokenizer: str = Field(
        EMBEDDED_MODEL, description="tokenizer that counts tokens: Hub id, folder or embedded"
    )
    pairs_per_chunk: int = Field(2, ge=1, description="question-answer pairs asked for per chunk")
    min_answer_support: float = Field(
        0.8, ge=0, le=1, description="share of the answer's content words that must appear in the chunk"
    )
    prompt: str = Field(
        "prompts/doc_qa/generate.jinja",
        description="Jinja template asking for QA pairs, with their supporting text, from one chunk",
    )
    question_prompt: str = Field("prompts/doc_qa/question.jinja", description="the student's user message")
    reask_prompt: str = reask_prompt_field()

    _documents: list[Row] = PrivateAttr(default_factory=list)

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        check_tokenizer_installed(self.tokenizer, ctx.at("tokenizer"))  # the `local` extra's
        source = self.local_file(self.documents, ctx, "documents")
        if source is None:
            raise RecipeError(
                not_found("documents", self.documents, ctx.recipe_dir), where=ctx.at("documents")
            )
        self._documents = self._read(source, ctx)
        added = {
            "id",
            "doc_id",
            "chunk_id",
            "title",
            "context",
            "instruction",
            "prompt",
            "response",
            "evidence",
            "evidence_start",
            "evidence_end",
        }
        return None if columns is None else columns | added

    def _read(self, source: Path, ctx: CheckContext) -> list[Row]:
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
            return [
                {"doc_id": str(p.relative_to(source)), "title": p.stem, "text": p.read_text()} for p in files
            ]
        if source.suffix.lower() in TEXT_SUFFIXES:
            return [{"doc_id": source.name, "title": source.stem, "text": source.read_text()}]
        documents = []
        for index, row in enumerate(read_rows(source, "train")):
            if not isinstance(row.get(self.text_column), str):
                raise RecipeError(
                    f"document {index} has no text column {self.text_column!r}", where=ctx.at("text_column")
                )
            title = row.get(self.title_column) if self.title_column else None
            documents.append(
                {"doc_id": str(row.get("id", index)), "title": title or "", "text": row[self.text_column]}
            )
        return documents

    def chunks(self) -> list[Row]:
        count_tokens = token_counter(self.tokenizer)
        chunks = []
        for document in self._documents:
            pieces = chunk_text(document["text"], self.chunk_tokens, count_tokens, self.chunk_overlap)
            for index, (text, start, end) in enumerate(pieces):
                chunk_id = f"{document['doc_id']}#{index}"
                chunks.append({**document, "chunk_id": chunk_id, "chunk": text, "start": start, "end": end})
        return chunks

    def plan(self, rows: list[Row], cache: ResponseCache | None) -> tuple[list[Row], StepPlan]:
        """Every chunk's request is known: the documents were read by `check`, and chunking them
        sends nothing. Each is looked up in the cache and may be re-asked once. Rows stand for
        `pairs_per_chunk` supported pairs a chunk; a cached answer stands in for itself, so a later
        step's requests about its pairs can be found in the cache too."""
        chunks = self.chunks()
        requests = [self._request(chunk) for chunk in chunks]
        plan, answers = exact_plan(self.teacher_config, requests, cache)
        plan = replace(plan, count="estimate", requests_max=2 * len(requests) or None)
        planned = list(rows)
        for chunk, answer in zip(chunks, answers, strict=True):
            pairs = _parsed_or_none(answer.text) if answer is not None else None
            if pairs is None:  # not asked yet, or re-asked: assume every pair is supported
                pairs = [self._example_pair(chunk, n) for n in range(self.pairs_per_chunk)]
                planned += [self._row(chunk, n, pair, (0, 0)) for n, pair in enumerate(pairs)]
            else:
                planned += self.supported_rows(chunk, pairs)[0]
        return planned, plan

    def _request(self, chunk: Row) -> ChatRequest:
        values = {"chunk": chunk["chunk"], "title": chunk["title"], "count": self.pairs_per_chunk}
        return self.chat(self.template("prompt").render(values))

    @staticmethod
    def _example_pair(chunk: Row, number: int) -> dict[str, str]:
        question = f"[question {number + 1} about chunk {chunk['chunk_id']}, written by doc_qa]"
        return {"question": question, "answer": "", "evidence": ""}

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        chunks = self.chunks()
        ctx.progress.set_total(len(chunks))
        requests = [self._request(chunk) for chunk in chunks]
        answers = await ask_parsed(
            ctx.dispatcher, requests, parse_qa_pairs, self.template("reask_prompt"), progress=ctx.progress
        )
        result = StepResult(list(rows))
        for chunk, answer in zip(chunks, answers, strict=True):
            if not answer.ok:
                result.failures.append(
                    failure_of({"chunk_id": chunk["chunk_id"]}, answer, row_id=chunk["chunk_id"])
                )
                continue
            kept, dropped = self.supported_rows(chunk, answer.value)
            result.rows += kept
            result.dropped.update(dropped)
        return result

    def supported_rows(self, chunk: Row, pairs: list[dict[str, str]]) -> tuple[list[Row], Counter]:
        """The rows of the pairs the chunk supports, and why the others were dropped."""
        kept, dropped = [], Counter()
        for number, pair in enumerate(pairs):
            reason, span = self.support(pair, chunk["chunk"])
            if reason is not None:
                dropped[reason] += 1
                continue
            assert span is not None
            kept.append(self._row(chunk, number, pair, span))
        return kept, dropped

    def support(self, pair: dict[str, str], chunk: str) -> tuple[str | None, tuple[int, int] | None]:
        """Why a pair is not supported by the chunk (or None), and where its evidence is."""
        span = find_span(pair["evidence"], chunk)
        if span is None:
            return "evidence_not_in_chunk", None
        if content_word_share(pair["answer"], chunk) < self.min_answer_support:
            return "answer_not_in_chunk", None
        return None, span

    def _row(self, chunk: Row, number: int, pair: dict[str, str], span: tuple[int, int]) -> Row:
        question = pair["question"]
        return {
            "id": f"{chunk['chunk_id']}-q{number}",
            "doc_id": chunk["doc_id"],
            "chunk_id": chunk["chunk_id"],
            "title": chunk["title"],
            "context": chunk["chunk"],
            "instruction": question,
            "prompt": self.template("question_prompt").render(
                {"context": chunk["chunk"], "question": question}
            ),
            "response": pair["answer"],
            "evidence": chunk["chunk"][span[0] : span[1]],
            "evidence_start": span[0],
            "evidence_end": span[1],
        }


def parse_qa_pairs(text: str) -> list[dict[str, str]]:
    """A JSON list of {question, answer, evidence} objects; a ParseError saying what is wrong."""
    try:
        value: Any = json.loads(strip_code_fence(text))
    except json.JSONDecodeError as exc:
        raise ParseError(f"not a JSON list ({exc.msg})") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ParseError("expected a non-empty JSON list of objects")
    pairs = []
    for item in value:
        if not isinstance(item, dict) or not all(
            isinstance(item.get(k), str) and item[k].strip() for k in ("question", "answer", "evidence")
        ):
            raise ParseError('each item needs non-empty "question", "answer" and "evidence" strings')
        pairs.append({key: item[key].strip() for key in ("question", "answer", "evidence")})
    return pairs


def _parsed_or_none(text: str) -> list[dict[str, str]] | None:
    try:
        return parse_qa_pairs(text)
    except ParseError:
        return None


def find_span(evidence: str, chunk: str) -> tuple[int, int] | None:
    """Offsets of `evidence` in `chunk`, ignoring case and runs of whitespace; None if absent."""
    words = evidence.strip().strip('"').split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(word) for word in words)
    match = re.search(pattern, chunk, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


def content_word_share(answer: str, chunk: str) -> float:
    """Share of the answer's content words (not stopwords) that occur in the chunk."""
    words = [word for word in _WORD.findall(answer.lower()) if word not in _STOPWORDS]
    if not words:
        return 1.0
    present = set(_WORD.findall(chunk.lower()))
    return sum(word in present for word in words) / len(words)
