"""Rows that stream (`synthkd.streaming`): a run's last row-wise steps (label, filter, judge,
logits) take the rows a chunk at a time and write each chunk as it is done. A streamed run must
give exactly the outputs of the same run in one pass; its outputs must be on disk while later
chunks are still being asked; a run that loses too many rows stops before the next chunk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from datasets import load_from_disk
from helpers import read_jsonl, write_jsonl, write_recipe

import synthkd
from synthkd.cli import main
from synthkd.errors import RunIncompleteError
from synthkd.output import RunWriter, write_run
from synthkd.pipeline import RunResult, run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.base import Row, Step, StepContext, StepResult
from synthkd.streaming import ChunkedProgress, RowsOnDisk, streamed_tail
from synthkd.testing.fake_openai import FakeOpenAIServer

ROWS = 40
CHUNK = 7  # 40 rows: five chunks of 7 and one of 5
JUDGE = "(?s)impartial judge.*"
SCRIPT = [
    {"match": r"Describe item 13\.", "status": 500, "message": "scripted outage for one row"},
    {"match": JUDGE + r"item 2\d\.", "reply": '{"score": 2, "justification": "weak"}'},
    {"match": JUDGE, "reply": '{"score": 8, "justification": "fine"}'},
]


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer(script=SCRIPT) as running:
        yield running


def recipe(tmp_path: Path, server: FakeOpenAIServer, out: str, *extra_steps: dict) -> Path:
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Describe item {i}."} for i in range(ROWS)])
    return write_recipe(
        tmp_path / f"{out}.yaml",
        {
            "name": "streamed",
            "teacher": {
                "backend": "openai",
                "model": "gpt-4o-mini",
                "base_url": server.base_url,
                "api_key_env": None,
                "max_attempts": 1,
                "params": {"max_tokens": 32},
            },
            "steps": [
                {"step": "load", "path": "seeds.jsonl"},
                {"step": "label"},
                {"step": "filter", "drop_regex": r"item 3\d"},
                {"step": "judge", "min_score": 5},
                *extra_steps,
            ],
            "output": {"dir": str(tmp_path / out), "report": "none", "max_failure_ratio": 0.5},
        },
    )


def run_in(tmp_path, server, monkeypatch, out: str, chunk_rows: int, *extra_steps: dict) -> Path:
    monkeypatch.setattr("synthkd.pipeline.CHUNK_ROWS", chunk_rows)
    monkeypatch.setenv("SYNTHKD_CACHE_DIR", str(tmp_path / f"cache-{out}"))  # each run asks anew
    server.reset()
    assert main(["run", str(recipe(tmp_path, server, out, *extra_steps))]) == 0
    return tmp_path / out


FUNNEL = ("rows_in", "rows_out", "rows_failed", "rows_dropped", "requests_sent", "cache_hits", "details")


def test_a_streamed_run_writes_what_one_pass_writes(tmp_path, server, monkeypatch):
    whole = run_in(tmp_path, server, monkeypatch, "whole", 10_000)
    streamed = run_in(tmp_path, server, monkeypatch, "streamed", CHUNK)
    assert server.stats()["requests"] == ROWS + 29  # label all; judge all but the failed and filtered

    assert read_jsonl(streamed / "data.jsonl") == read_jsonl(whole / "data.jsonl")
    assert read_jsonl(streamed / "failures.jsonl") == read_jsonl(whole / "failures.jsonl")
    (failure,) = read_jsonl(whole / "failures.jsonl")
    assert failure["reason"] == "http_500" and failure["row"]["instruction"] == "Describe item 13."
    one, many = load_from_disk(str(whole / "dataset")), load_from_disk(str(streamed / "dataset"))
    assert many.features == one.features and many.to_list() == one.to_list()
    assert len(one) == 40 - 1 - 10 - 10  # one failed (13), ten filtered (30-39), ten judged weak (20-29)

    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (whole, streamed)]
    assert "streamed" not in manifests[0]
    assert manifests[1]["streamed"] == {"from_step": 1, "chunk_rows": CHUNK, "chunks": 6}
    steps = [manifest["steps"] for manifest in manifests]
    assert [[step[key] for key in FUNNEL] for step in steps[1]] == [
        [step[key] for key in FUNNEL] for step in steps[0]
    ]
    assert steps[1][3]["rows_dropped"] == {"below_min_score": 10}  # 20-29 all reached the judge
    for key in ("prompt_tokens", "completion_tokens", "cost_usd"):
        assert [step[key] for step in steps[1]] == [step[key] for step in steps[0]]


class PeekStep(Step):
    """A row-wise step that records, each time it runs, how many rows the run has written so far
    (the staging folder's data.jsonl beside the run folder)."""

    step: Literal["peek"] = "peek"
    row_wise: ClassVar[bool] = True
    seen: ClassVar[list[int]] = []

    async def run(self, rows: list[Row], ctx: StepContext) -> StepResult:
        (staged,) = Path.cwd().glob(".out.staging-*/data.jsonl")
        PeekStep.seen.append(sum(1 for _ in staged.open()))
        return StepResult(rows)


def test_each_chunk_is_written_while_later_chunks_are_asked(tmp_path, server, monkeypatch):
    synthkd.register_step(PeekStep)
    PeekStep.seen.clear()
    run_in(tmp_path, server, monkeypatch, "out", CHUNK, {"step": "peek"})
    # The chunks' rows after label, filter and judge, as the earlier chunks' were on disk.
    # Chunk 1 (items 0-6) keeps 7, chunk 2 (7-13) 6, chunk 3 (14-20) 6, the rest none.
    assert PeekStep.seen == [0, 7, 13, 19, 19, 19]
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 19


def test_a_stream_that_loses_too_many_rows_stops_before_the_next_chunk(tmp_path, server, monkeypatch):
    server.configure(fail_500=1.0)  # every request fails: the first chunk loses all its rows
    try:
        monkeypatch.setattr("synthkd.pipeline.CHUNK_ROWS", CHUNK)
        server.reset()
        with pytest.raises(RunIncompleteError) as stopped:
            synthkd.run(str(recipe(tmp_path, server, "out")), progress=False)
    finally:
        server.configure(fail_500=0.0)
    assert server.stats()["requests"] == CHUNK  # one attempt each (max_attempts 1), one chunk only
    result: RunResult = stopped.value.result
    assert result.out_dir == tmp_path / "out.incomplete" and not (tmp_path / "out").exists()
    assert len(result.failures) == CHUNK and len(read_jsonl(result.out_dir / "failures.jsonl")) == CHUNK
    assert "lost 7 of 7 rows" in result.manifest["incomplete"]


def test_the_result_of_a_streamed_run_reads_its_rows_from_disk(tmp_path, server, monkeypatch):
    monkeypatch.setattr("synthkd.pipeline.CHUNK_ROWS", CHUNK)
    loaded = load_recipe(recipe(tmp_path, server, "out"))
    result = run_recipe(loaded)
    assert isinstance(result.rows, RowsOnDisk) and len(result.rows) == 19
    assert list(result.rows) == read_jsonl(tmp_path / "out" / "data.jsonl")
    assert result.rows[0]["instruction"] == "Describe item 0." and result.rows[-1]["id"]


def test_only_the_last_row_wise_steps_stream(tmp_path, server):
    loaded = load_recipe(recipe(tmp_path, server, "out"))
    assert streamed_tail(loaded.recipe.steps) == 1  # load is not row-wise; label, filter, judge are
    dedup_last = load_recipe(recipe(tmp_path, server, "out", {"step": "dedup", "method": "exact"}))
    assert streamed_tail(dedup_last.recipe.steps) == 5  # a dedup at the end needs every row


def test_chunked_progress_ends_at_the_counted_total():
    class Bar(synthkd.steps.base.Progress):
        totals: list[int] = []

        def set_total(self, total: int) -> None:
            self.totals.append(total)

    bar = Bar()
    chunked = ChunkedProgress(bar, total_rows=10)
    for rows, requests in ((4, 8), (4, 8), (2, 3)):  # two samples a row, then some rows re-asked less
        chunked.begin_chunk(rows)
        chunked.set_total(requests)
    chunked.end()
    assert bar.totals == [20, 20, 19, 19]


def test_chunks_with_other_column_types_are_cast_to_common_ones(tmp_path):
    first = [{"id": "a", "note": None, "score": 1}]
    second = [{"id": "b", "note": "text", "score": 2.5, "extra": [1, 2]}]
    writer = RunWriter(tmp_path / "out")
    writer.add(first)
    writer.add(second)
    writer.finish(tmp_path / "out", {"rows": 2})
    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    write_run(tmp_path / "whole", [*first, *second], [], {"rows": 2})
    whole = load_from_disk(str(tmp_path / "whole" / "dataset"))
    assert dataset.to_list() == whole.to_list()
    assert dataset.features["note"].dtype == "string" and dataset.features["score"].dtype == "float64"


def test_chunks_arrow_cannot_unify_are_typed_from_all_rows(tmp_path):
    # A dict column in one chunk, text in the next: no cast joins them, so the dataset is typed
    # from every row at once, exactly as a run written in one chunk is.
    first = [{"id": "a", "meta": {"k": 1}}]
    second = [{"id": "b", "meta": "plain"}]
    writer = RunWriter(tmp_path / "out")
    writer.add(first)
    writer.add(second)
    writer.finish(tmp_path / "out", {"rows": 2})
    write_run(tmp_path / "whole", [*first, *second], [], {"rows": 2})
    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    whole = load_from_disk(str(tmp_path / "whole" / "dataset"))
    assert dataset.features == whole.features and dataset.to_list() == whole.to_list()
    assert not list(tmp_path.glob(".out.*")), "no staging folder is left"
