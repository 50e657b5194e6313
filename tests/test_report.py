"""`synthkd report`: one self-contained HTML file whose every chart a headless Chromium renders.

The basic report draws its charts as inline SVG (no script, tens of KB); only the instruction map,
on request, is a plotly figure with plotly.js inlined. Runs of three formats (SFT, DPO pairs, tool
calls: tests/report_runs.py) are rendered and their screenshots inspected: the samples show every
input and the pair side by side, in the DOM and in the pixels.
"""

from __future__ import annotations

import html
import json
import os
import random
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from helpers import write_jsonl
from png_pixels import read_png, share_of_colour
from publish_run import make_run
from report_runs import SFT_SEEDS, make_format_run

from synthkd.cli import main
from synthkd.output import write_run
from synthkd.publish import svg_charts as svg
from synthkd.publish.report import build_report, instruction_of, response_of, score_bins, write_report
from synthkd.publish.report_samples import DIALOGUE, run_format
from synthkd.publish.rundir import open_run

PLOTS = {"plot-funnel", "plot-lengths", "plot-scores", "plot-map", "plot-dedup", "plot-cost"}
BASIC_PLOTS = PLOTS - {"plot-map"}  # what a run writes by default (output.report: basic)
BASIC_LIMIT = 1_500_000  # bytes: the basic report is cheap to write, keep and send
PLOTLY_SCRIPT = re.compile(r"<script\b", re.IGNORECASE)
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
    """For each chart (an element with id plot-*) of a rendered DOM: its SVGs and the marks in them.

    The basic charts are inline SVG with `bar` rects; the map is plotly's (class js-plotly-plot on
    the div, `main-svg` SVGs, `trace` groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.plots: dict[str, dict[str, int]] = {}
        self._current: str | None = None
        self._tag = ""
        self._depth = 0  # nesting of the chart's own tag inside it

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if self._current is None:
            if (attributes.get("id") or "").startswith("plot-"):
                self._current, self._tag, self._depth = attributes["id"], tag, 1
                self.plots[self._current] = {
                    "plotly": int("js-plotly-plot" in classes),
                    "svg": 0,
                    "main_svg": 0,
                    "bars": 0,
                    "traces": 0,
                }
            return
        found = self.plots[self._current]
        if tag == self._tag:
            self._depth += 1
        if tag == "svg":
            found["svg"] += 1
            found["main_svg"] += "main-svg" in classes
        found["bars"] += tag == "rect" and "bar" in classes
        found["traces"] += "trace" in classes

    def handle_endtag(self, tag: str) -> None:
        if self._current is not None and tag == self._tag:
            self._depth -= 1
            if self._depth == 0:
                self._current = None


def chart_ids(page: str) -> set[str]:
    return set(re.findall(r'<(?:figure|div) id="(plot-[a-z]+)" class="(?:chart|plotly-graph-div)"', page))


def test_report_is_written_after_the_run_and_self_contained(run_dir: Path):
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert chart_ids(page) == BASIC_PLOTS
    assert "Instruction map" in page and "synthkd report RUN_DIR --map" in page  # says how to get it
    # Nothing to fetch when it is opened: no external script, style sheet or image.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", page)
    # The charts are inline SVG: no script at all, so no plotly.js (4.6 MB) either.
    assert not PLOTLY_SCRIPT.search(page) and "Plotly" not in page and len(page) < 100_000
    assert page.count('<svg class="chart-svg"') == 6  # funnel, two length panels, scores, dedup, cost
    # Every number the charts show is there as text too: the funnel's and the cost's tables.
    assert "<td>below_min_score 1</td>" in page and "Total estimated cost: $0.0002" in page
    # The dedup table shows the dropped row's own text beside the kept one's.
    assert "<th>its text</th>" in page and "<td>explain why the sea has two high tides a day</td>" in page


def test_every_plot_renders_in_headless_chromium(run_dir: Path, tmp_path: Path, capsys):
    page = run_dir / "report-full.html"  # with the instruction map: every chart there is
    assert main(["report", str(run_dir), "--map", "--output", str(page)]) == 0
    assert ", with plotly.js for the map)" in capsys.readouterr().err  # why it is megabytes
    dom = browse(page, tmp_path / "profile-dom", "--virtual-time-budget=20000", "--dump-dom").stdout
    scan = RenderedPlots()
    scan.feed(dom)
    assert set(scan.plots) == PLOTS
    for plot, found in scan.plots.items():
        if plot == "plot-map":  # drawn by plotly.js in the browser
            assert found["plotly"] and found["main_svg"] >= 1, f"{plot} was not drawn: {found}"
            assert found["traces"] >= 1, f"{plot} has no traces: {found}"
        else:
            assert found["svg"] >= 1 and found["bars"] >= 1, f"{plot} has no bars: {found}"
    # Screenshots of both reports, for a person to look at (CI keeps them).
    for html_name, png_name in (("report-full.html", "report.png"), ("report.html", "report-basic.png")):
        screenshot = run_dir / png_name
        browse(
            run_dir / html_name,
            tmp_path / f"profile-{png_name}",
            "--window-size=1300,4200",
            f"--screenshot={screenshot}",
        )
        data = screenshot.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000
    artifacts = os.environ.get("SYNTHKD_TEST_ARTIFACTS")  # CI keeps these (set by `make test`)
    if artifacts:
        target = Path(artifacts) / "report"
        target.mkdir(parents=True, exist_ok=True)
        names = (
            "report-full.html",
            "report.html",
            "report.png",
            "report-basic.png",
            "README.md",
            "manifest.json",
        )
        for name in names:
            shutil.copyfile(run_dir / name, target / name)


def test_report_command(run_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "again.html"
    assert main(["report", str(run_dir), "--output", str(out)]) == 0
    size = out.stat().st_size
    assert f"report -> {out} ({size / 1024:,.0f} KB)\n" in capsys.readouterr().err
    assert out.read_bytes() == (run_dir / "report.html").read_bytes()  # what the run wrote, again
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
    assert chart_ids(page) == PLOTS


# ---- a realistic run: hundreds of rows with long texts ------------------------------------------

VOCABULARY = (
    "the model answer question data training example step first then because however which "
    "explain describe function value list table query result error memory network language "
    "people city history science water energy light plant cell market price budget sleep "
    "recipe bread yeast dough heat time minute hour simple clear short long careful useful"
)
WORDS = VOCABULARY.split()
INJECTED = '<script>alert("row")</script><img src=x onerror=alert(1)>'  # model output is arbitrary


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def _realistic_rows(rng: random.Random, count: int) -> list[dict]:
    """Rows as the label and judge steps leave them, in the `messages` output format; lengths
    long-tailed as real answers are (median about 250 words, some over 2,000)."""
    rows = []
    for i in range(count):
        instruction = _sentence(rng, 3 + int(rng.lognormvariate(2.8, 0.6)))
        response = _sentence(rng, 10 + int(rng.lognormvariate(5.5, 0.7)))
        if i == 0:
            instruction, response = f"{INJECTED} {instruction}", f"{INJECTED} {response}"
        score = float(rng.choice((5, 6, 7, 7, 8, 8, 8, 9, 9, 10)))
        rows.append(
            {
                "id": INJECTED if i == 1 else f"row-{i}",
                "instruction": instruction,
                "response": response,
                "score": score,
                "justification": _sentence(rng, 20),
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": instruction},
                    {"role": "assistant", "content": response},
                ],
            }
        )
    return rows


def _realistic_steps(rng: random.Random, rows: list[dict]) -> list[dict]:
    """Steps as a label, embedding dedup, quality and judge run reports them, ending at `rows`."""
    kept = len(rows)
    judged_out, low, lang, dups, failed = kept // 12, kept // 30, kept // 40, kept // 15, kept // 50
    loaded = kept + judged_out + low + lang + dups + failed
    pairs = [
        {
            "id": f"dup-{i}",
            "duplicate_of": rows[i]["id"],
            "similarity": round(rng.uniform(0.92, 1.0), 4),
            "text": rows[i]["instruction"][:300],
            "duplicate_text": rows[i]["instruction"][:300],
        }
        for i in range(min(dups, 100))
    ]

    def step(index: int, name: str, rows_in: int, dropped: dict, failed: int = 0, tokens=(0, 0)) -> dict:
        out = rows_in - sum(dropped.values()) - failed if index else rows_in
        cost = (tokens[0] * 0.15 + tokens[1] * 0.6) / 1e6
        return {
            "index": index,
            "step": name,
            "rows_in": 0 if index == 0 else rows_in,
            "rows_out": out,
            "rows_failed": failed,
            "rows_dropped": dropped,
            "requests_sent": rows_in if tokens[0] else 0,
            "cache_hits": 0,
            "prompt_tokens": tokens[0],
            "completion_tokens": tokens[1],
            "cost_usd": cost,
            "details": {"duplicates": pairs} if name == "dedup" else {},
        }

    label_tokens = (loaded * 40, loaded * 330)
    after_dedup = loaded - failed - dups
    return [
        step(0, "load", loaded, {}),
        step(1, "label", loaded, {}, failed, label_tokens),
        step(2, "dedup", loaded - failed, {"duplicate_embedding": dups}),
        step(3, "quality", after_dedup, {"too_short": low, "language": lang}),
        step(
            4, "judge", after_dedup - low - lang, {"below_min_score": judged_out}, 0, (kept * 420, kept * 60)
        ),
    ]


def write_realistic_run(folder: Path, rows: int = 300, seed: int = 0) -> Path:
    """A finished run folder written by `output.write_run`, as the pipeline writes one."""
    rng = random.Random(seed)
    made = _realistic_rows(rng, rows)
    steps = _realistic_steps(rng, made)
    manifest = {
        "name": "realistic",
        "recipe": {"seed": seed, "output": {"format": "messages"}},
        "teachers": [{"backend": "openai", "model": "gpt-4o-mini"}],
        "rows": rows,
        "failures": steps[1]["rows_failed"],
        "cost_usd": sum(s["cost_usd"] for s in steps),
        "finished": "2025-01-01T00:00:00+00:00",
        "steps": steps,
    }
    write_run(folder, made, [], manifest)
    return folder


def test_the_basic_report_of_a_realistic_run_is_small_and_the_full_one_has_the_map(tmp_path: Path):
    run = write_realistic_run(tmp_path / "run", rows=300)
    assert (run / "data.jsonl").stat().st_size > 1_500_000  # the rows alone outweigh the limit
    basic = write_report(run).read_text(encoding="utf-8")  # what `output.report: basic` writes
    assert len(basic.encode()) < BASIC_LIMIT
    assert not PLOTLY_SCRIPT.search(basic) and "plotly" not in basic.lower()
    assert chart_ids(basic) == BASIC_PLOTS
    assert "300 instructions: median" in basic and "<td>too_short 10, language 7</td>" in basic
    assert "instructions (words)" in basic and "the last bar holds all responses of" in basic
    # Model output is text: escaped wherever it is shown (sample table, tooltips, dedup labels).
    assert INJECTED not in basic and "&lt;script&gt;alert(" in basic

    # The full report adds the map (and plotly.js). Fewer rows: t-SNE on 300 takes half a minute here.
    small = write_realistic_run(tmp_path / "small", rows=40)
    full = write_report(small, with_map=True).read_text(encoding="utf-8")  # `output.report: full`
    assert chart_ids(full) == PLOTS
    assert "Plotly.newPlot" in full and '<div id="plot-map" class="plotly-graph-div"' in full
    assert "40 instructions embedded, clustered (KMeans)" in full
    assert INJECTED not in full


# ---- the three formats, rendered: samples with their inputs, pairs side by side, tool calls -------

SCREEN = (1300, 2600)  # the window of the format screenshots: the funnel and the samples fit
WHITE_ENOUGH = 240  # a pixel whose every channel is at least this is page background


class SampleRows(HTMLParser):
    """The sample table of a rendered report: per `tr.sample`, its id, classes and each cell's text
    (and the text of its `pre` blocks), and the summary lines under the title."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.summary: list[str] = []
        self.sections: list[str] = []
        self._row: dict | None = None
        self._in_pre = False
        self._in_summary = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "section":
            self.sections.append(attributes.get("id") or "")
        if tag == "ul" and attributes.get("id") == "summary":
            self._in_summary = True
        if self._in_summary and tag == "li":
            self.summary.append("")
        if tag == "tr" and "sample" in classes:
            self._row = {"classes": classes, "cells": [], "pre": [], "badges": []}
        elif self._row is not None:
            if tag == "td":
                self._row["cells"].append("")
            self._in_pre = tag == "pre" or self._in_pre
            if "badge" in classes:
                self._row["badges"].append(classes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False
        if tag == "ul":
            self._in_summary = False
        if tag == "tr" and self._row is not None:
            self.rows[self._row["cells"][0].split()[0]] = self._row  # the first cell opens with the id
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._in_summary and self.summary:
            self.summary[-1] += data
        if self._row is None or not self._row["cells"]:
            return
        self._row["cells"][-1] += data + " "
        if self._in_pre:
            self._row["pre"].append(data)


@pytest.fixture(scope="module")
def format_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("formats")
    return {kind: make_format_run(base / kind, kind) for kind in ("sft", "dpo", "tools")}


def rendered(run: Path, profile: Path) -> SampleRows:
    dom = browse(run / "report.html", profile, "--dump-dom").stdout
    scan = SampleRows()
    scan.feed(dom)
    return scan


def screenshot(run: Path, profile: Path, name: str):
    """A screenshot of the run's report, kept for CI, decoded to its pixels."""
    path = run / name
    browse(run / "report.html", profile, f"--window-size={SCREEN[0]},{SCREEN[1]}", f"--screenshot={path}")
    artifacts = os.environ.get("SYNTHKD_TEST_ARTIFACTS")
    if artifacts:
        target = Path(artifacts) / "report"
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
        shutil.copyfile(run / "report.html", target / name.replace(".png", ".html"))
    pixels = read_png(path)
    assert pixels.shape[:2] == (SCREEN[1], SCREEN[0])
    return pixels


def assert_page_drawn(pixels) -> None:
    """Not blank, and the funnel at the top drawn: bars of the chart's blue in the first 1000 px."""
    ink = (pixels.min(axis=-1) < WHITE_ENOUGH).mean()
    assert ink > 0.05, f"only {ink:.1%} of the page is not white"
    assert share_of_colour(pixels[:1000], svg.BLUE) > 0.05, "no funnel bars at the top of the page"


def vertical_runs(mask) -> int:
    """The longest run of True down any one column of a 2-D mask."""
    longest = 0
    for column in mask.T:
        edges = np.diff(np.concatenate(([0], column.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = max(longest, int((ends - starts).max(initial=0)))
    return longest


def test_sft_report_shows_every_input_and_flags_the_truncated_answer(format_runs, tmp_path: Path):
    run = format_runs["sft"]
    page = rendered(run, tmp_path / "dom")
    assert page.sections[:2] == ["funnel", "sample"]  # the funnel first, the rows next
    assert set(page.rows) == {row["id"] for row in SFT_SEEDS}
    email = page.rows["email"]["cells"]
    # The instruction, its input (the email it is about) and the system prompt, beside the answer.
    assert "Suggest a title for the following email:" in email[1] and "quarterly review moves" in email[1]
    assert "You are a concise assistant." in email[1]
    assert "Quarterly review moved to Friday 10:00" in email[2] and "score 9" in email[0]
    assert page.rows["poem"]["badges"] == [["badge", "truncated"]]
    assert "truncated" in page.rows["poem"]["classes"] and not page.rows["email"]["badges"]
    assert any(line.startswith("1 truncated (finish_reason length") for line in page.summary)

    pixels = screenshot(run, tmp_path / "shot", "report-sft.png")
    assert_page_drawn(pixels)
    # The truncated row's marker: a vermillion bar down the left edge of its first cell (the only
    # vermillion that tall in the first column: the funnel legend's swatch is 12 px).
    left = pixels[:, :220]
    marker = vertical_runs(np.all(np.abs(left.astype(int) - [0xD5, 0x5E, 0x00]) <= 6, axis=-1))
    assert marker >= 30, f"no truncated-row marker drawn (tallest vermillion run {marker} px)"


def test_dpo_report_shows_chosen_and_rejected_side_by_side(format_runs, tmp_path: Path):
    run = format_runs["dpo"]
    page = rendered(run, tmp_path / "dom")
    tides = page.rows["tides"]["cells"]  # one table row: prompt, chosen, rejected
    assert "Explain tides." in tides[1]
    assert "chosen score 8" in tides[2] and "Answer: Explain tides." in tides[2]
    assert "rejected score 3" in tides[3] and "Weak student: the moon, maybe." in tides[3]
    wind = page.rows["wind"]["cells"]  # here the student's answer won
    assert "Strong student" in wind[2] and "Answer: Explain wind." in wind[3]
    html_text = (run / "report.html").read_text(encoding="utf-8")
    # One histogram per score column, not overlaid.
    scores = html_text[html_text.index('<section id="scores">') :]
    scores = scores[: scores.index("</section>")]
    assert scores.count('<svg class="chart-svg"') == 2
    assert (
        'id="plot-scores-chosen_score-title"' in scores and 'id="plot-scores-rejected_score-title"' in scores
    )
    assert "chosen answers (words)" in html_text and "rejected answers (words)" in html_text

    pixels = screenshot(run, tmp_path / "shot", "report-dpo.png")
    assert_page_drawn(pixels)
    # In the picture too: the chosen cells' green and the rejected cells' red tints share their
    # lines of pixels (the same table rows), chosen on the left.
    chosen = np.all(pixels == [0xF3, 0xFA, 0xF6], axis=-1)
    rejected = np.all(pixels == [0xFD, 0xF4, 0xEF], axis=-1)
    chosen_lines, rejected_lines = chosen.sum(axis=1) > 50, rejected.sum(axis=1) > 50
    assert chosen_lines.sum() > 60, "no chosen cells drawn"
    assert (chosen_lines & rejected_lines).sum() >= 0.9 * chosen_lines.sum()
    assert np.flatnonzero(chosen.any(axis=0)).mean() < np.flatnonzero(rejected.any(axis=0)).mean()


def test_tool_call_report_shows_the_tools_offered_and_the_calls_made(format_runs, tmp_path: Path):
    run = format_runs["tools"]
    page = rendered(run, tmp_path / "dom")
    weather = page.rows["weather"]
    offered, talk = weather["cells"][1], weather["cells"][2]
    assert "What's the weather in Oslo right now, in celsius?" in offered
    for tool in json.loads((run.parent / "tools.json").read_text()):
        assert tool["function"]["name"] in offered
    # The call made, its arguments pretty-printed (one per line), the tool's result and the answer.
    assert "get_weather" in talk and "It is 4 °C in Oslo." in talk
    assert '{\n  "city": "Oslo",\n  "unit": "celsius"\n}' in weather["pre"]
    money = page.rows["money"]
    assert '"from_currency": "EUR"' in "".join(money["pre"]) and "2912.5" in money["cells"][2]

    assert_page_drawn(screenshot(run, tmp_path / "shot", "report-tools.png"))


def test_the_basic_reports_are_small(format_runs):
    for run in format_runs.values():
        page = (run / "report.html").read_text(encoding="utf-8")
        assert len(page.encode()) < 300_000 and not PLOTLY_SCRIPT.search(page)


def test_histograms_have_sensible_bins():
    # Lengths: a handful of rows over a narrow range still gets ten one-word bins around them.
    narrow = svg.histogram_bins([5, 6, 7, 7, 8])
    assert [b.low for b in narrow] == list(range(2, 12)) and [b.count for b in narrow][3:7] == [1, 1, 2, 1]
    # Wide and many: between 10 and 40 round-width bins, every value counted once.
    rng = random.Random(0)
    for values in ([rng.randint(20, 900) for _ in range(500)], [rng.randint(1, 60) for _ in range(12)]):
        bins = svg.histogram_bins(values)
        widths = {b.high - b.low for b in bins if not b.overflow}
        assert 10 <= len(bins) <= 41 and len(widths) == 1 and sum(b.count for b in bins) == len(values)
    # Scores: a judge's whole scores get one bar per score over 1..10, gaps included.
    labels, counts = score_bins([7.0, 7.0, 9.0, 4.0])
    assert labels == [str(n) for n in range(1, 11)] and counts == [0, 0, 0, 1, 0, 0, 2, 0, 1, 0]
    labels, counts = score_bins([rng.uniform(0, 1) for _ in range(200)])  # a reward model's scores
    assert 10 <= len(labels) <= 40 and sum(counts) == 200


def planted_run(folder: Path, rows: list[dict]) -> Path:
    steps = [{"index": 0, "step": "load", "rows_in": 0, "rows_out": len(rows), "rows_dropped": {}}]
    manifest = {"name": "planted", "recipe": {"seed": 1}, "rows": len(rows), "steps": steps}
    write_run(folder, rows, [], manifest)
    return folder


def test_dialogues_show_every_turn_and_long_texts_are_clipped_with_the_whole_behind_details(tmp_path: Path):
    long_answer = "word " * 400 + "THE-END"
    turns = [
        {"role": "system", "content": "You are Ada, a patient tutor."},
        {"role": "user", "content": "What is a prime?"},
        {"role": "assistant", "content": "A number with exactly two divisors."},
        {"role": "user", "content": "Is 1 prime?"},
        {"role": "assistant", "content": long_answer},
    ]
    row = {"id": "d1", "persona": "a curious pupil", "messages": turns, "turns": 2, "response": long_answer}
    run = planted_run(tmp_path / "run", [row])
    page, _ = build_report(open_run(run))
    assert run_format([row]) == DIALOGUE and "dialogues (multi-turn messages)" in page
    sample = page[page.index('<table class="samples dialogue">') :]
    sample = sample[: sample.index("</table>")]
    for turn in turns[:4]:
        assert html.escape(turn["content"], quote=True) in sample
    assert "a curious pupil" in sample  # the persona the dialogue was made from
    # The long answer: clipped in view, the whole of it behind a <details>, no script needed.
    assert "show all 2,007 characters" in sample and sample.count("THE-END") == 1
    assert "<script" not in page


def test_pairs_in_the_standard_format_show_their_texts_and_a_nan_score_is_left_out(tmp_path: Path):
    # A DPO set loaded as plain strings (TRL's standard format), one judge score unreadable (NaN).
    rows = [
        {
            "id": "p1",
            "prompt": "Why is the sky blue?",
            "chosen": "Rayleigh scattering.",
            "rejected": "Paint.",
            "chosen_score": 9,
            "rejected_score": 2,
        },
        {
            "id": "p2",
            "prompt": "Name a prime.",
            "chosen": "Seven.",
            "rejected": "Nine.",
            "chosen_score": float("nan"),
            "rejected_score": 1,
        },
    ]
    page, _ = build_report(open_run(planted_run(tmp_path / "run", rows)))
    sample = page[page.index('<table class="samples preference">') :]
    sample = sample[: sample.index("</table>")]
    for row in rows:
        for column in ("prompt", "chosen", "rejected"):
            assert html.escape(row[column]) in sample, f"{row['id']}: {column} not shown"
    scores = page[page.index('<section id="scores">') :]
    scores = scores[: scores.index("</section>")]
    assert "1 rows, mean 9.00" in scores and "2 rows, mean 1.50" in scores  # the NaN is not counted
