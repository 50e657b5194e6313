"""`teacher.batch: true`: the requests go as OpenAI batch jobs to the fake server's Files and
Batches endpoints, through the real openai SDK, and come back into the same cache and dataset."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe
from rich.console import Console
from small_disk import one_error_line

from synthkd.cache import ResponseCache, request_key
from synthkd.cli import main
from synthkd.dispatch.batch_runner import QUEUE_FULL_MAX_WAIT_SECONDS, BatchRunner, QueueWait
from synthkd.dispatch.batch_store import BatchStore
from synthkd.dispatch.dispatcher import BATCH_STORE_NAME, Dispatcher
from synthkd.dispatch.outcome import DispatchStats
from synthkd.errors import TeacherFatalError
from synthkd.pricing import price_for
from synthkd.progress import add_step_bar, make_progress
from synthkd.recipe import load_recipe
from synthkd.teachers.base import BatchState, ChatRequest
from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.openai_backend import OpenAITeacher
from synthkd.testing.fake_openai import FakeOpenAIServer, ServerConfig

ROWS = 12
FAST = {**asdict(ServerConfig()), "batch_seconds": 0.3}


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.configure(**FAST)
    server.reset()


def recipe(tmp_path, server, name="batched", *, batch=True, out="out", **teacher):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Describe animal {i}."} for i in range(ROWS)])
    return write_recipe(
        tmp_path / f"{name}.yaml",
        {
            "name": name,
            "teacher": {
                "backend": "openai",
                "model": "fake-model",
                "base_url": server.base_url,
                "api_key_env": None,
                "batch": batch,
                "batch_poll_seconds": 0.1,
                "params": {"max_tokens": 32},
                **teacher,
            },
            "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / out), "report": "none", "max_failure_ratio": 0.5},
        },
    )


def answers(tmp_path, out="out") -> dict[str, str]:
    return {row["instruction"]: row["response"] for row in read_jsonl(tmp_path / out / "data.jsonl")}


def batch_stats(server) -> dict:
    return server.stats()["batches"]


def test_a_batch_run_gives_the_dataset_of_the_online_run(tmp_path, server, monkeypatch):
    assert main(["run", str(recipe(tmp_path, server))]) == 0
    assert server.stats()["requests"] == 0  # not one online request
    assert batch_stats(server)["batches_created"] == 1
    assert batch_stats(server)["items_submitted"] == ROWS
    batched = answers(tmp_path)

    monkeypatch.setenv("SYNTHKD_CACHE_DIR", str(tmp_path / "online-cache"))  # nothing cached
    assert main(["run", str(recipe(tmp_path, server, "online", batch=False, out="online"))]) == 0
    assert answers(tmp_path, "online") == batched and len(batched) == ROWS


def test_a_run_killed_while_its_batch_is_pending_resumes_by_polling(tmp_path, server, private_cache):
    server.configure(batch_seconds=4.0)
    path = recipe(tmp_path, server)
    child = subprocess.Popen(
        [sys.executable, "-m", "synthkd.cli", "run", str(path)],
        env={**os.environ, "SYNTHKD_CACHE_DIR": str(private_cache)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while batch_stats(server)["batches_created"] == 0:
        assert child.poll() is None and time.monotonic() < deadline, "the batch was never created"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (tmp_path / "out").exists()
    assert main(["run", str(path)]) == 0
    assert batch_stats(server)["batches_created"] == 1  # polled, never submitted again
    assert batch_stats(server)["items_resubmitted"] == 0
    assert len(answers(tmp_path)) == ROWS
    assert main(["run", str(path)]) == 0  # and the answers are cached: nothing more is sent
    assert batch_stats(server)["batches_created"] == 1


def test_failed_items_are_retried_in_a_later_batch(tmp_path, server):
    # An item fails each submission with probability 0.6, drawn from its key, which holds the
    # server's port, so the draws change from run to run. With 40 attempts the chance that one of
    # 12 items fails them all is ~2e-8 (the default 6 left it at 5%, and CI saw it happen), and
    # the chance that the first batch has no failure at all is 0.4**12 = 2e-5.
    server.configure(batch_item_failure_rate=0.6)
    assert main(["run", str(recipe(tmp_path, server, max_attempts=40))]) == 0
    stats = batch_stats(server)
    assert stats["batches_created"] >= 2 and stats["items_resubmitted"] > 0
    assert stats["items_submitted"] == ROWS + stats["items_resubmitted"]
    assert len(answers(tmp_path)) == ROWS
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert '"http_500"' in manifest  # the retries are counted under their reason


def test_items_an_expiring_batch_never_ran_are_sent_again_until_max_attempts(tmp_path, server):
    # Each batch runs half its items (rounded down) before it expires: 12 -> 6 -> 3 -> 2 -> 1 -> 1
    # left after five batches; the last item never runs and fails after max_attempts = 5.
    server.configure(batch_expire=True, batch_expire_fraction=0.5)
    assert main(["run", str(recipe(tmp_path, server, max_attempts=5))]) == 0
    assert batch_stats(server)["batches_created"] == 5
    assert len(answers(tmp_path)) == ROWS - 1
    (failure,) = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["reason"] == "batch_expired" and failure["attempts"] == 5


def test_a_full_queue_is_waited_out_without_using_up_attempts(tmp_path, server):
    """The fake server refuses the first three batches at validation with token_limit_exceeded
    (OpenAI's queue of enqueued tokens is full), then accepts. The job is started again from the
    same upload each time; with max_attempts 2 every row still gets its answer."""
    server.configure(batch_fail_validation=True, batch_fail_validation_times=3)
    assert main(["run", str(recipe(tmp_path, server, max_attempts=2))]) == 0
    stats = batch_stats(server)
    assert stats["batches_refused"] == 3 and stats["batches_created"] == 4
    assert stats["files_uploaded"] == 1  # started again from its upload, never uploaded again
    assert stats["items_resubmitted"] == 0  # refused batches run no item
    assert len(answers(tmp_path)) == ROWS
    assert read_jsonl(tmp_path / "out" / "failures.jsonl") == []
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert '"batch_queue_full"' in manifest  # the restarts are counted, under their own reason


def test_the_bar_says_the_requests_wait_for_the_providers_queue(tmp_path, server):
    server.configure(batch_fail_validation=True, batch_fail_validation_times=2)
    dispatcher = batch_dispatcher(tmp_path, server)
    requests = [ChatRequest(({"role": "user", "content": f"Name fish {i}."},)) for i in range(4)]
    outcomes, seen = asyncio.run(run_and_watch(dispatcher, requests))
    assert all(outcome.completion is not None for outcome in outcomes)
    assert any(
        text.startswith("waiting for the provider's batch queue to free: 4 requests, next try in")
        for text in seen
    ), seen
    assert dispatcher.stats.waiting_on == ""


def test_a_queue_that_never_frees_stops_the_run_with_one_line_and_the_same_command_resumes(
    tmp_path, server, private_cache
):
    server.configure(batch_fail_validation=True)  # every batch
    path = recipe(tmp_path, server, batch_queue_wait_seconds=1)
    env = {**os.environ, "SYNTHKD_CACHE_DIR": str(private_cache), "COLUMNS": "400"}
    began = time.monotonic()
    stopped = subprocess.run(
        [sys.executable, "-m", "synthkd.cli", "run", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stopped.returncode == 1, stopped.stderr
    assert time.monotonic() - began < 60  # 1 s of waiting, and the start of a Python process
    message = one_error_line(stopped)
    assert re.search(
        r"openai teacher 'fake-model': the provider's batch queue has been full for \d+ s", message
    )
    assert "token_limit_exceeded: Enqueued token limit reached" in message
    assert "answers received so far are cached and the jobs started are recorded" in message
    assert "the same command resumes" in message and "teacher.batch_queue_wait_seconds" in message
    refused = batch_stats(server)["batches_refused"]
    assert refused >= 2 and batch_stats(server)["files_uploaded"] == 1
    assert not (tmp_path / "out").exists()

    server.configure(batch_fail_validation=False)  # the queue frees
    assert main(["run", str(path)]) == 0
    stats = batch_stats(server)
    assert stats["files_uploaded"] == 1  # the recorded upload is started again
    assert stats["batches_created"] == refused + 1 and stats["items_submitted"] == ROWS
    assert len(answers(tmp_path)) == ROWS


def test_the_wait_for_a_full_queue_doubles_starts_over_and_never_passes_the_limit():
    queue = QueueWait(first=30.0, limit=3600.0)
    starts = []
    for now in (0.0, 40.0, 110.0):
        assert queue.refused(now) == now  # the queue has been full since the first refusal
        starts.append(queue.next_start - now)
    assert starts == [30.0, 60.0, 120.0]
    for _ in range(10):
        queue.refused(200.0)
    assert queue.wait == QUEUE_FULL_MAX_WAIT_SECONDS  # doubled up to the cap

    queue.accepted(new=False)  # a job of this run still runs: the clock stops, the wait stays
    assert queue.since is None and queue.wait == QUEUE_FULL_MAX_WAIT_SECONDS
    queue.accepted(new=True)  # a job got into the queue: there is room again
    assert queue.refused(5000.0) == 0.0 and queue.next_start == 5030.0

    queue.refused(5000.0 + 3590.0)
    assert queue.next_start == 5000.0 + 3600.0  # no start past the limit
    assert queue.refused(5000.0 + 3600.0) >= queue.limit  # ... and there the run stops


def test_a_batch_failed_for_its_contents_stops_the_run_with_the_providers_reasons():
    state = BatchState("failed", errors=(("invalid_value", "Line 3: bad method."),))
    with pytest.raises(TeacherFatalError, match="failed validation .invalid_value: Line 3: bad method"):
        BatchRunner.check_failure(state, TeacherConfig(backend="openai", model="m"))
    BatchRunner.check_failure(BatchState("failed", errors=(("token_limit_exceeded", "full"),)), None)


def test_a_crash_between_upload_and_start_starts_no_second_batch(tmp_path, server, private_cache):
    """The store has the file but no batch id: the batch the crashed run had started is found by
    its file; a file whose batch never started gets one, from the same upload."""
    path = recipe(tmp_path, server)
    teacher = load_recipe(path).recipe.steps[1].step_teacher()
    # What the label step asks: the instruction alone, with the recipe's params.
    requests = {
        request_key(teacher, request): request
        for request in (
            ChatRequest(({"role": "user", "content": f"Describe animal {i}."},), {"max_tokens": 32})
            for i in range(ROWS)
        )
    }
    jobs = OpenAITeacher(teacher).batches
    store = BatchStore(private_cache / BATCH_STORE_NAME, f"openai:fake-model {server.base_url}")

    async def crash_after_starting() -> str:
        file_id = await jobs.upload(requests)
        store.uploaded(file_id, list(requests))
        await jobs.create(file_id)  # ... and the process dies before recording the batch id
        await jobs.aclose()
        return file_id

    asyncio.run(crash_after_starting())
    store.close()
    assert main(["run", str(path)]) == 0
    assert batch_stats(server)["batches_created"] == 1
    assert batch_stats(server)["items_resubmitted"] == 0
    assert len(answers(tmp_path)) == ROWS


def test_an_upload_whose_batch_never_started_is_started_without_uploading_again(
    tmp_path, server, private_cache
):
    path = recipe(tmp_path, server)
    teacher = load_recipe(path).recipe.steps[1].step_teacher()
    request = ChatRequest(({"role": "user", "content": "Describe animal 0."},), {"max_tokens": 32})
    jobs = OpenAITeacher(teacher).batches
    store = BatchStore(private_cache / BATCH_STORE_NAME, f"openai:fake-model {server.base_url}")

    async def crash_after_uploading() -> None:
        store.uploaded(
            await jobs.upload({request_key(teacher, request): request}), [request_key(teacher, request)]
        )
        await jobs.aclose()

    asyncio.run(crash_after_uploading())
    store.close()
    assert main(["run", str(path)]) == 0
    stats = batch_stats(server)
    # The left upload got its batch; the other 11 requests went in a second one.
    assert stats["files_uploaded"] == 2 and stats["batches_created"] == 2 and stats["items_resubmitted"] == 0
    assert len(answers(tmp_path)) == ROWS


def test_batch_on_a_backend_without_batch_jobs_is_refused(tmp_path, server, capsys):
    path = recipe(tmp_path, server, backend="litellm", model="openai/fake-model")
    assert main(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "batched.yaml:" in err and "teacher.batch" in err and "has no batch jobs" in err


def test_a_spending_cap_holds_in_batch_mode(tmp_path, server, capsys):
    price = {"input_per_million": 0.0, "output_per_million": 1_000_000.0}
    # 32 USD worst case per item: a 100 USD cap lets 3 items go in the batch.
    assert main(["run", str(recipe(tmp_path, server, price=price, max_cost_usd=100))]) == 4
    assert batch_stats(server)["items_submitted"] == 3
    assert "max_cost_usd of teacher openai:fake-model" in capsys.readouterr().err


def test_batch_jobs_are_priced_at_the_batch_rate():
    online = price_for(TeacherConfig(backend="openai", model="gpt-4o-mini"))
    batched = price_for(TeacherConfig(backend="openai", model="gpt-4o-mini", batch=True))
    assert online is not None and batched is not None
    assert batched.input_per_token == pytest.approx(online.input_per_token / 2)
    assert batched.output_per_token == pytest.approx(online.output_per_token / 2)


def test_the_dry_run_prices_batch_jobs_at_the_batch_rate_and_gives_no_time(tmp_path, server, capsys):
    def label_cost(batch: bool) -> tuple[float, str]:
        path = recipe(tmp_path, server, batch=batch, model="gpt-4o-mini")
        assert main(["run", str(path), "--dry-run"]) == 0
        out = capsys.readouterr().out
        cells = next(line for line in out.splitlines() if "1:label" in line and "│" in line).split("│")
        return float(cells[7]), " ".join(out.split())

    online, _ = label_cost(False)
    batched, said = label_cost(True)
    assert online > 0 and batched == pytest.approx(online / 2, rel=0.02)
    assert "batch jobs answer within 24 hours" in said
    assert server.stats()["requests"] == 0 and server.stats()["batches"]["files_uploaded"] == 0


def batch_dispatcher(tmp_path, server) -> Dispatcher:
    config = TeacherConfig(
        backend="openai", model="fake-model", base_url=server.base_url, api_key_env=None, batch=True,
        batch_poll_seconds=0.1,
    )  # fmt: skip
    return Dispatcher(OpenAITeacher(config), config, ResponseCache(tmp_path / "c.sqlite"), price=None)


async def run_and_watch(dispatcher: Dispatcher, requests: list[ChatRequest]) -> tuple[list, set[str]]:
    """The dispatcher's outcomes, and every `waiting_on` text seen while it ran."""
    seen = set()
    job = asyncio.create_task(dispatcher.run(requests))
    while not job.done():
        seen.add(dispatcher.stats.waiting_on)
        await asyncio.sleep(0.02)
    await dispatcher.teacher.aclose()
    return job.result(), seen


def test_the_bar_says_where_the_batch_jobs_stand_while_no_row_moves(tmp_path, server):
    """Hours can pass between a job's start and its answers: the step's stats say, as they go,
    what the requests wait on, and its progress bar shows it."""
    server.configure(batch_seconds=1.5)
    dispatcher = batch_dispatcher(tmp_path, server)
    requests = [ChatRequest(({"role": "user", "content": f"Name bird {i}."},)) for i in range(6)]
    outcomes, seen = asyncio.run(run_and_watch(dispatcher, requests))
    assert all(outcome.completion is not None for outcome in outcomes)
    assert any(
        text.startswith("batch jobs: 1 in_progress, ") and text.endswith("/6 done") for text in seen
    ), seen
    assert dispatcher.stats.waiting_on == ""  # nothing is waited on once the answers are in

    stats = DispatchStats(waiting_on="batch jobs: 1 in_progress, 2/6 done")
    console = Console(file=io.StringIO(), width=220)
    progress = make_progress(console)
    add_step_bar(progress, "1:label", stats)
    console.print(progress.get_renderable())
    assert "batch jobs: 1 in_progress, 2/6 done" in console.file.getvalue()
