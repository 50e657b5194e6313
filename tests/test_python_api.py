"""The public Python API: `synthkd.run` on a Dataset or a file, a Dataset back, inside a running
event loop too; one step at a time; custom steps and parsers from Python and from entry points.
Every teacher here is the fake OpenAI server over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Literal

import pytest
from datasets import Dataset, DatasetDict
from helpers import write_jsonl, write_recipe

import synthkd
from synthkd.errors import OutputBusyError
from synthkd.steps.base import CheckContext, Columns, Row, StepContext, require_columns
from synthkd.testing.fake_openai import FakeOpenAIServer

QUESTIONS = [{"instruction": f"Name a prime number above {n}."} for n in (10, 20, 30, 40)]


@pytest.fixture(autouse=True)
def registries():
    """Steps and parsers registered by a test are forgotten after it, like in a fresh process."""
    from synthkd.steps import STEP_TYPES
    from synthkd.steps.parsing import PARSERS

    steps, parsers = dict(STEP_TYPES), dict(PARSERS)
    yield
    STEP_TYPES.clear()
    STEP_TYPES.update(steps)
    PARSERS.clear()
    PARSERS.update(parsers)
    synthkd.Recipe.model_rebuild(force=True)


@pytest.fixture
def server():
    script = [
        {"match": "Translate", "reply": "Bonjour"},
        {"match": "above 40", "reply": "forty-one"},  # not a number: the `int` parser re-asks
        {"match": "could not be used", "reply": "41"},
        {"match": "above (\\d+)", "reply": "43"},
    ]
    with FakeOpenAIServer(script=script) as running:
        yield running


def teacher_of(server: FakeOpenAIServer) -> dict[str, Any]:
    return {"backend": "openai", "model": "m", "base_url": server.base_url, "api_key_env": None}


def label_recipe(server: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {
        "name": "api",
        "teacher": teacher_of(server),
        "steps": [{"step": "label", "system": "Answer with a number.", **extra}],
    }


# A custom step that asks the teacher, defined here as a user would: a TeacherStep subclass.
class TranslateStep(synthkd.TeacherStep):
    """Ask the teacher to translate each row's `response`."""

    step: Literal["translate"] = "translate"
    language: str = "French"

    def check_step(self, columns: Columns, ctx: CheckContext) -> Columns:
        require_columns({"response"}, columns, ctx, "step", "translate")
        return None if columns is None else columns | {"translation"}

    async def run(self, rows: list[Row], ctx: StepContext) -> synthkd.StepResult:
        requests = [self.chat(f"Translate into {self.language}: {row['response']}") for row in rows]
        result = synthkd.StepResult([])
        for row, outcome in zip(rows, await ctx.dispatcher.run(requests), strict=True):
            if outcome.completion is None:
                result.failures.append(synthkd.Failure.from_outcome(row, outcome))
            else:
                result.rows.append({**row, "translation": outcome.completion.text})
        return result


# And one that does not: plain Python over the rows.
class ShoutStep(synthkd.Step):
    step: Literal["shout"] = "shout"
    column: str = "response"

    async def run(self, rows: list[Row], ctx: StepContext) -> synthkd.StepResult:
        return synthkd.StepResult([{**row, self.column: str(row[self.column]).upper()} for row in rows])


def test_run_a_recipe_dict_on_a_dataset_and_get_a_dataset_back(server: FakeOpenAIServer, tmp_path: Path):
    dataset = Dataset.from_list(QUESTIONS)
    recipe = label_recipe(server)

    answered = synthkd.run(recipe, dataset, progress=False)

    assert isinstance(answered, Dataset)
    assert answered["instruction"] == [row["instruction"] for row in QUESTIONS]
    assert answered["response"] == ["43", "43", "43", "forty-one"]
    assert answered[0]["messages"][-1] == {"role": "assistant", "content": "43"}
    run_dir = tmp_path / "runs" / "api"  # the recipe's default run folder, as the CLI's
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["input_rows"] == 4 and manifest["rows"] == 4
    assert (run_dir / "README.md").is_file()  # the card, like `synthkd run`
    sent = server.stats()["requests"]
    assert sent == 4

    again = synthkd.run(recipe, dataset, progress=False)  # the same cache: resumes, sends nothing
    assert again["response"] == answered["response"]
    assert server.stats()["requests"] == sent


def test_run_works_inside_a_running_event_loop(server: FakeOpenAIServer, tmp_path: Path):
    """Jupyter runs an event loop in the kernel's thread: a plain call must not re-enter it."""
    recipe = label_recipe(server)
    rows = QUESTIONS[:2]

    async def notebook_cell() -> Dataset:
        loop_before = asyncio.get_running_loop()
        answered = synthkd.run(recipe, rows, output_dir=tmp_path / "in-loop", progress=False)
        assert asyncio.get_running_loop() is loop_before
        return answered

    assert asyncio.run(notebook_cell())["response"] == ["43", "43"]

    async def awaited() -> Dataset:
        return await synthkd.run_async(recipe, rows, output_dir=tmp_path / "awaited", progress=False)

    assert asyncio.run(awaited())["response"] == ["43", "43"]


def test_a_custom_step_defined_here_runs_by_name_and_as_an_object(server: FakeOpenAIServer, tmp_path: Path):
    synthkd.register_step(TranslateStep)
    by_name = label_recipe(server)
    by_name["steps"] += [
        {"step": "translate", "language": "French"},
        {"step": "shout", "column": "translation"},
    ]
    with pytest.raises(synthkd.RecipeError, match=r"<recipe>:.*unknown step 'shout'"):
        synthkd.run(by_name, QUESTIONS[:2], progress=False)
    synthkd.register_step(ShoutStep)

    translated = synthkd.run(by_name, QUESTIONS[:2], output_dir=tmp_path / "by-name", progress=False)
    assert translated["translation"] == ["BONJOUR", "BONJOUR"]

    as_objects = {
        "name": "objects",
        "teacher": synthkd.TeacherConfig(**teacher_of(server)),
        "steps": [{"step": "label"}, TranslateStep(language="German"), ShoutStep(column="translation")],
    }
    translated = synthkd.run(as_objects, QUESTIONS[:1], progress=False)
    assert translated["translation"] == ["BONJOUR"]
    provenance = translated[0]["provenance"]
    assert [entry["step"] for entry in provenance] == ["label", "translate"]  # shout sends nothing
    assert json.loads(provenance[-1]["step_params"])["language"] == "German"


def test_a_custom_step_checks_like_a_shipped_one(server: FakeOpenAIServer):
    synthkd.register_step(TranslateStep)
    recipe = {"name": "bad", "teacher": teacher_of(server), "steps": [{"step": "translate"}]}
    with pytest.raises(synthkd.RecipeError, match=r"translate needs column\(s\) response"):
        synthkd.run(recipe, [{"instruction": "hi"}], progress=False)
    with pytest.raises(synthkd.RecipeError, match=r"steps\.0\.langage: unknown key 'langage'.*'language'"):
        synthkd.load_recipe({**recipe, "steps": [{"step": "translate", "langage": "Dutch"}]})
    assert server.stats()["requests"] == 0


def test_a_step_that_is_not_a_step_class_is_refused():
    with pytest.raises(synthkd.RecipeError, match="not a subclass of synthkd.steps.Step"):
        synthkd.register_step(dict)  # type: ignore[arg-type]

    class Nameless(synthkd.Step):
        pass

    with pytest.raises(synthkd.RecipeError, match=r"needs a field `step: Literal"):
        synthkd.register_step(Nameless)

    class Impostor(synthkd.Step):
        step: Literal["label"] = "label"

    with pytest.raises(synthkd.RecipeError, match="a step named 'label' exists already"):
        synthkd.register_step(Impostor)


def test_run_step_applies_one_step_to_a_dataset(server: FakeOpenAIServer, tmp_path: Path):
    dataset = Dataset.from_list(QUESTIONS[:3])
    answered = synthkd.run_step({"step": "label"}, dataset, teacher=teacher_of(server), progress=False)
    assert answered.column_names[:2] == ["id", "instruction"]
    assert answered["response"] == ["43", "43", "43"]
    assert "messages" not in answered.column_names  # the step's own columns, nothing added

    translated = synthkd.run_step(TranslateStep(), answered, teacher=teacher_of(server), progress=False)
    assert translated["translation"] == ["Bonjour"] * 3
    assert translated["id"] == answered["id"]  # ids carried through
    assert not (tmp_path / "runs").exists()  # nothing written but the cache


def test_a_parser_registered_from_python(server: FakeOpenAIServer, tmp_path: Path):
    def prime(text: str) -> int:
        number = int(text.strip())  # "forty-one" raises ValueError: the teacher is asked again
        if number < 2 or any(number % d == 0 for d in range(2, number)):
            raise ValueError(f"{number} is not prime")
        return number

    synthkd.register_parser("prime", prime)
    parsed = synthkd.run(label_recipe(server, parser="prime"), QUESTIONS, progress=False)
    assert parsed["parsed"] == [43, 43, 43, 41]
    assert parsed["response"][-1] == "41"  # the re-asked answer

    with pytest.raises(synthkd.RecipeError, match=r"steps\.0\.parser: no parser named 'primes'.*prime"):
        synthkd.run(label_recipe(server, parser="primes"), QUESTIONS, progress=False)


def test_held_out_gives_the_training_split(server: FakeOpenAIServer):
    from synthkd.training.config import TrainConfig
    from synthkd.training.run import _split

    splits = synthkd.run(label_recipe(server), QUESTIONS, held_out=0.25, progress=False)
    assert isinstance(splits, DatasetDict) and splits.num_rows == {"train": 3, "test": 1}
    whole = synthkd.run(label_recipe(server), QUESTIONS, progress=False)
    # The rows `train:` holds out with the same share and the recipe's seed (42 by default).
    trained_on, held_out = _split(TrainConfig(student="embedded", eval_split=0.25), whole, seed=42)
    assert splits["test"]["id"] == held_out["id"] and splits["train"]["id"] == trained_on["id"]
    with pytest.raises(synthkd.RecipeError, match="held_out=: a share between 0 and 1"):
        synthkd.run(label_recipe(server), QUESTIONS, held_out=5)


def test_a_recipe_file_and_a_data_file(server: FakeOpenAIServer, tmp_path: Path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", QUESTIONS[:2])
    recipe = write_recipe(tmp_path / "r.yaml", label_recipe(server))
    answered = synthkd.run(recipe, seeds, overrides=["steps.0.system=Be brief."], progress=False)
    assert answered["response"] == ["43", "43"]
    assert answered[0]["system"] == "Be brief."


def test_bad_input_is_one_clear_error(server: FakeOpenAIServer):
    with pytest.raises(synthkd.RecipeError, match="DatasetDict holds several splits"):
        synthkd.run(label_recipe(server), DatasetDict({"train": Dataset.from_list(QUESTIONS)}))
    with pytest.raises(synthkd.RecipeError, match="the dataset has no rows"):
        synthkd.run(label_recipe(server), [])
    with pytest.raises(synthkd.RecipeError, match=r"dataset='nowhere.jsonl': no such file"):
        synthkd.run(label_recipe(server), "nowhere.jsonl")
    with pytest.raises(synthkd.RecipeError, match=r"<recipe>: teacher\.modle: unknown key 'modle'"):
        synthkd.run({**label_recipe(server), "teacher": {"modle": "x"}}, QUESTIONS)
    assert server.stats()["requests"] == 0


def test_recipe_model_validate_gives_steps_their_teacher(server: FakeOpenAIServer):
    """Built in Python without the loader, a step still gets the recipe's teacher, key by key."""
    recipe = synthkd.Recipe.model_validate(
        {**label_recipe(server), "steps": [{"step": "label", "teacher": {"model": "other"}}]}
    )
    assert recipe.steps[0].teacher.base_url == server.base_url
    assert recipe.steps[0].teacher.model == "other"
    answered = synthkd.run(recipe, QUESTIONS[:1], progress=False)
    assert answered["response"] == ["43"]


PLUGIN = """
from typing import Literal

from synthkd.steps.base import Step, StepResult


class ReverseStep(Step):
    step: Literal["reverse"] = "reverse"

    async def run(self, rows, ctx):
        return StepResult([{**row, "response": row["response"][::-1]} for row in rows])


def digits(text):
    if not text.strip().isdigit():
        raise ValueError("not digits")
    return int(text)
"""


def test_steps_and_parsers_from_an_installed_package(server: FakeOpenAIServer, tmp_path: Path):
    """A third-party package declares entry points; `synthkd run` finds them, no import needed."""
    site = tmp_path / "site"
    (site / "reverse_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "reverse_plugin.py").write_text(PLUGIN, encoding="utf-8")
    (site / "reverse_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: reverse-plugin\nVersion: 0.1\n", encoding="utf-8"
    )
    (site / "reverse_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[synthkd.steps]\nreverse = reverse_plugin:ReverseStep\n\n"
        "[synthkd.parsers]\ndigits = reverse_plugin:digits\n",
        encoding="utf-8",
    )
    write_jsonl(tmp_path / "seeds.jsonl", QUESTIONS[:2])
    recipe = label_recipe(server, parser="digits")
    recipe["steps"] = [{"step": "load", "path": "seeds.jsonl"}, *recipe["steps"], {"step": "reverse"}]
    write_recipe(tmp_path / "plugin.yaml", recipe)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    def synthkd_command(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "synthkd.cli", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    done = synthkd_command("run", "plugin.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = Dataset.load_from_disk(str(tmp_path / "runs" / "api" / "dataset"))
    assert rows["response"] == ["34", "34"] and rows["parsed"] == [43, 43]

    (site / "reverse_plugin.py").write_text("raise ImportError('broken on purpose')\n", encoding="utf-8")
    broken = synthkd_command("validate", "plugin.yaml")
    assert broken.returncode == 2
    assert "entry point synthkd.steps: reverse: cannot load reverse_plugin:ReverseStep" in broken.stderr
    assert "reverse-plugin" in broken.stderr and "Traceback" not in broken.stderr


def test_import_synthkd_stays_light():
    """The API is imported when first used: `import synthkd` loads no recipe or run machinery."""
    code = textwrap.dedent(
        """
        import sys, synthkd
        heavy = [m for m in ("synthkd.api", "synthkd.pipeline", "pydantic", "datasets") if m in sys.modules]
        print(heavy, synthkd.__version__, callable(synthkd.run), "synthkd.api" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", synthkd.__version__, "True", "True"]


def test_two_runs_on_one_folder_in_one_process_do_not_mix(tmp_path: Path):
    """Runs in one process hold their folder against each other as against another process."""
    with FakeOpenAIServer(latency_ms=300) as slow:
        recipe = label_recipe(slow)
        first = [{"instruction": f"A{i} above 10"} for i in range(3)]
        second = [{"instruction": f"B{i} above 10"} for i in range(5)]

        async def both() -> list[Any]:
            return await asyncio.gather(
                synthkd.run_async(recipe, first, output_dir=tmp_path / "same", progress=False),
                synthkd.run_async(recipe, second, output_dir=tmp_path / "same", progress=False),
                return_exceptions=True,
            )

        outcomes = asyncio.run(both())
    finished = [outcome for outcome in outcomes if isinstance(outcome, Dataset)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, OutputBusyError)]
    assert len(finished) == 1 and len(refused) == 1, outcomes
    assert finished[0]["instruction"] == [row["instruction"] for row in first]


def test_interrupting_a_run_inside_an_event_loop_stops_its_requests(tmp_path: Path):
    """Ctrl-C in Jupyter interrupts the kernel's thread while it waits for the run: the run
    itself must stop sending (paid) requests and let go of its folder."""
    with FakeOpenAIServer(latency_ms=400) as slow:
        recipe = label_recipe(slow)
        recipe["teacher"]["concurrency"] = 2
        rows = [{"instruction": f"Question {i} above 10"} for i in range(40)]  # 8 s at this pace

        async def notebook_cell() -> None:
            synthkd.run(recipe, rows, output_dir=tmp_path / "run", progress=False)

        # ipykernel runs cells in its loop with Python's own SIGINT handler (asyncio.run would
        # install one that only cancels at the next await, which a blocking call never reaches).
        kernel_loop = asyncio.new_event_loop()
        main = threading.main_thread().ident
        threading.Timer(1.5, signal.pthread_kill, (main, signal.SIGINT)).start()  # a kernel interrupt
        with pytest.raises(KeyboardInterrupt):
            kernel_loop.run_until_complete(notebook_cell())
        kernel_loop.close()
        stopped_at = slow.stats()["requests"]
        time.sleep(1.5)
        assert slow.stats()["requests"] == stopped_at < 40
        assert not any(thread.name == "synthkd-run" for thread in threading.enumerate())
        # The folder is free again, and the answers received are cached: the rerun sends the rest.
        again = synthkd.run(recipe, rows[:6], output_dir=tmp_path / "run", progress=False)
    assert len(again) == 6


def test_cancelling_run_async_stops_its_requests(tmp_path: Path):
    with FakeOpenAIServer(latency_ms=400) as slow:
        recipe = label_recipe(slow)
        recipe["teacher"]["concurrency"] = 2
        rows = [{"instruction": f"Question {i} above 10"} for i in range(40)]

        async def cancel_after_a_while() -> None:
            task = asyncio.create_task(synthkd.run_async(recipe, rows, output_dir=tmp_path, progress=False))
            await asyncio.sleep(1.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_after_a_while())
        stopped_at = slow.stats()["requests"]
        time.sleep(1.5)
        assert slow.stats()["requests"] == stopped_at < 40


def test_overrides_reach_the_steps_of_a_recipe_object(server: FakeOpenAIServer):
    recipe = synthkd.Recipe.model_validate(
        {**label_recipe(server), "steps": [{"step": "label"}, {"step": "label", "teacher": {"model": "own"}}]}
    )
    overridden = synthkd.load_recipe(recipe, overrides=["teacher.model=other"]).recipe
    assert [step.teacher.model for step in overridden.steps] == ["other", "own"]
    # A step taken into another recipe gets that recipe's teacher, keeping only its own keys.
    moved = synthkd.load_recipe(
        {"name": "moved", "teacher": {**teacher_of(server), "model": "new"}, "steps": list(recipe.steps)}
    ).recipe
    assert [step.teacher.model for step in moved.steps] == ["new", "own"]


def _echo_step_class(version: int) -> type[synthkd.Step]:
    """The same class defined again, as a notebook cell run twice defines it."""

    class EchoStep(synthkd.Step):
        step: Literal["echo"] = "echo"

        async def run(self, rows: list[Row], ctx: StepContext) -> synthkd.StepResult:
            return synthkd.StepResult([{**row, "version": version} for row in rows])

    return EchoStep


def test_a_step_class_defined_again_replaces_itself_and_old_objects_are_refused(tmp_path: Path):
    old = synthkd.register_step(_echo_step_class(1))
    new = synthkd.register_step(_echo_step_class(2))  # the cell ran again: no clash
    recipe = {"name": "echo", "steps": [{"step": "echo"}]}
    assert synthkd.run(recipe, [{"x": 1}], progress=False)["version"] == [2]
    assert synthkd.run({**recipe, "steps": [new()]}, [{"x": 1}], progress=False)["version"] == [2]
    with pytest.raises(
        synthkd.RecipeError, match=r"<recipe>: steps\.0: this EchoStep object was made from another"
    ):
        synthkd.load_recipe({**recipe, "steps": [old()]})


def test_a_broken_plugin_is_one_clear_error_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from synthkd import recipe as recipe_module

    site = tmp_path / "site"
    info = site / "mixed_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "mixed_plugin.py").write_text(PLUGIN, encoding="utf-8")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mixed-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[synthkd.steps]\nreverse = mixed_plugin:ReverseStep\n\n"
        "[synthkd.parsers]\nbroken = mixed_plugin:nowhere\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(recipe_module, "_plugins_loaded", False)
    recipe = {"name": "plugin", "steps": [{"step": "reverse"}]}
    for _ in range(2):  # the same line again, not a half-registered state
        with pytest.raises(synthkd.RecipeError, match=r"entry point synthkd.parsers: broken: cannot load"):
            synthkd.load_recipe(recipe)
    (info / "entry_points.txt").write_text("[synthkd.steps]\nreverse = mixed_plugin:ReverseStep\n")
    assert synthkd.run(recipe, [{"response": "abc"}], progress=False)["response"] == ["cba"]


def test_parsed_values_of_several_types_are_kept(server: FakeOpenAIServer):
    synthkd.register_parser("number_or_word", lambda text: int(text) if text.isdigit() else text)
    parsed = synthkd.run(label_recipe(server, parser="number_or_word"), QUESTIONS, progress=False)
    assert parsed["parsed"] == [43, 43, 43, "forty-one"]


class Collected(synthkd.Reporter):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def test_run_step_says_which_rows_failed(tmp_path: Path):
    script = [{"match": "refuse", "status": 400, "message": "no"}, {"match": ".", "reply": "fine"}]
    with FakeOpenAIServer(script=script) as server:
        rows = [{"instruction": "ok 1"}, {"instruction": "refuse this"}, {"instruction": "ok 2"}]
        heard = Collected()
        answered = synthkd.run_step(
            {"step": "label"}, rows, teacher=teacher_of(server), progress=False, reporter=heard
        )
        assert answered["instruction"] == ["ok 1", "ok 2"]
        assert len(heard.warnings) == 1 and "label: 1 of 3 rows failed" in heard.warnings[0]
        with pytest.raises(synthkd.RunIncompleteError) as failed:
            synthkd.run_step({"step": "label"}, rows[1:2], teacher=teacher_of(server), progress=False)
    message = str(failed.value)
    assert "kept none of 1" in message and "synthkd-step-" not in message
