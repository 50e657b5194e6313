"""The openai and litellm backends against a real OpenAI-compatible HTTP server with injected faults."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.cli import main
from synthkd.errors import RunIncompleteError
from synthkd.pipeline import run_recipe
from synthkd.recipe import load_recipe
from synthkd.testing.fake_openai import FakeOpenAIServer

BACKENDS = ["openai", "litellm"]
KEY = "sk-canary-0123456789abcdef"


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_server(server, monkeypatch):
    server.reset()
    server.configure(
        fail_500=0,
        fail_429=0,
        quota=0,
        hang=0,
        malformed=0,
        content_filter=0,
        latency_ms=0,
        require_key=None,
        script=[],
    )
    monkeypatch.setenv("SYNTHKD_TEST_KEY", KEY)
    yield


def recipe(
    tmp_path: Path,
    server,
    backend: str,
    rows: int = 20,
    steps: list | None = None,
    **teacher,
) -> Path:
    write_jsonl(
        tmp_path / "seeds.jsonl", [{"instruction": f"Explain item {i} in a sentence."} for i in range(rows)]
    )
    model = "fake-model" if backend == "openai" else "openai/fake-model"
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "api",
            "teacher": {
                "backend": backend,
                "model": model,
                "base_url": server.base_url,
                "api_key_env": "SYNTHKD_TEST_KEY",
                "concurrency": 16,
                "timeout": 5,
                **teacher,
            },
            "steps": steps or [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def chat_requests(server) -> int:
    return server.stats()["requests"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_500_requests_through_faults_all_land_once(tmp_path, server, backend):
    server.configure(fail_500=0.05, fail_429=0.02, retry_after=0.05)
    path = recipe(tmp_path, server, backend, rows=500, concurrency=32)
    result = run_recipe(load_recipe(path))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 500 and len({row["id"] for row in rows}) == 500
    assert all(row["response"] == f"Answer: {row['instruction']}" for row in rows)
    assert read_jsonl(tmp_path / "out" / "failures.jsonl") == []
    stats = server.stats()
    assert stats["by_status"]["200"] == 500  # every prompt answered exactly once
    injected = stats["by_status"].get("500", 0) + stats["by_status"].get("429", 0)
    assert injected > 0
    label = result.reports[1]
    # Every injected failure was retried and is accounted for in the manifest.
    assert label.requests_sent == stats["requests"]
    assert sum(label.retries.values()) == injected
    assert label.retries.get("http_429", 0) == stats["by_status"].get("429", 0)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["steps"][1]["requests_sent"] == stats["requests"]

    server.reset()
    again = run_recipe(load_recipe(path))
    assert chat_requests(server) == 0
    assert again.reports[1].cache_hits == 500
    assert read_jsonl(tmp_path / "out" / "data.jsonl") == rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_wrong_key_stops_the_run_at_once(tmp_path, server, backend, capsys):
    server.configure(require_key="sk-the-right-one")
    path = recipe(tmp_path, server, backend, rows=200, concurrency=8)
    clock = time.monotonic()
    assert main(["run", str(path)]) == 1
    assert time.monotonic() - clock < 20
    err = " ".join(capsys.readouterr().err.split())
    assert "HTTP 401" in err and "api_key_env" in err
    assert chat_requests(server) <= 8  # at most the requests already in flight
    assert not (tmp_path / "out").exists()


def test_litellm_without_a_key_stops_at_once_with_a_hint(tmp_path, server, capsys, monkeypatch):
    """litellm's openai provider refuses to send without a key and calls it an HTTP 500: that must
    not be retried row after row."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    path = recipe(tmp_path, server, "litellm", rows=20, concurrency=4, api_key_env=None)
    assert main(["run", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "the provider needs an API key" in err and "api_key_env" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_insufficient_quota_is_not_retried(tmp_path, server, backend, capsys):
    server.configure(quota=1.0)
    path = recipe(tmp_path, server, backend, rows=50, concurrency=4)
    assert main(["run", str(path)]) == 1
    assert "insufficient_quota" in capsys.readouterr().err
    assert chat_requests(server) <= 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_request_rejected_for_its_content_fails_its_row_only(tmp_path, server, backend):
    too_long = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."
    server.configure(
        script=[{"match": r"item 3 ", "status": 400, "code": "context_length_exceeded", "message": too_long}]
    )
    path = recipe(tmp_path, server, backend, rows=20)
    result = run_recipe(load_recipe(path))
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 19
    (failure,) = read_jsonl(tmp_path / "out" / "failures.jsonl")
    assert failure["reason"] == "context_length_exceeded" and failure["attempts"] == 1
    assert failure["row"]["instruction"] == "Explain item 3 in a sentence." and "8192" in failure["error"]
    assert chat_requests(server) == 20  # not retried
    assert result.reports[1].rows_failed == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_request_rejected_stops_the_run(tmp_path, server, backend, capsys):
    server.configure(script=[{"match": ".", "status": 400, "message": "Unrecognized request argument"}])
    path = recipe(tmp_path, server, backend, rows=100, concurrency=4)
    assert main(["run", str(path)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "rejected the first 10 requests and accepted none" in err and "teacher.params" in err
    assert chat_requests(server) <= 10 + 4
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_hangs_and_malformed_bodies_are_retried(tmp_path, server, backend):
    server.configure(hang=0.15, hang_seconds=5, malformed=0.15)
    # With 6 attempts one of 40 rows drew a fault every time about once in 30 runs (0.3^6 x 40):
    # 12 attempts make that one in 50,000, and the assertions below stay exact.
    path = recipe(tmp_path, server, backend, rows=40, timeout=0.5, max_attempts=12)
    result = run_recipe(load_recipe(path))
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 40
    retries = result.reports[1].retries
    faults = server.stats()["by_fault"]
    assert retries.get("timeout", 0) == faults["hang"] > 0
    # litellm reports a body it cannot parse as its own HTTP 500; the openai SDK lets us tell.
    malformed_reason = "malformed" if backend == "openai" else "http_500"
    assert retries.get(malformed_reason, 0) == faults["malformed"] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_failures_are_written_never_silent(tmp_path, server, backend):
    server.configure(fail_500=1.0)
    path = recipe(tmp_path, server, backend, rows=5, max_attempts=2)
    with pytest.raises(RunIncompleteError) as failed:
        run_recipe(load_recipe(path))
    aside = tmp_path / "out.incomplete"  # a failed run is written beside the outputs, not over them
    assert failed.value.result.out_dir == aside and not (tmp_path / "out").exists()
    assert read_jsonl(aside / "data.jsonl") == []
    failures = read_jsonl(aside / "failures.jsonl")
    assert len(failures) == 5
    assert {(f["step"], f["reason"], f["attempts"]) for f in failures} == {("1:label", "http_500", 2)}
    assert all(f["row"]["instruction"].startswith("Explain item") for f in failures)
    assert failed.value.result.reports[1].rows_failed == 5 and chat_requests(server) == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_finish_reasons_are_recorded(tmp_path, server, backend):
    server.configure(content_filter=0.3)
    # Withheld answers are failures, but not failed requests: the run succeeds with the rest.
    path = recipe(tmp_path, server, backend, rows=30)
    with open(path) as handle:
        text = handle.read()
    path.write_text(text.replace("timeout: 5", "timeout: 5\n  params: {max_tokens: 3}"))
    run_recipe(load_recipe(path))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    failures = read_jsonl(tmp_path / "out" / "failures.jsonl")
    filtered = server.stats()["by_fault"]["content_filter"]
    assert filtered > 0 and len(failures) == filtered and len(rows) == 30 - filtered
    assert {f["reason"] for f in failures} == {"content_filter"}
    assert all(r["finish_reason"] == "length" and len(r["response"].split()) == 3 for r in rows)


def test_structured_output_is_validated_and_reasked(tmp_path):
    script = [
        {"match": "previous answer was not valid", "reply": '{"answer": "fixed"}'},
        {"match": "item 0", "reply": '```json\n{"answer": "fenced"}\n```'},
        {"match": "item 1", "reply": "not json at all"},
        {"match": "item 2", "reply": '{"wrong": 1}'},
    ]
    with FakeOpenAIServer(script=script) as scripted:
        steps = [
            {"step": "load", "path": "seeds.jsonl"},
            {
                "step": "label",
                "reask": 1,
                "schema": {
                    "type": "object",
                    "required": ["answer"],
                    "properties": {"answer": {"type": "string"}},
                },
            },
        ]
        path = recipe(tmp_path, scripted, "openai", rows=3, steps=steps)
        run_recipe(load_recipe(path))
        responses = sorted(
            json.loads(r["response"].strip("`").removeprefix("json\n"))["answer"]
            for r in read_jsonl(tmp_path / "out" / "data.jsonl")
        )
        assert responses == ["fenced", "fixed", "fixed"]
        assert scripted.stats()["requests"] == 5  # 3 first answers + 2 re-asks


def test_reask_that_fails_again_is_a_failure(tmp_path):
    script = [{"match": ".", "reply": "still not json"}]
    with FakeOpenAIServer(script=script) as scripted:
        steps = [
            {"step": "load", "path": "seeds.jsonl"},
            {"step": "label", "reask": 2, "schema": {"type": "object"}},
        ]
        path = recipe(tmp_path, scripted, "openai", rows=2, steps=steps)
        with pytest.raises(RunIncompleteError, match=r"step 1:label kept none of 2 \(2 failed\)"):
            run_recipe(load_recipe(path))
        failures = read_jsonl(tmp_path / "out.incomplete" / "failures.jsonl")
        assert [f["reason"] for f in failures] == ["invalid_json", "invalid_json"]
        assert all(f["attempts"] == 3 for f in failures)
        assert scripted.stats()["requests"] == 6


def test_changed_step_rerequests_only_itself_and_later_steps(tmp_path, server):
    (tmp_path / "improve.jinja").write_text("Improve this answer: {{ response }}")
    steps = [
        {"step": "load", "path": "seeds.jsonl"},
        {"step": "label"},
        {"step": "label", "prompt": "improve.jinja"},
        {"step": "filter", "min_chars": 1},
    ]
    path = recipe(tmp_path, server, "openai", rows=10, steps=steps)
    run_recipe(load_recipe(path))
    assert chat_requests(server) == 20
    (tmp_path / "improve.jinja").write_text("Make this answer better: {{ response }}")
    server.reset()
    result = run_recipe(load_recipe(path, ["steps.3.min_chars=2"]))
    assert [r.requests_sent for r in result.reports] == [0, 0, 10, 0]
    assert result.reports[1].cache_hits == 10
    assert chat_requests(server) == 10


def test_no_secret_in_cache_manifest_or_outputs(tmp_path, server, private_cache):
    server.configure(require_key=KEY)
    path = recipe(tmp_path, server, "openai", rows=5)
    run_recipe(load_recipe(path))
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 5
    written = [p for p in list((tmp_path / "out").rglob("*")) + list(private_cache.glob("*")) if p.is_file()]
    assert any(p.name == "requests.sqlite" for p in written)
    for file in written:
        assert KEY.encode() not in file.read_bytes(), file


def test_no_cache_flag_and_cache_clear(tmp_path, server, capsys):
    path = recipe(tmp_path, server, "openai", rows=6)
    assert main(["run", str(path), "--no-cache"]) == 0
    assert main(["run", str(path), "--no-cache"]) == 0
    assert chat_requests(server) == 12  # nothing read from the cache
    capsys.readouterr()
    assert main(["cache", "info"]) == 0
    assert json.loads(capsys.readouterr().out)["responses"] == 0  # nor written to it
    assert main(["run", str(path)]) == 0
    assert main(["cache", "info"]) == 0
    assert json.loads(capsys.readouterr().out)["responses"] == 6
    assert main(["cache", "clear"]) == 0
    assert "removed 6 cached responses" in capsys.readouterr().err
    server.reset()
    assert main(["run", str(path)]) == 0
    assert chat_requests(server) == 6


def test_dry_run_counts_cached_requests_and_sends_nothing(tmp_path, server, capsys):
    path = recipe(tmp_path, server, "openai", rows=8)
    run_recipe(load_recipe(path, ["steps.1.n=1"]))
    server.reset()
    assert main(["run", str(path), "--dry-run", "--set", "steps.1.n=2", "--set", "teacher.rpm=4"]) == 0
    out = capsys.readouterr().out  # the dry run is the command's answer: stdout
    assert chat_requests(server) == 0
    label_row = next(line for line in out.splitlines() if "1:label" in line and "│" in line)
    cells = [cell.strip() for cell in label_row.split("│") if cell.strip()]
    assert cells[:4] == ["1:label", "16", "8", "8"]  # requests, cached (sample 0), to send
    assert cells[-1] == "2.0"  # 8 requests to send at 4 a minute: 2 minutes at least
    total = next(line for line in out.splitlines() if "total" in line and "│" in line)
    assert [cell.strip() for cell in total.split("│") if cell.strip()][:2] == ["total", "8"]
    assert "user: Explain item 0 in a sentence." in out


def test_dry_run_estimates_data_dependent_steps(tmp_path, server, capsys):
    first = [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}, {"step": "judge"}]
    # The fake server's answers are no scores, so every judged row fails (and the run with it): what
    # matters here is that the judge's requests were answered and cached.
    with pytest.raises(RunIncompleteError, match="step 2:judge kept none of 8 .8 failed"):
        run_recipe(load_recipe(recipe(tmp_path, server, "openai", rows=8, steps=first)))
    server.reset()
    steps = [
        *first,
        {"step": "evol_instruct", "rounds": 2},
        {"step": "topics", "domain": "cooking"},
        {"step": "label"},
    ]
    assert main(["run", str(recipe(tmp_path, server, "openai", rows=8, steps=steps)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert chat_requests(server) == 0

    def cells(step: str) -> list[str]:
        row = next(line for line in out.splitlines() if step in line and "│" in line)
        return [cell.strip() for cell in row.split("│") if cell.strip()]

    assert cells("1:label")[:4] == ["1:label", "8", "8", "0"]
    # The judge's questions are known from the cached answers: all cached; each may be re-asked.
    assert cells("2:judge")[:4] == ["2:judge", "~8 (max 16)", "8", "~0"]
    # Two rounds of a rewrite and an answer per row (the rewrite may be re-asked).
    assert cells("3:evol_instruct")[:4] == ["3:evol_instruct", "~32 (max 48)", "0", "~32"]
    # A full tree of the defaults (breadth 5, depth 2): 1 + 5 subtopic requests, 25 leaves.
    assert cells("4:topics")[:4] == ["4:topics", "~31 (max 62)", "0", "~31"]
    # evol's 2 x 8 rows, then topics' 25 leaves x 5 requests each.
    assert cells("5:label")[:4] == ["5:label", "141", "0", "141"]
    assert "user: [instruction evolved from" in out  # what the dry run cannot know is marked
    assert "step 3:evol_instruct, example prompt 1" in out
    # The total: 0 + ~0 + ~32 + ~31 + 141 to send, every step counted (tests/test_dry_run_plans.py
    # checks the "not estimated" of a step without a plan).
    total = next(line for line in out.splitlines() if "total" in line and "│" in line)
    assert [cell.strip() for cell in total.split("│") if cell.strip()][:2] == ["total", "~204"]
    assert "not estimated" not in out and "The total leaves out" not in out


def dry_run_plans(tmp_path, server, steps: list[dict]) -> tuple[dict, dict]:
    """Each step's dry-run plan, by step name, and its (count, requests, requests_max)."""
    from synthkd.pipeline import check, plan

    loaded = load_recipe(recipe(tmp_path, server, "openai", rows=8, steps=steps))
    check(loaded)
    plans = {step.step: step_plan for step, step_plan in plan(loaded)}
    return plans, {name: (p.count, p.requests, p.requests_max) for name, p in plans.items()}


def test_plans_of_the_other_generating_steps(tmp_path, server):
    steps = [
        {"step": "load", "path": "seeds.jsonl"},
        {"step": "preference", "n": 2},
        {"step": "dialogue", "turns": 3},
        {"step": "self_instruct", "num_instructions": 10, "requests_per_round": 2, "new_per_request": 4},
    ]
    plans, counts = dry_run_plans(tmp_path, server, steps)
    assert counts == {
        "load": ("exact", 0, None),
        "preference": ("estimate", 16 + 16, 16 + 32),  # 8 x 2 samples, then each judged (re-asked once)
        "dialogue": ("estimate", 8 * 5, None),  # 3 answers and 2 simulated user turns: at most
        "self_instruct": ("estimate", 2 * 2 + 2 * 10, 2 * (50 * 2 + 2 * 10)),  # 2 rounds at least
    }
    assert plans["preference"].sample_prompts[0] == [
        {"role": "user", "content": "Explain item 0 in a sentence."}
    ]
    assert chat_requests(server) == 0


def test_plans_of_rationale_and_critique_revise(tmp_path, server):
    """Once "not estimated" (and left out of the dry run's total): now estimated with a bound."""
    steps = [
        {"step": "load", "path": "seeds.jsonl"},
        {"step": "rationale", "n": 3},
        {"step": "critique_revise", "principles": ["Be accurate."], "rounds": 2},
    ]
    plans, counts = dry_run_plans(tmp_path, server, steps)
    assert counts == {
        "load": ("exact", 0, None),
        "rationale": ("estimate", 8 * 3, 2 * 8 * 3),  # 3 samples a row, each re-asked once at most
        "critique_revise": ("estimate", 2 * 8, 4 * 2 * 8),  # a critique and a revision a row; 2 rounds
    }
    critique = plans["critique_revise"].sample_prompts[0][-1]["content"]
    assert "Be accurate." in critique  # the first critiques are rendered from rationale's rows
    assert chat_requests(server) == 0


def test_rows_record_their_provenance(tmp_path, server):
    (tmp_path / "improve.jinja").write_text("Improve this answer: {{ response }}")
    steps = [
        {"step": "load", "path": "seeds.jsonl"},
        {"step": "label", "system": "Be brief."},
        {"step": "label", "prompt": "improve.jinja", "teacher": {"params": {"temperature": 0}}},
        {"step": "filter", "min_chars": 1},
    ]
    run_recipe(load_recipe(recipe(tmp_path, server, "openai", rows=3, steps=steps)))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    first, second = rows[0]["provenance"]  # one entry per generating step; load and filter add none
    assert first["step"] == second["step"] == "label"
    assert first["teacher"] == "openai:fake-model"
    assert json.loads(first["step_params"])["system"] == "Be brief."
    assert json.loads(second["generation_params"]) == {"temperature": 0}
    assert first["template_sha256"] != second["template_sha256"]
    from datasets import load_from_disk

    assert load_from_disk(str(tmp_path / "out" / "dataset"))[0]["provenance"] == rows[0]["provenance"]
