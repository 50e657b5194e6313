"""The step bars as they are drawn: the rows/s column (a rate over the step so far, none for a
step under a second), the time left, the retries by reason, columns that keep their places as
numbers grow, and a bar that never shows more done than its total."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import write_jsonl, write_recipe
from rich.console import Console
from rich.progress import Progress

from synthkd.dispatch.outcome import DispatchStats
from synthkd.pipeline import run_recipe
from synthkd.progress import (
    RichProgressFactory,
    RowsPerSecondColumn,
    add_step_bar,
    make_progress,
    retry_reasons,
)
from synthkd.recipe import load_recipe
from synthkd.testing.fake_openai import FakeOpenAIServer


def rate_shown(advance_at: list[tuple[float, int]], now: float) -> str:
    clock = {"now": 0.0}
    progress = Progress(get_time=lambda: clock["now"])
    task_id = progress.add_task("step", total=1000)
    for when, rows in advance_at:
        clock["now"] = when
        progress.advance(task_id, rows)
    clock["now"] = now
    task = progress.tasks[0]
    return str(RowsPerSecondColumn().render(task)).strip()


def test_a_step_answered_at_once_from_the_cache_shows_no_rate():
    # 1000 rows in a millisecond: rich's own speed would say a million rows/s.
    assert rate_shown([(0.0005, 500), (0.001, 500)], now=0.001) == "-/s"


def test_the_rate_is_rows_over_the_seconds_the_step_has_run():
    assert rate_shown([(1.0, 100), (2.0, 100), (4.0, 100)], now=4.0) == "75.0/s"


class Display:
    """The real step bars on a console that writes to a string, on a clock the test sets."""

    def __init__(self) -> None:
        self.now = 0.0
        self.console = Console(file=io.StringIO(), width=200, color_system=None)
        self.progress = make_progress(self.console, get_time=lambda: self.now)

    def lines(self) -> list[str]:
        """The bars as drawn now, one line per step."""
        with self.console.capture() as capture:
            self.console.print(self.progress.get_renderable())
        return capture.get().rstrip("\n").split("\n")


def test_time_left_is_shown_only_once_it_can_be_known():
    display = Display()
    add_step_bar(display.progress, "0:load", DispatchStats())
    bar = add_step_bar(display.progress, "1:label", DispatchStats())
    bar.set_total(100)
    display.now = 0.5
    bar.advance(10)
    bar.flush()
    young, no_total = display.lines()[1], display.lines()[0]
    assert "eta       -" in young  # half a second in: no rate, no time left
    assert "eta       -" in no_total and "0/?" in no_total

    display.now = 4.0
    bar.advance(30)  # 40 rows in 4 s: 10 rows/s, 60 rows left
    bar.flush()
    assert "eta 0:00:06" in display.lines()[1]

    display.now = 5.0
    bar.advance(60)
    bar.flush()
    done = display.lines()[1]
    assert "100/100" in done and "eta       -" in done  # nothing left to wait for


def test_a_step_done_short_of_its_total_stops_its_clock():
    display = Display()
    bar = add_step_bar(display.progress, "3:dialogue", DispatchStats())
    bar.set_total(80)
    display.now = 10.0
    bar.advance(60)  # rows that ended their dialogue early never come
    bar.finish()
    finished = display.lines()[0]
    display.now = 100.0  # the next steps run
    assert display.lines()[0] == finished
    assert "60/80" in finished and "6.0/s" in finished and "eta       -" in finished and "0:00:10" in finished


def test_retries_are_shown_by_reason_as_they_happen():
    display = Display()
    stats = DispatchStats()
    bar = add_step_bar(display.progress, "1:label", stats)
    bar.set_total(10)
    assert "retries" not in display.lines()[0]
    # As the dispatcher counts them (`Dispatcher._send`), with no row advancing the bar:
    stats.retries.update({"http_429": 2, "timeout": 1, "http_503": 1, "http_500": 1})
    stats.retries["http_429"] += 1
    stats.failed = 1
    assert display.lines()[0].rstrip().endswith("1 failed  retries: 3 rate-limit, 1 timeout, 2 server-error")


def test_retry_words():
    assert retry_reasons({}) == "" and retry_reasons({"http_429": 0}) == ""
    assert retry_reasons({"connection": 4, "http_408": 1, "malformed": 2, "engine_busy": 1}) == (
        "retries: 4 connection, 1 timeout, 2 malformed, 1 engine-busy"
    )


def test_a_bar_never_shows_more_done_than_its_total():
    display = Display()
    bar = add_step_bar(display.progress, "2:critique_revise", DispatchStats())
    bar.set_total(8)
    bar.advance(10)  # a step that advances past its total (what critique_revise once did)
    bar.flush()
    (line,) = display.lines()
    assert "8/8" in line and "10/8" not in line


def test_columns_keep_their_places_as_the_numbers_grow():
    display = Display()
    stats = DispatchStats()
    bar = add_step_bar(display.progress, "1:label", stats)
    add_step_bar(display.progress, "2:critique_revise", None)
    bar.set_total(5000)
    places = set()
    for second, rows, tokens, cost in [
        (0.2, 1, 40, 0.0001),
        (1.5, 9, 900, 0.004),
        (3.0, 90, 12_000, 0.06),
        (30.0, 900, 450_000, 1.5),
        (400.0, 4000, 9_000_000, 123.25),
    ]:
        display.now = second
        stats.prompt_tokens, stats.cost_usd = tokens, cost
        bar.advance(rows)
        bar.flush()
        stats.retries["http_429"] += 7  # the words at the end grow too
        first, second_bar = display.lines()
        # Where columns end or begin: "/s", the time left, the tokens, the cost's end.
        ends = [
            first.index("/s"),
            first.index("eta"),
            first.index(" tok"),
            re.search(r"\$[\d.]+", first).end(),
        ]
        places.add((tuple(ends), first.index("retries")))
        assert second_bar.index("/s") == ends[0] and second_bar.index("eta") == ends[1]
    assert len(places) == 1, places
    assert "5000/5000" in first and "9.0M" in first and "$123.2500" in first


# End to end: the fake server answers 429s and 503s, and the bars drawn at the end say so.


def test_a_run_against_a_server_that_refuses_shows_its_retries_by_reason(tmp_path: Path):
    script = [
        {"match": "^First", "status": 429, "code": "rate_limit_exceeded", "type": "requests", "times": 2},
        {"match": "^Second", "status": 503, "times": 1},
    ]
    prompts = ["First: name a river.", "Second: name a lake.", "Third: name a sea."]
    write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": prompt} for prompt in prompts])
    with FakeOpenAIServer(script=script) as server:
        path = write_recipe(
            tmp_path / "retry.yaml",
            {
                "name": "retry",
                "teacher": {"backend": "openai", "model": "fake-model", "base_url": server.base_url,
                            "api_key_env": None, "timeout": 10},
                "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
                "output": {"dir": str(tmp_path / "out")},
            },
        )  # fmt: skip
        console = Console(file=io.StringIO(), width=200, color_system=None)
        with RichProgressFactory(console) as factory:
            result = run_recipe(load_recipe(path), progress=factory)
    assert len(result.rows) == 3
    label_line = next(line for line in console.file.getvalue().splitlines() if "1:label" in line)
    assert "3/3" in label_line
    assert label_line.rstrip().endswith("retries: 2 rate-limit, 1 server-error")


def test_synthkd_run_on_a_terminal_shows_the_retries_then_a_line_while_the_card_and_report_are_written(
    tmp_path: Path,
):
    """The command as a user sees it: a terminal (rich told so by TTY_COMPATIBLE), a 429 retried."""
    script = [
        {"match": "^First", "status": 429, "code": "rate_limit_exceeded", "type": "requests", "times": 1}
    ]
    write_jsonl(
        tmp_path / "seeds.jsonl", [{"instruction": "First: name a river."}, {"instruction": "Second."}]
    )
    with FakeOpenAIServer(script=script) as server:
        path = write_recipe(
            tmp_path / "shown.yaml",
            {
                "name": "shown",
                "teacher": {"backend": "openai", "model": "fake-model", "base_url": server.base_url,
                            "api_key_env": None},
                "steps": [{"step": "load", "path": "seeds.jsonl"}, {"step": "label"}],
                "output": {"dir": str(tmp_path / "out")},
            },
        )  # fmt: skip
        env = {**os.environ, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "160",
               "SYNTHKD_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "synthkd.cli", "run", str(path)], env=env, capture_output=True, text=True
        )
    assert done.returncode == 0, done.stderr
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", done.stderr)  # the terminal's control codes
    assert "retries: 1 rate-limit" in shown
    assert re.search(r"1:label +━+ +2/2 .* eta +- ", shown)
    # The spinner's line while the card and report are written, then what was written and how long it took.
    assert "writing the dataset card and report.html..." in shown
    assert re.search(r"README\.md, report\.html -> \S+out \(\d+\.\d s\)", shown), shown[-500:]


def test_training_shows_its_steps_on_a_bar_and_prints_no_log_dicts(tmp_path: Path, capfd):
    from datasets import Dataset
    from tiny_model import build_tiny_model

    from synthkd.training.config import TrainConfig
    from synthkd.training.run import train_student

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {n} plus one?"},
                {"role": "assistant", "content": "Five."},
            ]
        }
        for n in range(8)
    ]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "dataset"))
    config = TrainConfig(
        student=str(build_tiny_model(tmp_path / "tiny")),
        args={"max_steps": 3, "per_device_train_batch_size": 4},
    )
    console = Console(file=io.StringIO(), width=200, color_system=None)
    with RichProgressFactory(console) as factory:
        result = train_student(
            config,
            tmp_path / "dataset",
            tmp_path,
            0,
            "t",
            evaluate=False,
            progress=factory.step("training", None),
        )
    assert len(result.train_losses) == 3
    printed = capfd.readouterr()
    assert "'loss'" not in printed.out + printed.err  # transformers printed {'loss': ..., 'grad_norm': ...}
    (line,) = console.file.getvalue().splitlines()
    assert re.match(r"training +━+ +3/3 ", line), line
