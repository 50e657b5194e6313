"""`report.html`: one self-contained page with charts of a run, for a look before training on it.

The basic report (the default after every run) is cheap: well under a second to write and tens
of KB (under 100 KB for 300 rows of long answers), whatever the run's size. It opens with a summary
(rows, the format, truncated answers, failures), the funnel, then a sample of rows shown in the
run's format with every input column (`report_samples`). Its charts (funnel, lengths, a histogram
per score column, dedup pairs, tokens and cost) are inline SVG drawn in Python (`svg_charts`), with
no script, so the file opens anywhere without a network; their numbers are in tables and tooltips
too. The instruction map is drawn on
request (`with_map`: `output.report: full`, `synthkd report --map`): it embeds the instructions
(reusing cached embeddings), which takes tens of seconds, and it is a plotly figure, so only then is
plotly.js (about 4.6 MB) inlined. Everything comes from the run folder: the manifest (funnel, tokens,
cost, dedup pairs) and data.jsonl (rows).

plotly and scikit-learn come with the `report` extra, which only the instruction map needs: without
them a map asked for is a `MissingExtraError` (`synthkd run` then writes the basic report and a
one-line note); the map also needs the `curate` extra's encoder, and without it the page says so
in its place.
"""

from __future__ import annotations

import html
import json
import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthkd.atomic import atomic_write_text
from synthkd.curate.embeddings import EMBEDDED_ENCODER, encoder_modules, encoder_spec
from synthkd.errors import MissingExtraError
from synthkd.extras import check_installed, require
from synthkd.messages import TEACHER_PROMPT
from synthkd.publish import report_samples as samples
from synthkd.publish import svg_charts as svg
from synthkd.publish.loop_table import loop_table, read_loop
from synthkd.publish.rundir import RunDir, open_run
from synthkd.text import clip

REPORT_FILE = "report.html"
EXPERIMENT_DIR = "experiment"  # `synthkd experiment` writes results.json and kl.svg here
MAP_PURPOSE = "the report's instruction map"
MAP_MAX_ROWS = 2000  # the embedding map samples this many rows at most: t-SNE grows as n log n
SAMPLE_ROWS = 10
TOP_PAIRS = 20
SCORE_COLUMNS = ("score", "chosen_score", "rejected_score")


# ---- reading rows --------------------------------------------------------------------------------


def _content(messages: Any, role: str, last: bool = False) -> str | None:
    if not isinstance(messages, list):
        return None
    found = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == role]
    found = [text for text in found if isinstance(text, str)]
    return (found[-1] if last else found[0]) if found else None


def instruction_of(row: dict[str, Any]) -> str | None:
    """The user's request: `instruction`, else the first user message of messages or prompt."""
    if isinstance(row.get("instruction"), str):
        return row["instruction"]
    for column in ("messages", "prompt"):
        text = _content(row.get(column), "user")
        if text is not None:
            return text
    text = row.get("prompt", row.get(TEACHER_PROMPT))
    return text if isinstance(text, str) else None


def response_of(row: dict[str, Any]) -> str | None:
    """The teacher's answer: `response`, else the last assistant message, else the chosen answer."""
    if isinstance(row.get("response"), str):
        return row["response"]
    for column in ("messages", "chosen"):
        text = _content(row.get(column), "assistant", last=True)
        if text is not None:
            return text
    return None


def _words(text: str | None) -> int | None:
    return None if text is None else len(text.split())


# ---- the instruction map -------------------------------------------------------------------------


@dataclass
class InstructionMap:
    xy: list[tuple[float, float]]
    labels: list[int]
    texts: list[str]
    top_words: dict[int, list[str]]
    method: str


def instruction_map(texts: list[str], seed: int = 42, model: str = "embedded") -> InstructionMap | None:
    """Embed, cluster (KMeans on the embeddings) and project to 2-D (t-SNE, PCA for tiny sets)."""
    import numpy as np

    from synthkd.curate.embeddings import EmbeddingCache, embed

    if len(texts) < 3:
        return None
    check_installed(encoder_modules(model), "curate", MAP_PURPOSE)
    cluster = require("sklearn.cluster", "report", MAP_PURPOSE)
    decomposition = require("sklearn.decomposition", "report", MAP_PURPOSE)
    manifold = require("sklearn.manifold", "report", MAP_PURPOSE)
    if len(texts) > MAP_MAX_ROWS:
        texts = random.Random(seed).sample(texts, MAP_MAX_ROWS)
    cache = EmbeddingCache()
    try:
        vectors, _ = embed(texts, model=model, cache=cache)
    finally:
        cache.close()
    n = len(texts)
    clusters = 1 if n < 4 else min(8, max(2, round((n / 2) ** 0.5)))
    labels = (
        cluster.KMeans(clusters, n_init=4, random_state=seed).fit_predict(vectors)
        if clusters > 1
        else [0] * n
    )
    if n <= 5:
        xy, method = decomposition.PCA(2, random_state=seed).fit_transform(vectors), "PCA"
    else:
        reduced = (
            decomposition.PCA(min(50, n - 1), random_state=seed).fit_transform(vectors) if n > 50 else vectors
        )
        perplexity = min(30.0, max(2.0, (n - 1) / 3))
        tsne = manifold.TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
        xy, method = tsne.fit_transform(np.asarray(reduced)), "t-SNE"
    labels = [int(label) for label in labels]
    return InstructionMap(
        [(float(x), float(y)) for x, y in xy], labels, texts, _top_words(texts, labels), method
    )


def _top_words(texts: list[str], labels: list[int], count: int = 5) -> dict[int, list[str]]:
    """Each cluster's most distinctive words: TF-IDF with one document per cluster."""
    feature_text = require("sklearn.feature_extraction.text", "report", MAP_PURPOSE)

    clusters = sorted(set(labels))
    documents = [" ".join(t for t, label in zip(texts, labels, strict=True) if label == c) for c in clusters]
    try:
        vectorizer = feature_text.TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{3,}\b")
        weights = vectorizer.fit_transform(documents).toarray()
    except ValueError:  # nothing but stop words
        return {c: [] for c in clusters}
    vocabulary = vectorizer.get_feature_names_out()
    return {
        c: [str(vocabulary[i]) for i in row.argsort()[::-1][:count] if row[i] > 0]
        for c, row in zip(clusters, weights, strict=True)
    }


# ---- the basic charts (inline SVG) ---------------------------------------------------------------


def _step_name(step: dict[str, Any]) -> str:
    return f"{step['index']}:{step['step']}"


def _count(value: Any) -> Any:
    """A count with thousands separators (12,345); anything else as it is."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value


def _cost_text(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.4f}"


def funnel_chart(steps: list[dict[str, Any]]) -> str:
    """Rows kept, dropped (one colour per reason) and failed per step, stacked; a table below."""
    reasons = sorted({reason for s in steps for reason in (s.get("rows_dropped") or {})})
    colors = [svg.EXTRA_COLORS[i % len(svg.EXTRA_COLORS)] for i in range(len(reasons))]
    series = [svg.Series("kept", [s.get("rows_out") or 0 for s in steps], svg.BLUE)]
    series += [
        svg.Series(
            f"dropped: {reason}", [(s.get("rows_dropped") or {}).get(reason) or 0 for s in steps], color
        )
        for reason, color in zip(reasons, colors, strict=True)
    ]
    series.append(svg.Series("failed", [s.get("rows_failed") or 0 for s in steps], svg.VERMILLION))
    title = "Funnel: rows kept, dropped (by reason) and failed per step"
    chart = svg.bar_chart(
        "plot-funnel-svg", title, [_step_name(s) for s in steps], series, stacked=True, y_label="rows"
    )
    return svg.legend(series) + chart


def _funnel_table(steps: list[dict[str, Any]]) -> str:
    rows = [
        [
            _step_name(s),
            _count(s.get("rows_in", 0)),
            _count(s.get("rows_out", 0)),
            ", ".join(f"{reason} {_count(n)}" for reason, n in (s.get("rows_dropped") or {}).items()) or "-",
            _count(s.get("rows_failed", 0)),
        ]
        for s in steps
    ]
    return _table(["step", "rows in", "kept", "dropped (reason: rows)", "failed"], rows)


def _length_panel(rows: list[dict[str, Any]], getter: Any, noun: str, color: str) -> str:
    lengths = [n for n in (_words(getter(row)) for row in rows) if n is not None]
    title = f"{noun} (words)"
    if not lengths:
        return f'<div class="panel"><h3>{html.escape(title)}</h3><p class="note">No {noun} found.</p></div>'
    bins = svg.histogram_bins(lengths)
    chart = svg.histogram(
        f"plot-lengths-{noun.replace(' ', '-')}", f"Lengths of {noun} in words", bins, color, unit="words"
    )
    ordered = sorted(lengths)
    summary = (
        f"{len(ordered):,} {noun}: median {svg.percentile(ordered, 0.5):,} words, "
        f"90th percentile {svg.percentile(ordered, 0.9):,}, longest {ordered[-1]:,}"
    )
    if bins[-1].overflow:  # a long tail, gathered so it does not flatten the rest
        last = bins[-1]
        summary += f"; the last bar holds all {noun} of {svg.bin_text(last, 'words')} ({last.count:,})"
    return (
        f'<div class="panel"><h3>{html.escape(title)}</h3>{chart}'
        f'<p class="note">{html.escape(summary)}</p></div>'
    )


def _rejected_of(row: dict[str, Any]) -> str | None:
    return _content(row.get("rejected"), "assistant", last=True)


def lengths_chart(rows: list[dict[str, Any]], fmt: str = samples.SFT) -> str:
    """Histograms of instruction and response lengths in words (of prompts, chosen and rejected
    answers for DPO pairs), side by side, with their medians."""
    if fmt == samples.PREFERENCE:
        panels = [
            _length_panel(rows, instruction_of, "prompts", svg.BLUE),
            _length_panel(rows, response_of, "chosen answers", svg.GREEN),
            _length_panel(rows, _rejected_of, "rejected answers", svg.VERMILLION),
        ]
    else:
        panels = [
            _length_panel(rows, instruction_of, "instructions", svg.BLUE),
            _length_panel(rows, response_of, "responses", svg.VERMILLION),
        ]
    return '<div class="panels">' + "".join(panels) + "</div>"


def _scores_by_column(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    found = {
        # A judge's NaN (json.loads reads it) or infinity has no place on an axis: left out.
        column: [
            row[column]
            for row in rows
            if isinstance(row.get(column), int | float) and math.isfinite(row[column])
        ]
        for column in SCORE_COLUMNS
    }
    return {column: values for column, values in found.items() if values}


def score_bins(values: list[float]) -> tuple[list[str], list[int]]:
    """Category labels and counts. Judges mostly give whole scores: one bar per score then, gaps
    included (over 1..10 for scores within it, a judge's usual scale); otherwise `bin_count` bins
    of a round width."""
    low, high = min(values), max(values)
    if all(float(v).is_integer() for v in values) and high - low <= 40:
        first, last = (min(int(low), 1), 10) if low >= 0 and high <= 10 else (int(low), int(high))
        counts = [0] * (last - first + 1)
        for value in values:
            counts[int(value) - first] += 1
        return [svg.count_text(v) for v in range(first, last + 1)], counts
    width = svg.nice_step(high - low, svg.bin_count(sorted(values)), whole=False)
    start = math.floor(low / width) * width
    count = int((high - start) // width) + 1
    counts = [0] * count
    for value in values:
        counts[min(count - 1, int((value - start) // width))] += 1
    return [f"{start + i * width:g}–{start + (i + 1) * width:g}" for i in range(count)], counts


SCORE_COLORS = {"score": svg.BLUE, "chosen_score": svg.GREEN, "rejected_score": svg.VERMILLION}


def scores_chart(rows: list[dict[str, Any]]) -> str | None:
    """A histogram per score column (score, chosen_score, rejected_score), side by side, each with
    its count, mean and median; None without scores."""
    found = _scores_by_column(rows)
    if not found:
        return None
    panels = []
    for column, values in found.items():
        labels, counts = score_bins(values)
        chart = svg.bar_chart(
            f"plot-scores-{column}",
            f"{column}: rows per score",
            labels,
            [svg.Series(column, counts, SCORE_COLORS[column])],
            stacked=False,
            y_label="rows",
            x_label=column,
            width=svg.WIDTH / 2,
            height=svg.HEIGHT * 0.8,
        )
        summary = (
            f"{len(values):,} rows, mean {statistics.fmean(values):.2f}, median {statistics.median(values):g}"
        )
        panels.append(
            f'<div class="panel"><h3>{html.escape(column)}</h3>{chart}'
            f'<p class="note">{html.escape(summary)}</p></div>'
        )
    # `small`: a lone score chart keeps a panel's width instead of filling the page.
    return '<div class="panels small">' + "".join(panels) + "</div>"


def dedup_pairs(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every dropped duplicate the manifest lists, most similar first."""
    pairs = []
    for step in steps:
        for item in (step.get("details") or {}).get("duplicates") or []:
            pairs.append({"step": _step_name(step), **item})
    return sorted(pairs, key=lambda p: -float(p.get("similarity") or 0))


def pairs_chart(pairs: list[dict[str, Any]]) -> str:
    """The most similar dropped pairs, most similar at the top, each with the step that dropped it."""
    shown = pairs[:TOP_PAIRS]
    return svg.horizontal_bar_chart(
        "plot-dedup-svg",
        "Most similar dropped pairs (dedup)",
        [f"{p['id']} ~ {p.get('duplicate_of')}" for p in shown],
        [float(p.get("similarity") or 0) for p in shown],
        [f"{float(p.get('similarity') or 0):.3f} ({p['step']})" for p in shown],
        color=svg.BLUE,
        x_label="similarity",
    )


def cost_chart(steps: list[dict[str, Any]]) -> str:
    """Prompt and completion tokens per step, stacked, with the total and estimated cost above."""
    series = [
        svg.Series("prompt tokens", [s.get("prompt_tokens") or 0 for s in steps], svg.BLUE),
        svg.Series("completion tokens", [s.get("completion_tokens") or 0 for s in steps], svg.ORANGE),
    ]
    above = []
    for step in steps:
        tokens = (step.get("prompt_tokens") or 0) + (step.get("completion_tokens") or 0)
        above.append([f"{tokens:,} tokens", _cost_text(step.get("cost_usd"))] if tokens else [])
    title = "Tokens per step, with the estimated cost"
    names = [_step_name(s) for s in steps]
    chart = svg.bar_chart(
        "plot-cost-svg", title, names, series, stacked=True, y_label="tokens", top_labels=above
    )
    return svg.legend(series) + chart


# ---- the instruction map (plotly, on request) ----------------------------------------------------

# Marker shapes besides colours, so clusters are told apart without colour (KMeans makes 8 at most).
MAP_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "triangle-down")
MAP_COLORS = [svg.BLUE, svg.ORANGE, svg.GREEN, svg.VERMILLION, svg.PURPLE, svg.SKY, svg.YELLOW, svg.GREY]


def map_figure(found: InstructionMap):
    import plotly.graph_objects as go

    fig = go.Figure()
    for cluster in sorted(set(found.labels)):
        points = [i for i, label in enumerate(found.labels) if label == cluster]
        words = ", ".join(found.top_words.get(cluster, [])) or "-"
        fig.add_trace(
            go.Scatter(
                x=[found.xy[i][0] for i in points],
                y=[found.xy[i][1] for i in points],
                mode="markers",
                marker={
                    "size": 8 if len(found.texts) > 300 else 11,
                    "symbol": MAP_SYMBOLS[cluster % len(MAP_SYMBOLS)],
                },
                name=f"{cluster}: {words}",
                text=[html.escape(found.texts[i][:160]) for i in points],
                hovertemplate="%{text}<extra>cluster " + str(cluster) + "</extra>",
            )
        )
    fig.update_layout(
        template="plotly_white",
        height=560,
        margin={"t": 40, "b": 30},
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False},
        legend={"title": "cluster: top words"},
        colorway=MAP_COLORS,
    )
    return fig


MAP_NOT_ASKED = (
    "not drawn: it embeds every instruction, which takes tens of seconds; "
    "`synthkd report RUN_DIR --map`, or `output.report: full` in the recipe, draws it"
)


def _instruction_map(texts: list[str], seed: int, model: str) -> tuple[InstructionMap | None, str]:
    """The map, or None and why there is none: the map is a view, so a missing extra or encoder
    must not cost the whole report."""
    try:
        require("plotly.io", "report", MAP_PURPOSE)  # before embedding: no work for a map never drawn
        found = instruction_map(texts, seed, model)
    except MissingExtraError as exc:  # a lighter install: the rest of the report stands
        return None, f"no instruction map: {exc}"
    except Exception as exc:
        return None, f"the instruction map could not be drawn: {exc}"
    return found, "fewer than 3 instructions: no map"


def _map_html(found: InstructionMap) -> str:
    import plotly.io as pio

    config = {"displaylogo": False, "responsive": True}
    return pio.to_html(
        map_figure(found), full_html=False, include_plotlyjs=False, div_id="plot-map", config=config
    )


# ---- the page ------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any, limit: int = 400) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return clip(text, limit)


@dataclass
class _Page:
    """The sections as they are added, and the ids of their charts."""

    sections: list[tuple[str, str, str]]  # (id, heading, body)
    plot_ids: list[str]

    @property
    def needs_plotly(self) -> bool:
        """The instruction map is the one plotly figure."""
        return "plot-map" in self.plot_ids

    def chart(self, name: str, heading: str, figure: str, after: str = "", *, has_id: bool = False) -> None:
        """A section with a chart; `has_id`: the figure's own element is `plot-<name>` already."""
        self.plot_ids.append(f"plot-{name}")
        attribute = "" if has_id else f' id="plot-{name}"'
        body = f'<figure{attribute} class="chart">{figure}</figure>{after}'
        self.sections.append((name, heading, body))

    def text(self, name: str, heading: str, body: str) -> None:
        self.sections.append((name, heading, body))


def build_report(
    run: RunDir, *, with_map: bool = False, map_model: str = "embedded"
) -> tuple[str, list[str]]:
    """The page's HTML and the ids of its charts (what a browser must render).

    The charts are inline SVG drawn here (`svg_charts`): no script, a few kilobytes each. The
    instruction map (`with_map`) embeds every instruction, clusters and projects them: tens of
    seconds on a CPU, most of a report's cost, so it is drawn only when asked for (embeddings
    already cached, by a dedup step with the same encoder, are reused); it is a plotly figure, and
    only then is plotly.js (4.6 MB) inlined."""
    rows = list(run.rows())
    steps = run.steps
    seed = int(run.recipe.get("seed", 42))
    fmt = samples.run_format(rows)
    page = _Page([], [])

    page.chart(
        "funnel",
        "Funnel: rows kept, dropped (by reason) and failed per step",
        funnel_chart(steps),
        _funnel_table(steps),
    )
    _add_sample(page, rows, fmt, seed)
    page.chart("lengths", "Length distributions", lengths_chart(rows, fmt))
    scores = scores_chart(rows)
    if scores is not None:
        page.chart("scores", "Judge scores: one histogram per score column", scores)
    else:
        page.text(
            "scores", "Judge scores", "<p>No judge scores in this run (no judge or preference step).</p>"
        )
    _add_map(page, rows, seed, map_model, with_map)
    _add_dedup(page, rows, steps)
    page.chart("cost", "Tokens and estimated cost per step", cost_chart(steps), _cost_table(run))
    _add_experiment(page, run.path / EXPERIMENT_DIR)
    _add_loop(page, run.path)
    return _render(run, page, _summary(run, rows, fmt)), page.plot_ids


def _add_sample(page: _Page, rows: list[dict[str, Any]], fmt: str, seed: int) -> None:
    """A random sample of rows in the run's format, every input column shown."""
    sample = random.Random(seed).sample(rows, min(SAMPLE_ROWS, len(rows)))
    heading = f"A sample of rows ({len(sample)} of {len(rows):,}): {samples.FORMAT_NAMES[fmt]}"
    if not sample:
        page.text("sample", heading, "<p>No rows.</p>")
        return
    truncated = sum(samples.is_truncated(row) for row in sample)
    note = (
        f'<p class="note">{truncated} of these were cut short by max_tokens: marked truncated.</p>'
        if truncated
        else ""
    )
    page.text("sample", heading, note + samples.samples_table(sample, fmt))


def _summary(run: RunDir, rows: list[dict[str, Any]], fmt: str) -> list[tuple[str, bool]]:
    """The lines under the title (rows, format, truncated answers, failures, teachers, cost), each
    with whether it is a warning (shown in colour: truncated answers, failures)."""
    manifest = run.manifest
    truncated = sum(samples.is_truncated(row) for row in rows)
    teachers = ", ".join(f"{t.get('backend')}:{t.get('model')}" for t in manifest.get("teachers") or [])
    failures = manifest.get("failures") or 0
    truncated_line = f"{truncated:,} truncated" + (
        f" (finish_reason length: the teacher hit max_tokens; `synthkd show {run.path} "
        "--where finish_reason=length` lists them)"
        if truncated
        else ""
    )
    return [
        (f"{_count(manifest.get('rows', len(rows)))} rows: {samples.FORMAT_NAMES[fmt]}", False),
        (truncated_line, truncated > 0),
        (f"{_count(failures)} failures", failures > 0),
        (f"teachers: {teachers or 'none'}", False),
        (f"est. cost {_cost_text(manifest.get('cost_usd'))}", False),
        (f"finished {manifest.get('finished', '?')}", False),
    ]


def _add_map(page: _Page, rows: list[dict[str, Any]], seed: int, model: str, with_map: bool) -> None:
    texts = [t for t in (instruction_of(row) for row in rows) if t]
    found, reason = _instruction_map(texts, seed, model) if with_map else (None, MAP_NOT_ASKED)
    if found is None:
        page.text("map", "Instruction map", f"<p>{html.escape(reason)}</p>")
        return
    words = [[c, ", ".join(w)] for c, w in sorted(found.top_words.items())]
    heading = (
        f"Instruction map: {len(found.texts)} instructions embedded, clustered (KMeans) "
        f"and projected ({found.method})"
    )
    table = _table(["cluster", "top words (TF-IDF)"], words)
    page.chart("map", heading, _map_html(found), table, has_id=True)  # plotly's div is plot-map


def _add_dedup(page: _Page, rows: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
    pairs = dedup_pairs(steps)
    if not pairs:
        page.text("dedup", "Dedup", "<p>No duplicate was dropped (or no dedup step ran).</p>")
        return
    by_id = {row.get("id"): row for row in rows}
    table = [
        [
            p["step"],
            p["id"],
            p.get("text", ""),
            p.get("duplicate_of"),
            p.get("duplicate_text") or instruction_of(by_id.get(p.get("duplicate_of"), {})) or "",
            p.get("similarity"),
        ]
        for p in pairs[:TOP_PAIRS]
    ]
    headers = ["step", "dropped", "its text", "duplicate of", "kept text", "similarity"]
    if not any(p.get("text") for p in pairs[:TOP_PAIRS]):  # the manifest has ids only: no empty column
        headers, table = headers[:2] + headers[3:], [row[:2] + row[3:] for row in table]
    page.chart("dedup", "Most similar dropped pairs (dedup)", pairs_chart(pairs), _table(headers, table))


def _add_experiment(page: _Page, folder: Path) -> None:
    """The experiment's table and KL chart, where `synthkd experiment` ran on this run's rows.
    Both come from its files (results.json holds the table as text cells, kl.svg the chart), so
    the page shows what results.md shows."""
    results, chart = folder / "results.json", folder / "kl.svg"
    if not (results.is_file() and chart.is_file()):
        return
    table = json.loads(results.read_text(encoding="utf-8"))["table"]
    after = f'<p class="note">{html.escape(table["caption"])}</p>' + _table(table["headers"], table["rows"])
    heading = "Experiment: KL(teacher || student) per arm on held-out rows (mean, 95% CI over seeds)"
    page.chart("experiment", heading, chart.read_text(encoding="utf-8"), after)


def _add_loop(page: _Page, run_dir: Path) -> None:
    """The loop's rounds (`loop_table`), where the recipe has one, and a chart of the held-out loss
    of the first checkpoint and of each round's student."""
    loop = read_loop(run_dir)
    if loop is None:
        return
    rounds = loop["rounds"]
    headers, rows = loop_table(loop)
    losses = [loop["before"].get("loss") or 0.0, *((done["after"].get("loss") or 0.0) for done in rounds)]
    chart = svg.bar_chart(
        "loop-loss",
        "Held-out loss on the teacher's answers: the first checkpoint, then each round's student",
        ["start", *(f"round {done['number']}" for done in rounds)],
        [svg.Series("loss", losses, "#4c78a8")],
        stacked=False,
        y_label="loss (nats per token)",
    )
    heading = f"Loop: {len(rounds)} rounds of student answers, teacher feedback and training"
    page.chart("loop", heading, chart, _table(headers, rows))


def _cost_table(run: RunDir) -> str:
    rows = [
        [
            _step_name(s),
            _count(s.get("requests_sent", 0)),
            _count(s.get("cache_hits", 0)),
            _count(s.get("prompt_tokens", 0)),
            _count(s.get("completion_tokens", 0)),
            _cost_text(s.get("cost_usd")),
        ]
        for s in run.steps
    ]
    headers = ["step", "sent", "cache hits", "prompt tokens", "completion tokens", "est. cost"]
    total = run.manifest.get("cost_usd")
    return _table(headers, rows) + f"<p>Total estimated cost: {_cost_text(total)}</p>"


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; padding: 0 16px;
  color: #222; }
section { margin: 32px 0; } h1 { margin-bottom: 4px; }
.meta { color: #555; list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 2px 18px; }
.meta li.warn { color: #a33a00; font-weight: 600; }
h2 { font-size: 20px; margin: 0 0 8px; } h3 { font-size: 15px; margin: 0 0 4px; font-weight: 600; }
nav { font-size: 14px; } nav a { margin-right: 14px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; margin-top: 8px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td { white-space: pre-wrap; }
figure.chart { margin: 0; }
.chart-svg { display: block; width: 100%; height: auto; font-family: system-ui, sans-serif; }
.chart-svg .bar:hover { opacity: 0.8; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 24px; }
.panels.small { grid-template-columns: repeat(auto-fill, minmax(480px, 1fr)); }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 0; margin: 0 0 4px;
  font-size: 13px; }
.legend li { display: flex; align-items: center; gap: 6px; }
.note { color: #444; font-size: 13px; margin: 4px 0; }
"""


def _render(run: RunDir, page: _Page, summary: list[tuple[str, bool]]) -> str:
    items = "".join(
        f'<li class="warn">{html.escape(line)}</li>' if warn else f"<li>{html.escape(line)}</li>"
        for line, warn in summary
    )
    contents = "".join(
        f'<a href="#{name}">{html.escape(heading.split(":")[0])}</a>' for name, heading, _ in page.sections
    )
    sections = "\n".join(
        f'<section id="{name}"><h2>{html.escape(heading)}</h2>{body}</section>'
        for name, heading, body in page.sections
    )
    # plotly.js only for the map: the basic report has no script at all.
    script = f"<script>{_plotly_js()}</script>" if page.needs_plotly else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>synthkd report: {html.escape(run.name)}</title>"
        f"<style>{STYLE}{samples.SAMPLE_STYLE}</style>{script}</head><body>"
        f'<h1>{html.escape(run.name)}</h1><ul class="meta" id="summary">{items}</ul>'
        f'<nav aria-label="sections">{contents}</nav>\n' + sections + "</body></html>\n"
    )


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    with_map: bool = False,
    map_encoder: str = "transformer",
) -> Path:
    """Write the report (default `<run dir>/report.html`) and return its path; the map embeds with
    the embedded MiniLM or its static encoder (`map_encoder`: transformer or static). With the map, raises
    `MissingExtraError` (exit 2) before reading the run if plotly or scikit-learn (the `report`
    extra) is missing; the basic report needs neither."""
    if with_map:  # the basic report is drawn in Python: a core install writes it too
        check_installed(("plotly", "sklearn"), "report", MAP_PURPOSE)
    run = open_run(run_dir)
    page, _ = build_report(run, with_map=with_map, map_model=encoder_spec(EMBEDDED_ENCODER, map_encoder))
    path = Path(out) if out is not None else run.path / REPORT_FILE
    # Written beside and renamed into place: a full disk leaves the previous report whole.
    atomic_write_text(path, page, what="the report")
    return path
