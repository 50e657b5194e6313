"""`synthkd report`: one self-contained HTML file whose every plot a headless Chromium renders."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import write_jsonl
from publish_run import make_run

from synthkd.cli import main
from synthkd.publish.report import build_report, instruction_of, response_of
from synthkd.publish.rundir import open_run

PLOTS = {"plot-funnel", "plot-lengths", "plot-scores", "plot-map", "plot-dedup", "plot-cost"}
BASIC_PLOTS = PLOTS - {"plot-map"}  # what a run writes by default (output.report: basic)
# Headless Chromium on a machine without a network or a sandbox-capable kernel set-up: these flags
# keep it from trying to reach Google's services at start and from needing a GPU or namespaces.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("report"))


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "Chromium is needed for the report test: `make test` installs it (apt-get install chromium)"
        )
    return found


def browse(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )


class RenderedPlots(HTMLParser):
    """For each plot div (id plot-*) of a rendered DOM: did plotly draw an SVG with traces in it?"""

    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, dict[str, int]] = {}
        self._current: str | None = None
        self._depth = 0  # div nesting inside the current plot div

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if self._current is None:
            if tag == "div" and (attributes.get("id") or "").startswith("plot-"):
                self._current, self._depth = attributes["id"], 1
                self.plots[self._current] = {
                    "plotly": int("js-plotly-plot" in classes),
                    "svg": 0,
                    "traces": 0,
                }
            return
        found = self.plots[self._current]
        if tag == "div":
            self._depth += 1
        if tag == "svg" and "main-svg" in classes:
            found["svg"] += 1
        if "trace" in classes:
            found["traces"] += 1

    def handle_endtag(self, tag: str) -> None:
        if self._current is not None and tag == "div":
            self._depth -= 1
            if self._depth == 0:
                self._current = None


def test_report_is_written_after_the_run_and_self_contained(run_dir: Path):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'<div id="(plot-[a-z]+)" class="plotly-graph-div"', page))
    assert ids == BASIC_PLOTS
    assert "Instruction map" in page and "synthkd report RUN_DIR --map" in page  # says how to get it
    # Nothing to fetch when it is opened: no external script, style sheet or image.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", page)
    assert "Plotly.newPlot" in page and len(page) > 3_000_000  # plotly.js is inlined
    # The dedup table shows the dropped row's own text beside the kept one's.
    assert "<th>its text</th>" in page and "<td>explain why the sea has two high tides a day</td>" in page


def test_every_plot_renders_in_headless_chromium(run_dir: Path, tmp_path: Path):
    page = run_dir / "report-full.html"  # with the instruction map: every plot there is
    assert main(["report", str(run_dir), "--map", "--output", str(page)]) == 0
    dom = browse(page, tmp_path / "profile-dom", "--virtual-time-budget=20000", "--dump-dom").stdout
    scan = RenderedPlots()
    scan.feed(dom)
    assert set(scan.plots) == PLOTS
    for plot, found in scan.plots.items():
        assert found["plotly"] and found["svg"] >= 1, f"{plot} was not drawn: {found}"
        assert found["traces"] >= 1, f"{plot} has no traces: {found}"
    screenshot = run_dir / "report.png"
    browse(page, tmp_path / "profile-shot", "--window-size=1300,4200", f"--screenshot={screenshot}")
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 20_000
    artifacts = os.environ.get("SYNTHKD_TEST_ARTIFACTS")  # CI keeps these (set by `make test`)
    if artifacts:
        target = Path(artifacts) / "report"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("report-full.html", "report.png", "README.md", "manifest.json"):
            shutil.copyfile(run_dir / name, target / name)


def test_report_command(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "again.html"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    assert out.stat().st_size > 3_000_000
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_a_small_run_without_judge_or_dedup_says_so(tmp_path: Path):
    manifest = {
        "name": "tiny",
        "recipe": {"seed": 1},
        "rows": 2,
        "cost_usd": None,
        "steps": [
            {"index": 0, "step": "load", "rows_in": 0, "rows_out": 2, "rows_dropped": {}, "cost_usd": 0.0},
            {"index": 1, "step": "label", "rows_in": 2, "rows_out": 2, "rows_dropped": {}, "cost_usd": None},
        ],
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    write_jsonl(tmp_path / "data.jsonl", [{"id": "a", "instruction": "Hi", "response": "Hello"}] * 2)
    page, plots = build_report(open_run(tmp_path), with_map=True)
    assert plots == ["plot-funnel", "plot-lengths", "plot-cost"]
    assert "No judge scores" in page and "fewer than 3 instructions" in page and "No duplicate" in page
    assert "Total estimated cost: unknown" in page


def test_instruction_and_response_from_messages():
    row = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "question"},
            {"role": "assistant", "content": "answer"},
        ]
    }
    assert (instruction_of(row), response_of(row)) == ("question", "answer")
    preference = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "c"}],
    }
    assert (instruction_of(preference), response_of(preference)) == ("q", "c")


@pytest.mark.slow
def test_output_report_none_and_full(tmp_path: Path):
    """`output.report: none` writes no report; `full` draws the instruction map after the run."""
    none = make_run(tmp_path / "none", output={"report": "none"})
    assert not (none / "report.html").exists() and (none / "README.md").is_file()
    full = make_run(tmp_path / "full", output={"report": "full"})
    page = (full / "report.html").read_text(encoding="utf-8")
    assert set(re.findall(r'<div id="(plot-[a-z]+)" class="plotly-graph-div"', page)) == PLOTS
