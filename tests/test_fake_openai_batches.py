"""The fake server's Files and Batches endpoints, driven by the real openai client."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

import openai
import pytest

from synthkd.testing.fake_openai import FakeOpenAIServer, ServerConfig

SCRIPT = [
    {"match": r"^poem", "reply": "Roses are {word}, violets are {word}.", "finish_reason": "length"},
    {"match": r"^too long", "status": 400, "code": "context_length_exceeded", "message": "Too long."},
]
BATCH_SECONDS = 0.4
SETTINGS = {**asdict(ServerConfig()), "batch_seconds": BATCH_SECONDS}
ENDPOINT = "/v1/chat/completions"
POLL_S = 0.03


@pytest.fixture(scope="module")
def server():
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NO_PROXY", "127.0.0.1,localhost")  # httpx must not send local requests to a proxy
        env.setenv("no_proxy", "127.0.0.1,localhost")
        # The batch settings go through the command line here, through /config in `fresh`.
        with FakeOpenAIServer(script=SCRIPT, batch_seconds=BATCH_SECONDS, batch_expire=False) as running:
            yield running


@pytest.fixture(autouse=True)
def fresh(server):
    server.configure(**SETTINGS)
    server.reset()


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as running:
        yield running


def chat_body(text: str, **params: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}], **params}


def request_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


def upload(client: openai.OpenAI, lines: list[Any]) -> str:
    """The id of a batch input file with these lines (dicts become JSON, strings go as they are)."""
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    return client.files.create(file=("requests.jsonl", text.encode()), purpose="batch").id


def submit(client: openai.OpenAI, bodies: dict[str, dict[str, Any]]) -> openai.types.Batch:
    file_id = upload(client, [request_line(custom_id, body) for custom_id, body in bodies.items()])
    return client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")


def wait_until_over(client: openai.OpenAI, batch_id: str, timeout: float = 10.0) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout} s"
        time.sleep(POLL_S)


def result_lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """The lines of an output or error file by custom_id ({} for no file)."""
    if file_id is None:
        return {}
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines), "a custom_id appears twice in a result file"
    return by_id


def without_ids(body: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion less what differs between any two answers (its id and creation time)."""
    return {key: value for key, value in body.items() if key not in ("id", "created")}


def online_answer(client: openai.OpenAI, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(status, raw JSON) the chat endpoint answers `body` with."""
    try:
        raw = client.chat.completions.with_raw_response.create(**body)
    except openai.APIStatusError as error:
        return error.status_code, error.response.json()
    return raw.http_response.status_code, raw.http_response.json()


def test_a_completed_batch_answers_each_body_as_the_chat_endpoint_does(server, client):
    bodies = {
        "plain": chat_body("why is the sky blue"),
        "rule": chat_body("poem about spring"),  # a {word} rule: the words come from the body
        "other-rule": chat_body("poem about autumn"),
        "cut": chat_body("one two three four five six", max_tokens=3),
        "logprobs": chat_body("name a colour", logprobs=True, top_logprobs=2),
        "n": chat_body("twice", n=2),
        "refused": chat_body("too long a prompt"),  # a scripted 400
    }
    online = {custom_id: online_answer(client, body) for custom_id, body in bodies.items()}
    assert online["refused"][0] == 400 and online["cut"][1]["choices"][0]["finish_reason"] == "length"

    batch = wait_until_over(client, submit(client, bodies).id)

    assert batch.status == "completed" and batch.model == "fake-model"
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        7,
        6,
        1,
    )
    outputs, errors = result_lines(client, batch.output_file_id), result_lines(client, batch.error_file_id)
    assert set(outputs) == set(bodies) - {"refused"} and set(errors) == {"refused"}
    for custom_id, line in outputs.items():
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
        assert without_ids(line["response"]["body"]) == without_ids(online[custom_id][1]), custom_id
    refused = errors["refused"]
    assert refused["error"] is None
    assert (refused["response"]["status_code"], refused["response"]["body"]) == online["refused"]
    output_tokens = [line["response"]["body"]["usage"]["completion_tokens"] for line in outputs.values()]
    assert batch.usage.output_tokens == sum(output_tokens)
    # The output file is a file of its own, purpose batch_output.
    output_file = client.files.retrieve(batch.output_file_id)
    assert (output_file.purpose, output_file.filename) == ("batch_output", f"{batch.id}_output.jsonl")


def test_status_moves_from_validating_to_completed_over_batch_seconds(server, client):
    server.configure(batch_seconds=2.0)  # phases of 0.5 s or more, so each is seen
    bodies = {f"q{i}": chat_body(f"question {i}") for i in range(8)}
    started = time.monotonic()
    batch = submit(client, bodies)
    assert batch.status == "validating" and batch.request_counts.total == 0 and batch.in_progress_at is None
    seen: list[tuple[str, int]] = []
    while batch.status != "completed":
        assert time.monotonic() - started < 10, f"batch still {batch.status}"
        time.sleep(POLL_S)
        batch = client.batches.retrieve(batch.id)
        seen.append((batch.status, batch.request_counts.completed))
        if batch.status != "completed":
            assert batch.output_file_id is None and batch.completed_at is None
    assert time.monotonic() - started >= 2.0
    statuses = list(dict.fromkeys(status for status, _ in seen))
    assert statuses == ["validating", "in_progress", "finalizing", "completed"]
    progress = [done for status, done in seen if status == "in_progress"]
    assert progress == sorted(progress) and progress[0] < 8, "items finish one by one while in progress"
    assert batch.created_at <= batch.in_progress_at <= batch.finalizing_at <= batch.completed_at
    assert batch.expires_at - batch.created_at >= 24 * 3600 - 1  # the 24 h completion window
    assert len(result_lines(client, batch.output_file_id)) == 8 and batch.error_file_id is None


def test_failed_items_go_to_the_error_file_and_can_succeed_when_resubmitted(server, client):
    server.configure(batch_item_failure_rate=0.5)
    bodies = {f"item-{i}": chat_body(f"question {i}") for i in range(24)}
    batch = wait_until_over(client, submit(client, bodies).id)
    outputs, errors = result_lines(client, batch.output_file_id), result_lines(client, batch.error_file_id)

    assert batch.status == "completed" and 0 < len(errors) < 24
    assert set(outputs) | set(errors) == set(bodies) and not set(outputs) & set(errors)
    assert (batch.request_counts.completed, batch.request_counts.failed) == (len(outputs), len(errors))
    for line in errors.values():
        assert line["error"] is None and line["response"]["status_code"] == 500
        assert line["response"]["body"]["error"]["type"] == "server_error"

    # The failure is drawn per submission, so resubmitting the failed items gives them a new chance.
    retried = wait_until_over(
        client, submit(client, {custom_id: bodies[custom_id] for custom_id in errors}).id
    )
    recovered = result_lines(client, retried.output_file_id)
    assert recovered and set(recovered) <= set(errors)
    stats = server.stats()["batches"]
    assert stats["items_submitted"] == 24 + len(errors)
    assert stats["items_resubmitted"] == stats["custom_ids_resubmitted"] == len(errors)
    submissions = server.batch_submissions()
    assert {custom_id for custom_id, count in submissions.items() if count == 2} == set(errors)


def test_an_expired_batch_keeps_what_it_finished_and_reports_the_rest_as_batch_expired(server, client):
    server.configure(batch_expire=True, batch_expire_fraction=0.5)
    bodies = {f"e{i}": chat_body(f"question {i}") for i in range(6)}
    created = submit(client, bodies)
    assert created.expires_at - created.created_at <= 2, "the deadline is batch_seconds away, not 24 h"
    batch = wait_until_over(client, created.id)

    assert batch.status == "expired" and batch.expired_at is not None and batch.completed_at is None
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (6, 3, 0)
    outputs, errors = result_lines(client, batch.output_file_id), result_lines(client, batch.error_file_id)
    assert set(outputs) == {"e0", "e1", "e2"} and set(errors) == {"e3", "e4", "e5"}
    for line in errors.values():
        assert line["response"] is None and line["error"]["code"] == "batch_expired"


def test_a_malformed_file_fails_at_validation_with_line_numbers(server, client):
    good = request_line("a", chat_body("fine"))
    file_id = upload(
        client,
        [
            good,
            "{not json",
            request_line("a", chat_body("same custom_id again")),
            {**request_line("b", chat_body("x")), "url": "/v1/completions"},
            {"custom_id": "c", "method": "POST", "url": ENDPOINT},
            request_line("d", {**chat_body("x"), "model": "another-model"}),
        ],
    )
    created = client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")
    batch = wait_until_over(client, created.id)

    assert batch.status == "failed" and batch.failed_at is not None and batch.in_progress_at is None
    found = [(error.line, error.code) for error in batch.errors.data]
    assert found == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
        (4, "url_mismatch"),
        (5, "missing_required_parameter"),
        (6, "model_mismatch"),
    ]
    assert batch.errors.data[3].param == "body"
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.request_counts.total == 0
    assert server.stats()["batches"]["items_submitted"] == 0, "nothing of a failed batch runs"


def test_batch_fail_validation_fails_a_good_file_with_token_limit_exceeded(server, client):
    server.configure(batch_fail_validation=True)
    batch = wait_until_over(client, submit(client, {"a": chat_body("fine")}).id)
    assert batch.status == "failed"
    (error,) = batch.errors.data
    assert error.code == "token_limit_exceeded" and error.line is None
    server.configure(batch_fail_validation=False)
    assert wait_until_over(client, submit(client, {"a": chat_body("fine")}).id).status == "completed"


def test_batch_fail_validation_times_refuses_only_the_first_batches(server, client):
    """A queue that frees after a while: the first two batches since the reset are refused."""
    server.configure(batch_fail_validation=True, batch_fail_validation_times=2)
    statuses = [wait_until_over(client, submit(client, {"a": chat_body("x")}).id).status for _ in range(3)]
    assert statuses == ["failed", "failed", "completed"]
    assert server.stats()["batches"]["batches_refused"] == 2
    server.reset()  # the count starts again
    assert wait_until_over(client, submit(client, {"a": chat_body("x")}).id).status == "failed"


def test_bad_requests_get_openai_errors(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.batches.create(input_file_id="file-missing", endpoint=ENDPOINT, completion_window="24h")
    assert caught.value.body["message"] == "No such File object: file-missing"
    assert caught.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")
    with pytest.raises(openai.BadRequestError, match=r"Must be \.jsonl"):
        client.files.create(file=b"{}\n", purpose="batch")  # bytes alone are named "upload"
    file_id = upload(client, [request_line("a", chat_body("x"))])
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="48h")
    assert caught.value.body["param"] == "completion_window"


def test_cancel_reports_unstarted_items_and_refuses_a_finished_batch(server, client):
    server.configure(batch_seconds=4.0)  # validating lasts 1 s: the cancel lands in it
    bodies = {f"c{i}": chat_body(f"question {i}") for i in range(4)}
    created = submit(client, bodies)
    cancelling = client.batches.cancel(created.id)  # still validating: nothing has run
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None

    batch = wait_until_over(client, created.id)

    assert batch.status == "cancelled" and batch.cancelled_at is not None and batch.output_file_id is None
    errors = result_lines(client, batch.error_file_id)
    assert set(errors) == set(bodies)
    assert {line["error"]["code"] for line in errors.values()} == {"batch_cancelled"}
    assert client.batches.cancel(created.id).status == "cancelled"  # cancelling again changes nothing
    server.configure(batch_seconds=0)
    done = wait_until_over(client, submit(client, {"x": chat_body("x")}).id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(done.id)


def test_files_can_be_read_listed_and_deleted(client):
    content = json.dumps(request_line("a", chat_body("x"))).encode() + b"\n"
    created = client.files.create(file=("mine.jsonl", content), purpose="batch")
    assert created.id.startswith("file-") and created.object == "file" and created.status == "processed"
    assert (created.bytes, created.filename, created.purpose) == (len(content), "mine.jsonl", "batch")
    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == content
    assert [f.id for f in client.files.list(purpose="batch")] == [created.id]
    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_batches_list_pages_newest_first(client):
    made = [submit(client, {"a": chat_body(f"batch {i}")}).id for i in range(3)]
    first = client.batches.list(limit=2)
    assert [b.id for b in first.data] == made[:0:-1] and first.has_more
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # iterating follows `after`


def test_stats_count_submissions_keep_batches_off_the_chat_counters_and_reset_clears(server, client):
    first = submit(client, {"a": chat_body("one"), "b": chat_body("two")})
    wait_until_over(client, first.id)
    second = wait_until_over(client, submit(client, {"b": chat_body("two"), "c": chat_body("three")}).id)

    stats = server.stats()
    assert stats["batches"] == {
        "files_uploaded": 2,
        "batches_created": 2,
        "batches_refused": 0,
        "items_submitted": 4,
        "items_resubmitted": 1,
        "custom_ids_resubmitted": 1,
    }
    assert server.batch_submissions() == {"a": 1, "b": 2, "c": 1}
    assert stats["requests"] == 0 and server.arrivals() == [], "batch items are not chat requests"

    server.reset()
    assert server.stats()["batches"]["items_submitted"] == 0 and server.batch_submissions() == {}
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(second.output_file_id)
    assert list(client.batches.list()) == []


def test_batch_settings_are_validated(server):
    with pytest.raises(ValueError, match="batch_item_failure_rate"):
        server.configure(batch_item_failure_rate=1.5)
    with pytest.raises(ValueError, match="batch_expire must be true or false"):
        server.configure(batch_expire="sometimes")
    assert server.configure(batch_expire="true")["batch_expire"] is True
    with pytest.raises(ValueError, match="batch_fail_validation_times must be >= 0"):
        server.configure(batch_fail_validation_times=-1)
    assert server.configure(batch_fail_validation_times="3")["batch_fail_validation_times"] == 3
