"""The shipped quickstart, alignment and tool_use recipes' own outputs go into TRL as they are.

Each recipe runs against the fake OpenAI server (the teacher's answers scripted as in
tests/test_domain_recipes.py, sizes cut down, no `train:` section), then its dataset is read back
with `load_from_disk(run/dataset)` and with `load_dataset("parquet", ...)` of the folder a push
uploads, and trains one step in TRL's own SFTTrainer (quickstart, tool_use) or DPOTrainer
(alignment): no column selected or renamed. The student is the tiny model of tests/tiny_model.py
with Qwen2.5-Instruct's chat template, which renders tools, tool calls and tool results.

Tool datasets' nested columns have Arrow types that pandas and pyarrow read as nested lists and
dicts: only a tool call's `arguments` is JSON text there (OpenAI's wire form), which `datasets` and
TRL read back as the dict chat templates render.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import read_jsonl
from test_domain_recipes import ALIGNMENT, TOOL_USE  # the teacher's scripted answers for those recipes
from tiny_model import build_tiny_model, one_trl_step, trl_chat_template

from synthkd.pipeline import run_recipe
from synthkd.publish.push import stage
from synthkd.publish.rundir import open_run
from synthkd.recipe import load_recipe
from synthkd.shipped import shipped_root
from synthkd.testing.fake_openai import FakeOpenAIServer

ANSWER = "A practical answer: start with the basics, give one worked example ({word}), then the mistakes."


@dataclass
class Case:
    recipe: str  # under the shipped recipes/
    script: list[dict[str, str]]  # FakeOpenAIServer rules
    overrides: list[str]  # `--set` values that cut the recipe down
    trainer: str  # the TRL trainer its format is for


CASES = {
    "quickstart": Case("quickstart.yaml", [{"match": ".", "reply": ANSWER}], ["steps.0.limit=4"], "sft"),
    "alignment": Case("alignment/constitution.yaml", ALIGNMENT.script, ["steps.0.limit=4"], "dpo"),
    "tool_use": Case("tool_use/function_calling.yaml", TOOL_USE.script, ["steps.0.num_requests=4"], "sft"),
}
_RUNS: dict[str, Path] = {}


def test_every_alignment_and_tool_use_recipe_is_covered():
    recipes = shipped_root() / "recipes"
    shipped = {
        path.relative_to(recipes).as_posix()
        for folder in ("alignment", "tool_use")
        for path in (recipes / folder).glob("*.yaml")
    }
    assert shipped | {"quickstart.yaml"} == {case.recipe for case in CASES.values()}


def run_of(name: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of the recipe `name`, run once per session on the fake server."""
    if name not in _RUNS:
        case = CASES[name]
        folder = tmp_path_factory.mktemp(name)
        with pytest.MonkeyPatch.context() as patch, FakeOpenAIServer(script=case.script) as server:
            patch.setenv("SYNTHKD_CACHE_DIR", str(folder / "cache"))  # not the user's cache
            patch.delenv("OPENAI_API_KEY", raising=False)
            teacher = [
                "teacher.backend=openai",
                "teacher.model=fake-model",
                f"teacher.base_url={server.base_url}",
                "teacher.api_key_env=null",
            ]
            loaded = load_recipe(shipped_root() / "recipes" / case.recipe, teacher + case.overrides)
            run_recipe(loaded, out_dir=folder / "run")  # steps only: the recipe's train: section is not run
        _RUNS[name] = folder / "run"
    return _RUNS[name]


def parquet_dataset(run: Path, folder: Path) -> Any:
    """The run as a push uploads it, read back by `datasets` from the parquet files."""
    from datasets import load_dataset

    files = stage(open_run(run), folder)
    parquet = [str(folder / name) for name in files if name.endswith(".parquet")]
    return load_dataset("parquet", data_files=parquet, split="train")


def as_written(value: Any) -> Any:
    """A value read back in the form data.jsonl holds it: arrays as lists, keys that only other
    turns have (None here) left out, a tool call's `arguments` JSON text as its object."""
    if isinstance(value, dict):
        return {
            key: json.loads(item) if key == "arguments" and isinstance(item, str) else as_written(item)
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ndarray":
        return [as_written(item) for item in value]
    return value


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_output_reads_back_as_written_in_every_reader(name: str, tmp_path_factory, tmp_path: Path):
    """`datasets` (the folder, the pushed parquet), pyarrow and pandas all give data.jsonl's rows,
    nested columns as lists and dicts, never as JSON strings (but a tool call's arguments)."""
    import pandas
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    run = run_of(name, tmp_path_factory)
    written = read_jsonl(run / "data.jsonl")
    assert len(written) >= 3
    parquet = parquet_dataset(run, tmp_path / "push")
    [file] = (tmp_path / "push" / "data").glob("*.parquet")
    table = pq.read_table(file)
    frame = pandas.read_parquet(file)
    conversations = [c for c in ("messages", "prompt", "chosen", "rejected") if c in written[0]]
    for column in [*conversations, "provenance"]:  # lists of structs
        assert pa.types.is_list(table.schema.field(column).type), column
        assert pa.types.is_struct(table.schema.field(column).type.value_type), column
    for rows in (list(load_from_disk(str(run / "dataset"))), list(parquet), table.to_pylist()):
        assert as_written(rows) == written
    assert as_written(frame.to_dict("records")) == written
    if name != "tool_use":
        return
    # Only the arguments (their keys differ per tool) are JSON: `datasets` reads them back as the
    # dicts chat templates render, pyarrow and pandas as OpenAI's JSON text.
    calls = table.schema.field("messages").type.value_type.field("tool_calls").type
    assert pa.types.is_list(calls) and pa.types.is_struct(calls.value_type)
    function = calls.value_type.field("function").type
    assert pa.types.is_struct(function) and function.field("arguments").type == pa.json_()
    assert table.schema.field("tools_called").type == pa.list_(pa.string())
    lisbon = {"city": "Lisbon, Portugal", "days_ahead": 1}
    for dataset in (load_from_disk(str(run / "dataset")), parquet):
        assert dataset[0]["messages"][2]["tool_calls"][0]["function"]["arguments"] == lisbon
        assert dataset[0]["messages"][1]["tool_calls"] is None  # a user turn: no calls
    for rows in (table.to_pylist(), frame.to_dict("records")):
        [call] = rows[0]["messages"][2]["tool_calls"]
        assert isinstance(call, dict) and json.loads(call["function"]["arguments"]) == lisbon
    # The tool schemas stay one JSON string a row (their parameters differ per tool); TRL loads it.
    tools = json.loads((shipped_root() / "recipes/tool_use/tools.json").read_text())
    assert json.loads(frame["tools"][0]) == tools


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_shipped_recipes_output_trains_in_trl_as_it_is(name: str, tmp_path_factory, tmp_path: Path):
    from datasets import load_from_disk

    case = CASES[name]
    run = run_of(name, tmp_path_factory)
    model_dir = build_tiny_model(tmp_path / "model", chat_template=trl_chat_template("qwen2_5"))
    sources = {
        "folder": load_from_disk(str(run / "dataset")),
        "parquet": parquet_dataset(run, tmp_path / "push"),
    }
    for source, dataset in sources.items():
        assert dataset.num_rows >= 3
        trainer = one_trl_step(dataset, case.trainer, model_dir, tmp_path / source)
        loss = trainer.state.log_history[-1]["train_loss"]
        assert trainer.state.global_step == 1 and math.isfinite(loss) and loss > 0, source
        if name == "tool_use":
            texts = [trainer.processing_class.decode(row["input_ids"]) for row in trainer.train_dataset]
            lisbon = next(text for text in texts if "umbrella in Lisbon" in text)
            # The call as Qwen2.5 writes it (arguments an object, no other tool's keys), its result.
            call = '{"name": "get_weather", "arguments": {"city": "Lisbon, Portugal", "days_ahead": 1}}'
            assert f"<|im_start|>assistant\n<tool_call>\n{call}\n</tool_call><|im_end|>" in lisbon
            assert '<tool_response>\n{"city": "Lisbon", "date": "2025-03-15", "conditions": "rain' in lisbon
            assert '"name": "convert_currency"' in lisbon  # the tool schemas reach the template
            assert "None" not in lisbon and "null" not in lisbon
            porto = next(text for text in texts if "Porto, Portugal" in text)  # the two-round conversation
            assert porto.count('<tool_call>\n{"name": "') == 2 and porto.count("<tool_response>") == 2
