"""`max_cost_usd`: a run stops sending before its spend could pass the cap, keeps what it bought,
exits with code 4, and a rerun with a higher cap finishes from the cache."""

from __future__ import annotations

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe

from synthkd.cli import main
from synthkd.dispatch.budget import Budget, prompt_tokens_bound
from synthkd.teachers.base import ChatRequest
from synthkd.testing.fake_openai import FakeOpenAIServer

ROWS = 30
# Every answer is three words, three completion tokens on the fake server; at 1 USD a completion
# token (and prompts free) an answer costs 3 USD, and each request's worst case is its
# max_tokens: 10 USD.
PRICE = {"input_per_million": 0.0, "output_per_million": 1_000_000.0}
ANSWER_USD, WORST_CASE_USD = 3.0, 10.0


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture(autouse=True)
def three_word_answers(server):
    server.reset()
    server.configure(script=[{"match": ".", "reply": "one two three"}], latency_ms=20)


def recipe(tmp_path, server, *, cap=None, teacher_cap=None, concurrency=1, price=PRICE, model="fake-model"):
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Name colour {i}."} for i in range(ROWS)])
    teacher = {
        "backend": "openai",
        "model": model,
        "base_url": server.base_url,
        "api_key_env": None,
        "concurrency": concurrency,
        "params": {"max_tokens": 10},
    }
    if price is not None:
        teacher["price"] = price
    if teacher_cap is not None:
        teacher["max_cost_usd"] = teacher_cap
    data = {
        "name": "capped",
        "teacher": teacher,
        "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
        "output": {"dir": str(tmp_path / "out"), "report": "none"},
    }
    if cap is not None:
        data["max_cost_usd"] = cap
    return write_recipe(tmp_path / "r.yaml", data)


def sent(server) -> int:
    return server.stats()["requests"]


def test_the_cap_stops_the_run_and_a_higher_cap_finishes_it_from_the_cache(tmp_path, server, capsys):
    # 35 USD: after k answers (3k spent) the next request fits while 3k + 10 <= 35, so k = 9.
    path = recipe(tmp_path, server, cap=35)
    assert main(["run", str(path)]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert "the recipe's max_cost_usd (35 USD) is reached" in err
    assert "--set max_cost_usd=70" in err
    assert sent(server) == 9
    assert sent(server) * ANSWER_USD <= 35
    assert not (tmp_path / "out").exists()  # nothing half-written

    assert main(["run", str(path), "--set", "max_cost_usd=200"]) == 0
    assert sent(server) == ROWS  # the 9 answers bought were cached, not asked again
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == ROWS and all(row["response"] == "one two three" for row in rows)


@pytest.mark.parametrize("concurrency", [4, 16])
def test_requests_in_flight_never_carry_the_spend_past_the_cap(tmp_path, server, concurrency):
    path = recipe(tmp_path, server, cap=50, concurrency=concurrency)
    assert main(["run", str(path)]) == 4
    # What was sent cost at most the cap, and no more was left unsent than one worst case allows.
    assert sent(server) * ANSWER_USD <= 50
    assert sent(server) * ANSWER_USD + WORST_CASE_USD > 50 - concurrency * WORST_CASE_USD


def test_a_teachers_own_cap_names_the_teacher(tmp_path, server, capsys):
    path = recipe(tmp_path, server, teacher_cap=20)
    assert main(["run", str(path)]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert "the max_cost_usd of teacher openai:fake-model (20 USD) is reached" in err
    assert "teacher.max_cost_usd=40" in err
    assert sent(server) == 4  # 3k + 10 <= 20 holds up to k = 3: the fourth is the last sent


def test_a_cap_under_the_runs_cost_is_not_reached_when_the_answers_are_cached(tmp_path, server):
    assert main(["run", str(recipe(tmp_path, server))]) == 0
    assert main(["run", str(recipe(tmp_path, server, cap=1))]) == 0  # nothing to buy
    assert sent(server) == ROWS


def test_a_cap_on_a_model_without_a_price_is_refused_before_any_request(tmp_path, server, capsys):
    path = recipe(tmp_path, server, cap=5, price=None, model="model-nobody-prices")
    assert main(["run", str(path)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "r.yaml:" in err and "max_cost_usd needs this teacher's price" in err
    assert "input_per_million" in err
    assert sent(server) == 0


def test_a_known_model_is_capped_at_litellms_price(tmp_path, server):
    """gpt-4o-mini is in litellm's price map: no `price:` needed; the cap holds at that price."""
    path = recipe(tmp_path, server, cap=5e-5, price=None, model="gpt-4o-mini")
    assert main(["run", str(path)]) == 4
    assert 0 < sent(server) < ROWS


def test_reservations_roll_back_and_settle():
    budget = Budget(10.0)
    assert budget.try_reserve(6.0)
    assert not budget.try_reserve(5.0)  # 6 in flight + 5 would pass 10
    budget.settle(6.0, 2.5)
    assert (budget.spent_usd, budget.reserved_usd, budget.requests) == (2.5, 0.0, 1)
    assert budget.try_reserve(7.5)
    budget.settle(7.5, 0.0)  # a failed attempt costs nothing
    assert (budget.spent_usd, budget.reserved_usd, budget.requests) == (2.5, 0.0, 1)


def test_the_prompt_bound_is_above_real_token_counts(tmp_path):
    """Against a byte-level BPE trained on English only (the worst case for other scripts: every
    byte of them is a token of its own), with the chat template's framing."""
    from tiny_model import build_tiny_model
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "tiny"))
    for text in [
        "Explain item 7 in a sentence.",
        "日本語のテキストを要約してください。",
        "def f(x):\n    return x**2\n" * 5,
    ]:
        messages = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": text})
        rendered = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        tokens = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        assert tokens > len(text) // 2  # a real count, not a length of something else
        assert prompt_tokens_bound(ChatRequest(messages, {})) >= tokens
