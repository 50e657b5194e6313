"""`report.html`: one self-contained page with plots of a run, for a look before training on it.

plotly.js is inlined once (about 4.6 MB), so the file opens without a network. Plots are plain SVG
traces (no WebGL), which every browser, headless ones included, renders. Everything comes from the
run folder: the manifest (funnel, tokens, cost, dedup pairs) and data.jsonl (rows).

plotly and scikit-learn come with the `report` extra: without plotly there is no report (a
`MissingExtraError`, which `synthkd run` turns into a one-line note); the instruction map also
needs the `curate` extra's encoder, and without it (or scikit-learn) the page says so in its place.
"""

from __future__ import annotations

import html
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthkd.atomic import atomic_write_text
from synthkd.curate.embeddings import encoder_modules
from synthkd.errors import MissingExtraError
from synthkd.extras import check_installed, require
from synthkd.messages import TEACHER_PROMPT
from synthkd.publish.rundir import RunDir, open_run
from synthkd.text import clip

REPORT_FILE = "report.html"
REPORT_PURPOSE = "the HTML report"
MAP_PURPOSE = "the report's instruction map"
MAP_MAX_ROWS = 2000  # the embedding map samples this many rows at most: t-SNE grows as n log n
SAMPLE_ROWS = 10
TOP_PAIRS = 20
PLOT_HEIGHT = 420
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


# ---- figures -------------------------------------------------------------------------------------


def _layout(fig, title: str, **kwargs: Any):
    layout = {"template": "plotly_white", "height": PLOT_HEIGHT, "margin": {"t": 60, "b": 50}, **kwargs}
    fig.update_layout(title=title, **layout)
    return fig


def funnel_figure(steps: list[dict[str, Any]]):
    import plotly.graph_objects as go

    names = [f"{s['index']}:{s['step']}" for s in steps]
    fig = go.Figure(go.Bar(name="kept", x=names, y=[s.get("rows_out", 0) for s in steps]))
    reasons = sorted({reason for s in steps for reason in (s.get("rows_dropped") or {})})
    for reason in reasons:
        counts = [(s.get("rows_dropped") or {}).get(reason, 0) for s in steps]
        fig.add_trace(go.Bar(name=f"dropped: {reason}", x=names, y=counts))
    fig.add_trace(go.Bar(name="failed", x=names, y=[s.get("rows_failed", 0) for s in steps]))
    return _layout(fig, "Funnel: rows kept, dropped (by reason) and failed per step", barmode="stack")


def lengths_figure(rows: list[dict[str, Any]]):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(1, 2, subplot_titles=("instructions (words)", "responses (words)"))
    for column, (getter, color) in enumerate(((instruction_of, "#636efa"), (response_of, "#ef553b")), 1):
        lengths = [n for n in (_words(getter(row)) for row in rows) if n is not None]
        fig.add_trace(go.Histogram(x=lengths, marker_color=color, showlegend=False), 1, column)
    return _layout(fig, "Length distributions", bargap=0.05)


def scores_figure(rows: list[dict[str, Any]]):
    import plotly.graph_objects as go

    fig = go.Figure()
    found = {
        column: [row[column] for row in rows if isinstance(row.get(column), int | float)]
        for column in SCORE_COLUMNS
    }
    found = {column: values for column, values in found.items() if values}
    if not found:
        return None
    every = [value for values in found.values() for value in values]
    # Judges mostly give whole scores: one bar per score then, not plotly's automatic bins.
    bins = (
        {"start": min(every) - 0.5, "end": max(every) + 0.5, "size": 1}
        if all(float(v).is_integer() for v in every)
        else None
    )
    for column, values in found.items():
        # One bin group: the columns share bins and overlay comparably.
        fig.add_trace(go.Histogram(x=values, name=column, opacity=0.7, bingroup="scores", xbins=bins))
    return _layout(fig, "Judge scores", barmode="overlay", xaxis_title="score", yaxis_title="rows")


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
                marker={"size": 8 if len(found.texts) > 300 else 11},
                name=f"{cluster}: {words}",
                text=[html.escape(found.texts[i][:160]) for i in points],
                hovertemplate="%{text}<extra>cluster " + str(cluster) + "</extra>",
            )
        )
    return _layout(
        fig,
        f"Instructions ({len(found.texts)}) embedded, clustered (KMeans) and projected ({found.method})",
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False},
        legend={"title": "cluster: top words"},
        height=560,
    )


def dedup_pairs(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every dropped duplicate the manifest lists, most similar first."""
    pairs = []
    for step in steps:
        for item in (step.get("details") or {}).get("duplicates") or []:
            pairs.append({"step": f"{step['index']}:{step['step']}", **item})
    return sorted(pairs, key=lambda p: -float(p.get("similarity") or 0))


def pairs_figure(pairs: list[dict[str, Any]]):
    import plotly.graph_objects as go

    shown = pairs[:TOP_PAIRS][::-1]  # horizontal bars read top-down
    fig = go.Figure(
        go.Bar(
            x=[float(p.get("similarity") or 0) for p in shown],
            y=[f"{p['id']} ~ {p.get('duplicate_of')}" for p in shown],
            orientation="h",
            text=[p["step"] for p in shown],
        )
    )
    height = min(PLOT_HEIGHT * 2, 40 * len(shown) + 160)
    return _layout(fig, "Most similar dropped pairs (dedup)", xaxis_title="similarity", height=height)


def cost_figure(steps: list[dict[str, Any]]):
    import plotly.graph_objects as go

    names = [f"{s['index']}:{s['step']}" for s in steps]
    costs = ["unknown" if s.get("cost_usd") is None else f"${s['cost_usd']:.4f}" for s in steps]
    fig = go.Figure()
    for key, label in (("prompt_tokens", "prompt tokens"), ("completion_tokens", "completion tokens")):
        fig.add_trace(
            go.Bar(
                name=label,
                x=names,
                y=[s.get(key, 0) for s in steps],
                customdata=costs,
                hovertemplate="%{x}: %{y} tokens, est. cost %{customdata}<extra>" + label + "</extra>",
            )
        )
    return _layout(fig, "Tokens per step (hover for the estimated cost)", barmode="stack")


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


MAP_NOT_ASKED = (
    "not drawn: it embeds every instruction, which takes tens of seconds; "
    "`synthkd report RUN_DIR --map`, or `output.report: full` in the recipe, draws it"
)


def _instruction_map(texts: list[str], seed: int, model: str) -> tuple[Any, str]:
    """The map, or None and why there is none: the map is a view, so a missing extra or encoder
    must not cost the whole report."""
    try:
        found = instruction_map(texts, seed, model)
    except MissingExtraError as exc:  # a lighter install: the rest of the report stands
        return None, f"no instruction map: {exc}"
    except Exception as exc:
        return None, f"the instruction map could not be drawn: {exc}"
    return found, "fewer than 3 instructions: no map"


def build_report(
    run: RunDir, *, with_map: bool = False, map_model: str = "embedded"
) -> tuple[str, list[str]]:
    """The page's HTML and the ids of its plot divs (what a browser must render). Raises
    `MissingExtraError` without plotly (the `report` extra).

    The instruction map (`with_map`) embeds every instruction, clusters and projects them: tens of
    seconds on a CPU, most of a report's cost, so it is drawn only when asked for (embeddings
    already cached, by a dedup step with the same encoder, are reused)."""
    pio = require("plotly.io", "report", REPORT_PURPOSE)
    from plotly.offline import get_plotlyjs

    rows = list(run.rows())
    steps = run.steps
    seed = int(run.recipe.get("seed", 42))
    sections: list[str] = []
    plot_ids: list[str] = []

    def plot(name: str, fig, note: str = "") -> None:
        div_id = f"plot-{name}"
        plot_ids.append(div_id)
        config = {"displaylogo": False, "responsive": True}
        figure = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=config)
        sections.append(f'<section id="{name}">{figure}{note}</section>')

    def text(name: str, title: str, body: str) -> None:
        sections.append(f'<section id="{name}"><h2>{html.escape(title)}</h2>{body}</section>')

    plot("funnel", funnel_figure(steps))
    plot("lengths", lengths_figure(rows))
    scores = scores_figure(rows)
    if scores is not None:
        plot("scores", scores)
    else:
        text("scores", "Judge scores", "<p>No judge scores in this run (no judge or preference step).</p>")
    texts = [t for t in (instruction_of(row) for row in rows) if t]
    found, reason = _instruction_map(texts, seed, map_model) if with_map else (None, MAP_NOT_ASKED)
    if found is not None:
        words = [[c, ", ".join(w)] for c, w in sorted(found.top_words.items())]
        plot("map", map_figure(found), _table(["cluster", "top words (TF-IDF)"], words))
    else:
        text("map", "Instruction map", f"<p>{html.escape(reason)}</p>")
    pairs = dedup_pairs(steps)
    if pairs:
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
        plot("dedup", pairs_figure(pairs), _table(headers, table))
    else:
        text("dedup", "Dedup", "<p>No duplicate was dropped (or no dedup step ran).</p>")
    plot("cost", cost_figure(steps), _cost_table(run))
    sample = random.Random(seed).sample(rows, min(SAMPLE_ROWS, len(rows)))
    sample_table = [
        [row.get("id"), instruction_of(row) or "", response_of(row) or "", row.get("score", "")]
        for row in sample
    ]
    text(
        "sample",
        f"A sample of rows ({len(sample)} of {len(rows)})",
        _table(["id", "instruction", "response", "score"], sample_table),
    )
    return _page(run, sections, get_plotlyjs()), plot_ids


def _cost_table(run: RunDir) -> str:
    rows = [
        [
            f"{s['index']}:{s['step']}",
            s.get("requests_sent", 0),
            s.get("cache_hits", 0),
            s.get("prompt_tokens", 0),
            s.get("completion_tokens", 0),
            "unknown" if s.get("cost_usd") is None else f"${s['cost_usd']:.4f}",
        ]
        for s in run.steps
    ]
    headers = ["step", "sent", "cache hits", "prompt tokens", "completion tokens", "est. cost"]
    total = run.manifest.get("cost_usd")
    return (
        _table(headers, rows)
        + f"<p>Total estimated cost: {'unknown' if total is None else f'${total:.4f}'}</p>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1200px; color: #222; }
section { margin: 28px 0; } h1 { margin-bottom: 4px; } .meta { color: #666; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f4f4f4; } td { white-space: pre-wrap; }
"""


def _page(run: RunDir, sections: list[str], plotly_js: str) -> str:
    manifest = run.manifest
    cost = manifest.get("cost_usd")
    meta = (
        f"{manifest.get('rows', '?')} rows, {manifest.get('failures', 0)} failures; teachers: "
        + (
            ", ".join(f"{t.get('backend')}:{t.get('model')}" for t in manifest.get("teachers") or [])
            or "none"
        )
        + f"; est. cost {'unknown' if cost is None else f'${cost:.4f}'}"
        + f"; finished {manifest.get('finished', '?')}"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>synthkd report: {html.escape(run.name)}</title><style>{STYLE}</style>"
        f"<script>{plotly_js}</script></head><body>"
        f'<h1>{html.escape(run.name)}</h1><p class="meta">{html.escape(meta)}</p>'
        + "\n".join(sections)
        + "</body></html>\n"
    )


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    with_map: bool = False,
    map_model: str = "embedded",
) -> Path:
    """Write the report (default `<run dir>/report.html`) and return its path. Raises
    `MissingExtraError` (exit 2) before reading the run if plotly (the `report` extra) is missing."""
    check_installed(("plotly",), "report", REPORT_PURPOSE)
    run = open_run(run_dir)
    page, _ = build_report(run, with_map=with_map, map_model=map_model)
    path = Path(out) if out is not None else run.path / REPORT_FILE
    # Written beside and renamed into place: a full disk leaves the previous report whole.
    atomic_write_text(path, page, what="the report")
    return path
