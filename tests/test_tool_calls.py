"""tool_calls: calls validated against the tools' schemas; the output trains in TRL's SFTTrainer."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl, write_recipe
from tiny_model import build_tiny_model

from synthkd.errors import RecipeError
from synthkd.pipeline import ProgressFactory, check, run_recipe
from synthkd.recipe import load_recipe
from synthkd.steps.base import Progress
from synthkd.steps.parsing import ParseError
from synthkd.steps.tool_calls import calls_parser, load_tools
from synthkd.testing.fake_openai import FakeOpenAIServer

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {  # the bare form is accepted too
        "name": "search_flights",
        "description": "Flights between two airports on a date.",
        "parameters": {
            "type": "object",
            "properties": {
                "origin": {"type": "string"},
                "destination": {"type": "string"},
                "date": {"type": "string", "description": "YYYY-MM-DD"},
                "passengers": {"type": "integer", "minimum": 1},
            },
            "required": ["origin", "destination", "date"],
        },
    },
]
CALLS = "(?s)Decide which tool calls.*User request:\n"  # matched against the calls prompt
CALLS_REPLY = "(?s)^User request:\n"
SCRIPT = [
    # Calls, results and answers shaped like a chat model's replies (fenced JSON, prose answers).
    {
        "match": "(?s)User request:\nWhat's the weather in Oslo and in Rome.*Decide which tool calls",
        "reply": '```json\n[{"name": "get_weather", "arguments": {"city": "Oslo"}},\n'
        ' {"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}]\n```',
    },
    {
        "match": "(?s)User request:\nFind me flights.*Decide which tool calls",
        "reply": '[{"name": "search_flights", "arguments": {"origin": "CDG", "destination": "FCO", '
        '"date": "2025-05-01", "passengers": "two"}}]',  # wrong type: re-asked
    },
    {
        "match": "'two' is not of type 'integer'",
        "reply": '[{"name": "search_flights", "arguments": {"origin": "CDG", "destination": "FCO", '
        '"date": "2025-05-01", "passengers": 2}}]',
    },
    {
        "match": "(?s)User request:\nBook me a room.*Decide which tool calls",
        "reply": '[{"name": "book_hotel", "arguments": {"city": "Rome"}}]',  # no such tool
    },
    {
        "match": "unknown function 'book_hotel'",
        "reply": '[{"name": "book_hotel", "arguments": {"city": "Rome"}}]',
    },
    {"match": "(?s)User request:\nTell me a joke.*Decide which tool calls", "reply": "[]"},
    {
        "match": "(?s)weather in Oslo.*The assistant made these calls",
        "reply": '[{"temperature": 4, "conditions": "snow"}, {"temperature": 19, "conditions": "sunny"}]',
    },
    {
        "match": "(?s)Find me flights.*The assistant made these calls",
        "reply": '{"flights": [{"number": "AF1404", "departs": "07:10", "price_eur": 129}]}',
    },
    {
        "match": "(?s)weather in Oslo.*To answer, you called tools",
        "reply": "Oslo: 4 °C and snow. Rome: 19 °C.",
    },
    {
        "match": "(?s)Find me flights.*To answer, you called tools",
        "reply": "AF1404 leaves at 07:10 for €129.",
    },
]
REQUESTS = [
    {"id": "weather", "request": "What's the weather in Oslo and in Rome?"},
    {"id": "flights", "request": "Find me flights from Paris CDG to Rome FCO on 1 May 2025 for two of us."},
    {"id": "hotel", "request": "Book me a room in Rome."},
    {"id": "joke", "request": "Tell me a joke."},
]
TOOL_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{%- for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{%- if message.get('tool_calls') %}{% for call in message['tool_calls'] %}"
    "<tool_call>{{ {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson }}"
    "</tool_call>{% endfor %}"
    "{%- elif message['role'] == 'tool' %}<tool_response name=\"{{ message['name'] }}\">"
    "{{ message['content'] }}</tool_response>"
    "{%- else %}{{ message['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_calls_are_validated_against_the_schemas():
    parse = calls_parser(load_tools_from(TOOLS))
    assert parse('[{"name": "get_weather", "arguments": {"city": "Oslo"}}]') == [
        {"name": "get_weather", "arguments": {"city": "Oslo"}}
    ]
    wire = (
        '[{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}}]'
    )
    assert parse(wire) == [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    assert parse('{"name": "get_weather", "arguments": {"city": "Oslo"}}')[0]["name"] == "get_weather"
    assert parse("[]") == []
    for text, error in [
        ('[{"name": "book_hotel", "arguments": {}}]', "unknown function 'book_hotel'; the tools are: get_"),
        ('[{"name": "get_weather", "arguments": {"city": 7}}]', "7 is not of type 'string' (argument city)"),
        ('[{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "K"}}]', "'K' is not one of"),
        ('[{"name": "get_weather", "arguments": {}}]', "'city' is a required property"),
        ('[{"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}}]', "unknown parameter(s) days"),
        ('[{"name": "search_flights", "arguments": {"origin": "A", "destination": "B", "date": "d", '
         '"passengers": 0}}]', "0 is less than the minimum of 1"),
        ("call get_weather(Oslo)", "not JSON"),
    ]:  # fmt: skip
        with pytest.raises(ParseError) as caught:
            parse(text)
        assert error in str(caught.value)


def load_tools_from(tools: list, tmp: Path | None = None) -> list:
    path = (tmp or Path.cwd()) / "tools.json"
    path.write_text(json.dumps(tools))
    return load_tools(path)


def test_tools_file_errors(tmp_path: Path):
    for tools, error in [
        ([], "non-empty JSON list"),
        ([TOOLS[0], TOOLS[0]], "a second tool named 'get_weather'"),
        (
            [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "strin"}}}}],
            "valid JSON",
        ),
        ([{"description": "no name"}], "expected"),
    ]:
        with pytest.raises(ValueError, match=error):
            load_tools_from(tools, tmp_path)


def _recipe(tmp_path: Path, base_url: str, step: dict) -> Path:
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    write_jsonl(tmp_path / "requests.jsonl", REQUESTS)
    return write_recipe(
        tmp_path / "r.yaml",
        {
            "name": "tools",
            "teacher": {"backend": "openai", "model": "m", "base_url": base_url, "api_key_env": None},
            "steps": [
                {"step": "load", "path": "requests.jsonl"},
                {"step": "tool_calls", "tools": "tools.json", **step},
            ],
            "output": {"dir": str(tmp_path / "out")},
        },
    )


def test_conversations_with_valid_calls_train_in_trl(tmp_path: Path):
    with FakeOpenAIServer(script=SCRIPT) as server:
        path = _recipe(
            tmp_path, server.base_url, {"request_column": "request", "system": "You help travellers."}
        )
        result = run_recipe(load_recipe(path))
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert set(rows) == {"weather", "flights"}
    assert result.reports[1].rows_dropped == {"no_tool_call": 1}
    [(_, failure)] = result.failures
    assert (failure.id, failure.reason, failure.attempts) == ("hotel", "invalid_tool_call", 2)
    assert "unknown function 'book_hotel'" in failure.error
    flights = rows["flights"]["messages"]
    assert flights[0] == {"role": "system", "content": "You help travellers."}
    assert flights[2] == {  # re-asked once with the type error, then valid
        "role": "assistant",
        "content": "",  # OpenAI's form: chat templates such as SmolLM2's raise without it
        "tool_calls": [
            {
                "id": "call_0_0",
                "type": "function",
                "function": {
                    "name": "search_flights",
                    "arguments": {
                        "origin": "CDG",
                        "destination": "FCO",
                        "date": "2025-05-01",
                        "passengers": 2,
                    },
                },
            }
        ],
    }
    assert flights[3] == {
        "role": "tool",
        "tool_call_id": "call_0_0",  # the result answers that call
        "name": "search_flights",
        "content": '{"flights": [{"number": "AF1404", "departs": "07:10", "price_eur": 129}]}',
    }
    assert flights[4] == {"role": "assistant", "content": "AF1404 leaves at 07:10 for €129."}
    weather = rows["weather"]
    assert [m["role"] for m in weather["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    assert weather["tools_called"] == ["get_weather", "get_weather"]
    assert json.loads(weather["tools"])[1]["function"]["name"] == "search_flights"
    assert result.manifest["steps"][1]["details"]["calls_by_tool"] == {"get_weather": 2, "search_flights": 1}

    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dataset = load_from_disk(str(tmp_path / "out" / "dataset"))
    # Turns are Arrow structs (parquet and pandas read them as such), not one JSON column.
    assert dataset.features["messages"].feature["tool_calls"].feature["function"]["name"].dtype == "string"
    stored = {row["id"]: row for row in dataset}
    # Arguments come back exactly as written: no keys of other tools' calls filled with None.
    assert stored["weather"]["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    model_dir = build_tiny_model(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = TOOL_TEMPLATE
    text = tokenizer.apply_chat_template(
        stored["weather"]["messages"], tools=json.loads(stored["weather"]["tools"]), tokenize=False
    )
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>' in text
    assert '"name": "search_flights"' in text  # the schemas reach the template
    # The embedded teacher's own template (SmolLM2's) reads every turn's content: it raised
    # ("'dict object' has no attribute 'content'") on calling turns without one.
    from synthkd.teachers.embedded import embedded_tokenizer

    rendered = embedded_tokenizer().apply_chat_template(stored["weather"]["messages"], tokenize=False)
    assert "<|im_start|>tool" in rendered
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir),
        args=SFTConfig(
            output_dir=str(tmp_path / "student"),
            max_steps=1,
            per_device_train_batch_size=2,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
        ),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 1
    assert trainer.state.log_history[-1]["train_loss"] > 0


def test_requests_written_by_the_teacher(tmp_path: Path):
    script = [
        {
            "match": "(?s)Write one realistic message.*tool `get_weather`",
            "reply": '"Is it raining in {word}?"',
        },
        {
            "match": "(?s)Write one realistic message.*tool `search_flights`",
            "reply": "A flight to Rome, please.",
        },
        {
            "match": "(?s)Is it raining.*Decide",
            "reply": '[{"name": "get_weather", "arguments": {"city": "Bergen"}}]',
        },
        {"match": "(?s)flight to Rome.*Decide", "reply": "[]"},
        {"match": "The assistant made these calls", "reply": '{"rain": true}'},
        {"match": "To answer, you called tools", "reply": "Yes, bring an umbrella."},
    ]
    with FakeOpenAIServer(script=script) as server:
        result = run_recipe(load_recipe(_recipe(tmp_path, server.base_url, {"num_requests": 4})))
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    made = [row for row in rows if row["id"].startswith("tool-")]
    assert [row["id"] for row in rows[: len(REQUESTS)]] == [r["id"] for r in REQUESTS]  # passed through
    assert [row["id"] for row in made] == ["tool-0000", "tool-0002"]
    assert made[0]["request"].startswith("Is it raining in ") and made[0]["request"] != made[1]["request"]
    assert made[0]["messages"][-1] == {"role": "assistant", "content": "Yes, bring an umbrella."}
    # Requests 1 and 3 (search_flights) are the same text: one is dropped; the other needs no call.
    assert result.reports[1].rows_dropped == {"duplicate_request": 1, "no_tool_call": 1}


def test_recipe_errors(tmp_path: Path):
    path = _recipe(tmp_path, "http://127.0.0.1:9/v1", {"tools": "missing.json"})
    with pytest.raises(RecipeError, match="tools file not found: missing.json"):
        check(load_recipe(path))
    path = _recipe(tmp_path, "http://127.0.0.1:9/v1", {"request_column": "question"})
    with pytest.raises(RecipeError, match="needs column"):
        check(load_recipe(path))


def test_only_columns_whose_dicts_vary_are_stored_as_json():
    from datasets import Json

    from synthkd.output import to_dataset

    plain = [{"id": "a", "messages": [{"role": "user", "content": "x"}], "n": 1}] * 2
    assert not any(isinstance(feature, Json) for feature in to_dataset(plain).features.values())
    varied = [
        {"id": "a", "args": {"city": "Oslo"}, "messages": plain[0]["messages"]},
        {
            "id": "b",
            "args": {"city": 7, "days": [1]},
            "messages": plain[0]["messages"],
        },  # would not even load
    ]
    dataset = to_dataset(varied)
    assert [column for column, feature in dataset.features.items() if isinstance(feature, Json)] == ["args"]
    assert list(dataset.column_names) == ["id", "args", "messages"]
    assert dataset[0]["args"] == {"city": "Oslo"} and dataset[1]["args"] == {"city": 7, "days": [1]}


GET_WEATHER = '[{{"name": "get_weather", "arguments": {{"city": "{}"}}}}]'
FLIGHT = "Find me a flight from Paris CDG on 2025-05-01 to whichever of Oslo or Rome is warmer."
ROUNDS_SCRIPT = [
    # Round 1. With rounds to come, the calls prompt says a dependent call can wait for results.
    {
        "match": f"(?s)User request:\n{re.escape(FLIGHT)}.*Decide which tool calls.*can call again",
        "reply": '[{"name": "get_weather", "arguments": {"city": "Oslo"}}, '
        '{"name": "get_weather", "arguments": {"city": "Rome"}}]',
    },
    {"match": "(?s)User request:\nWeather in Oslo\\?.*Decide which", "reply": GET_WEATHER.format("Oslo")},
    {"match": "(?s)User request:\nWeather in Rome\\?.*Decide which", "reply": GET_WEATHER.format("Rome")},
    # Bergen: a new call every round (another unit), until the rounds run out.
    {
        "match": '(?s)Keep checking Bergen.*"unit": "celsius"}\\) returned.*Decide whether more',
        "reply": '[{"name": "get_weather", "arguments": {"city": "Bergen", "unit": "fahrenheit"}}]',
    },
    {
        "match": "(?s)User request:\nKeep checking Bergen.*Decide whether more",
        "reply": '[{"name": "get_weather", "arguments": {"city": "Bergen", "unit": "celsius"}}]',
    },
    {"match": "(?s)User request:\nKeep checking Bergen.*Decide", "reply": GET_WEATHER.format("Bergen")},
    # Later rounds: the flight needs the temperatures; after the search there is nothing left to call.
    {"match": f"(?s){re.escape(FLIGHT)}.*already called tools.*search_flights\\(", "reply": "[]"},
    {
        "match": f'(?s){re.escape(FLIGHT)}.*already called tools.*Rome"}}\\) returned: {{"temperature": 19}}',
        "reply": '[{"name": "search_flights", "arguments": '
        '{"origin": "CDG", "destination": "FCO", "date": "2025-05-01"}}]',
    },
    # Oslo asks again for the call it made: a repeat, dropped, which leaves nothing more to call.
    {"match": "(?s)Weather in Oslo\\?.*Decide whether more", "reply": GET_WEATHER.format("Oslo")},
    {
        "match": "(?s)Weather in Rome\\?.*Decide whether more",
        "reply": '[{"name": "book_hotel", "arguments": {}}]',
    },
    {"match": "unknown function 'book_hotel'", "reply": '[{"name": "book_hotel", "arguments": {}}]'},
    # Results: a later round's prompt carries the earlier results, so they stay consistent.
    {
        "match": '(?s)Earlier calls and what they returned:\n- get_weather\\({"city": "Oslo"}\\) returned: '
        '{"temperature": 4}.*Then the assistant made these calls:\n\\[{"name": "search_flights"',
        "reply": '{"flights": [{"number": "AZ317", "price_eur": 99}]}',
    },
    {
        "match": f"(?s){re.escape(FLIGHT)}.*The assistant made these calls",
        "reply": '[{"temperature": 4}, {"temperature": 19}]',
    },
    {"match": "(?s)Bergen.*made these calls", "reply": '{"temperature": 8, "rain": true}'},
    {"match": "made these calls", "reply": '{"temperature": 12}'},
    {
        "match": "(?s)To answer, you called tools.*get_weather.*get_weather.*search_flights.*AZ317",
        "reply": "Rome is warmer (19 °C against 4 °C): AZ317 flies there on 1 May for €99.",
    },
    {"match": "To answer, you called tools", "reply": "Here is what I found."},
]


class CountingBars(ProgressFactory):
    """Each step's progress as [advanced, total], to check a bar ends full."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}

    def step(self, label: str, stats: object) -> Progress:
        counts = self.counts.setdefault(label, [0, 0])

        class Bar(Progress):
            def set_total(self, total: int) -> None:
                counts[1] = total

            def advance(self, rows: int = 1) -> None:
                counts[0] += rows

        return Bar()


def _calls(row: dict) -> list[dict]:
    return [call["function"] for m in row["messages"] for call in m.get("tool_calls") or []]


def test_later_rounds_call_with_earlier_results_until_done_or_out_of_rounds(tmp_path: Path):
    requests = [
        {"id": "flight", "request": FLIGHT},  # 2 rounds: the search needs the temperatures
        {"id": "oslo", "request": "Weather in Oslo?"},  # 1 round, then only a repeat of it
        {"id": "bergen", "request": "Keep checking Bergen until it stops raining."},  # calls every round
        {"id": "rome", "request": "Weather in Rome?"},  # an invalid call in round 2
    ]
    with FakeOpenAIServer(script=ROUNDS_SCRIPT) as server:
        path = _recipe(tmp_path, server.base_url, {"request_column": "request", "max_rounds": 3})
        write_jsonl(tmp_path / "requests.jsonl", requests)
        bars = CountingBars()
        result = run_recipe(load_recipe(path), progress=bars)
    rows = {row["id"]: row for row in read_jsonl(tmp_path / "out" / "data.jsonl")}
    assert list(rows) == ["flight", "oslo", "bergen"]
    # The bar ends full: conversations that stop early advance it by the requests they skip.
    assert bars.counts["1:tool_calls"] == [24, 24]
    flight = rows["flight"]["messages"]
    assert [m["role"] for m in flight] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert [c["function"]["name"] for c in flight[1]["tool_calls"]] == ["get_weather", "get_weather"]
    assert flight[4]["tool_calls"][0]["function"]["arguments"]["destination"] == "FCO"
    assert [m.get("tool_call_id") for m in flight[2:6]] == ["call_0_0", "call_0_1", None, "call_1_0"]
    assert flight[5] == {
        "role": "tool",
        "tool_call_id": "call_1_0",  # round 1's first call
        "name": "search_flights",
        "content": '{"flights": [{"number": "AZ317", "price_eur": 99}]}',
    }
    assert flight[6]["content"].startswith("Rome is warmer")  # the answer saw every round's results
    assert rows["flight"]["tools_called"] == ["get_weather", "get_weather", "search_flights"]
    assert [m["role"] for m in rows["oslo"]["messages"]] == ["user", "assistant", "tool", "assistant"]
    # Bergen calls in every round: after the third round's results it must answer.
    assert rows["bergen"]["tools_called"] == ["get_weather"] * 3
    assert [call["arguments"].get("unit") for call in _calls(rows["bergen"])] == [
        None,
        "celsius",
        "fahrenheit",
    ]
    [(_, failure)] = result.failures
    assert (failure.id, failure.reason, failure.attempts) == ("rome", "invalid_tool_call", 2)
    details = result.manifest["steps"][1]["details"]
    assert details["conversations_by_rounds"] == {"1": 1, "2": 1, "3": 1}
    assert details["calls_by_tool"] == {"get_weather": 6, "search_flights": 1}
    assert details["repeated_calls_dropped"] == 1  # Oslo's second get_weather("Oslo")

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "tiny"))
    tokenizer.chat_template = TOOL_TEMPLATE
    text = tokenizer.apply_chat_template(flight, tools=json.loads(rows["flight"]["tools"]), tokenize=False)
    assert text.count("<tool_call>") == 3 and text.count("<|im_start|>assistant") == 3
