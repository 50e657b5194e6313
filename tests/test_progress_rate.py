"""The rows/s column of the step bars: a rate over the step so far, none for a step under a second."""

from __future__ import annotations

from rich.progress import Progress

from synthkd.progress import RowsPerSecondColumn


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
    assert rate_shown([(0.0005, 500), (0.001, 500)], now=0.001) == "- rows/s"


def test_the_rate_is_rows_over_the_seconds_the_step_has_run():
    assert rate_shown([(1.0, 100), (2.0, 100), (4.0, 100)], now=4.0) == "75.0 rows/s"
