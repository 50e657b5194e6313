"""`synthkd report`: one self-contained HTML file whose every chart a headless Chromium renders.

The basic report draws its charts as inline SVG (no script, well under 1.5 MB); only the instruction
map, on request, is a plotly figure with plotly.js inlined.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import write_jsonl
from publish_run import make_run

from synthkd.cli import main
from synthkd.output import write_run
from synthkd.publish.report import build_report, instruction_of, response_of, write_report
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


def test_every_plot_renders_in_headless_chromium(run_dir: Path, tmp_path: Path):
    page = run_dir / "report-full.html"  # with the instruction map: every chart there is
    assert main(["report", str(run_dir), "--map", "--output", str(page)]) == 0
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
