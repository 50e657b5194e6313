"""Bar charts and histograms as inline SVG, drawn in Python: the basic report's figures.

plotly.js is 4.6 MB, and a report must open without a network, so the basic report draws its charts
here instead: a few kilobytes each and no JavaScript. Every chart names itself for screen readers
(`<title>` and `<desc>`), every bar carries its numbers as a native tooltip (an SVG `<title>`), values
are written on the bars where they fit and the legend is text beside a swatch: no meaning rests on
colour alone. The report puts the numbers in tables as well.

Every text that reaches the SVG (step names, row ids, column names) is escaped here: rows hold
arbitrary model output.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from synthkd.text import clip

WIDTH = 1100  # viewBox units: the SVG is scaled to the page's width, which is about this
HEIGHT = 340
FONT_SIZE = 12
CHAR_WIDTH = 6.8  # a generous average glyph width at FONT_SIZE in a sans-serif: to decide what fits
LABEL_CHARS = 28  # category labels are clipped to this many characters
ROTATE_DEGREES = 35

# Okabe-Ito: told apart with the common colour-vision deficiencies.
BLUE = "#0072B2"
ORANGE = "#E69F00"
GREEN = "#009E73"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"
SKY = "#56B4E9"
YELLOW = "#F0E442"
GREY = "#8A8A8A"
EXTRA_COLORS = (ORANGE, GREEN, PURPLE, SKY, YELLOW, GREY)  # for series beyond the named ones

GRID = "#e3e3e3"
AXIS = "#888"


@dataclass(frozen=True)
class Series:
    """One named set of bars: a value per category."""

    name: str
    values: Sequence[float]
    color: str


@dataclass(frozen=True)
class Bin:
    """A histogram bar: values in [low, high), or every value from `low` up when `overflow`."""

    low: float
    high: float
    count: int
    overflow: bool = False


@dataclass(frozen=True)
class Frame:
    """The plot area inside the SVG and the value at its top."""

    width: float
    height: float
    left: float
    right: float
    top: float
    bottom: float
    y_max: float

    @property
    def plot_width(self) -> float:
        return self.width - self.left - self.right

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom

    @property
    def baseline(self) -> float:
        return self.height - self.bottom

    def y(self, value: float) -> float:
        return self.top + self.plot_height * (1 - value / self.y_max)


# ---- numbers and text ----------------------------------------------------------------------------


def escape(value: object) -> str:
    return html.escape(str(value), quote=True)


def _left_margin(ticks: list[float]) -> float:
    """Room left of the plot for the value axis: its widest tick label, and the axis title."""
    return 20 + max(text_width(tick_text(t)) for t in ticks) + 14


def text_width(text: str, size: float = FONT_SIZE) -> float:
    return len(text) * CHAR_WIDTH * size / FONT_SIZE


def count_text(value: float) -> str:
    """A value as written on a bar or in a tooltip: whole numbers with thousands separators."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.3g}"


def tick_text(value: float) -> str:
    """An axis label: short, so ticks never crowd (12k, 1.5M)."""
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if abs(value) >= 10_000:
        return f"{value / 1_000:g}k"
    return f"{value:,g}"


def nice_step(span: float, target: int, whole: bool = True) -> float:
    """The 1, 2 or 5 times a power of ten that cuts `span` into about `target` parts."""
    if span <= 0:
        return 1.0
    raw = span / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(f * magnitude for f in (1, 2, 5, 10) if f * magnitude >= raw)
    return max(step, 1.0) if whole else step


def ticks_up_to(maximum: float, target: int = 6, whole: bool = True) -> list[float]:
    """Evenly spaced round values from 0 to at least `maximum` (counts: whole steps)."""
    step = nice_step(maximum, target, whole)
    top = max(step, math.ceil(maximum / step - 1e-9) * step)
    return [round(i * step, 10) for i in range(round(top / step) + 1)]


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values already sorted."""
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def text_color_on(fill: str) -> str:
    """Dark text on light fills (orange, yellow, sky), white on dark ones: readable either way."""
    red, green, blue = (int(fill[i : i + 2], 16) / 255 for i in (1, 3, 5))
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    return "#111" if luminance > 0.4 else "#fff"


# ---- pieces of SVG -------------------------------------------------------------------------------


def _svg(chart_id: str, title: str, description: str, width: float, height: float, body: list[str]) -> str:
    return (
        f'<svg class="chart-svg" viewBox="0 0 {width:g} {height:g}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        f'xmlns="http://www.w3.org/2000/svg" font-size="{FONT_SIZE}">'
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>'
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>' + "".join(body) + "</svg>"
    )


def _text(
    x: float, y: float, text: str, *, anchor: str = "middle", fill: str = "#333", extra: str = ""
) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>{escape(text)}</text>'


def _bar(x: float, y: float, width: float, height: float, color: str, tooltip: str) -> str:
    # The white outline separates stacked segments whose colours are close.
    return (
        f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(width, 0):.1f}" '
        f'height="{max(height, 0):.1f}" fill="{color}" stroke="#fff" stroke-width="0.8">'
        f"<title>{escape(tooltip)}</title></rect>"
    )


def _line(x1: float, y1: float, x2: float, y2: float, color: str) -> str:
    return f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{y1:.1f}" y2="{y2:.1f}" stroke="{color}"/>'


def _value_axis(frame: Frame, ticks: list[float], label: str) -> list[str]:
    """Horizontal grid lines with their values on the left, and the axis's name turned upright."""
    parts = []
    for tick in ticks:
        y = frame.y(tick)
        parts.append(_line(frame.left, y, frame.width - frame.right, y, AXIS if tick == 0 else GRID))
        parts.append(_text(frame.left - 6, y + 4, tick_text(tick), anchor="end", fill="#555"))
    if label:
        middle = frame.top + frame.plot_height / 2
        parts.append(_text(14, middle, label, extra=f' transform="rotate(-90 14 {middle:.1f})"', fill="#444"))
    return parts


def _rotated(categories: Sequence[str], slot: float) -> bool:
    """Category labels that would overlap straight are turned, to read along a slant."""
    return any(text_width(clip(c, LABEL_CHARS)) > slot - 4 for c in categories)


def _category_labels(frame: Frame, categories: Sequence[str], slot: float, rotate: bool) -> list[str]:
    parts = []
    for i, category in enumerate(categories):
        x = frame.left + slot * (i + 0.5)
        y = frame.baseline + 16
        label = clip(category, LABEL_CHARS)
        if rotate:
            turn = f' transform="rotate(-{ROTATE_DEGREES} {x:.1f} {y:.1f})"'
            parts.append(_text(x, y, label, anchor="end", extra=turn))
        else:
            parts.append(_text(x, y, label))
    return parts


def _axis_title(frame: Frame, label: str) -> str:
    return _text(frame.left + frame.plot_width / 2, frame.height - 6, label, fill="#444")


def _bottom_margin(categories: Sequence[str], rotate: bool, x_label: str) -> float:
    if not rotate:
        room = 26.0
    else:
        longest = max((text_width(clip(c, LABEL_CHARS)) for c in categories), default=0)
        room = 20 + longest * math.sin(math.radians(ROTATE_DEGREES))
    return room + (18 if x_label else 0)


# ---- charts --------------------------------------------------------------------------------------


def bar_chart(
    chart_id: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    stacked: bool,
    y_label: str,
    x_label: str = "",
    top_labels: Sequence[Sequence[str]] | None = None,
    errors: Sequence[float] | None = None,
    width: float = WIDTH,
    height: float = HEIGHT,
) -> str:
    """Vertical bars per category: `stacked` (bottom to top in `series` order) or side by side.

    `top_labels`: lines written above each category's bars (e.g. a total and a cost; side-by-side
    bars then get no value of their own above them); by default a stacked bar gets no total and
    side-by-side bars get their values, where they fit. `errors`: for one series, each bar's error
    bar half-width (e.g. a 95% CI)."""
    top_lines = max((len(lines) for lines in top_labels or []), default=0)
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    tallest = [max((s.values[i] for s in series), default=0) for i in range(len(categories))]
    peaks = totals if stacked else tallest
    if errors is not None:  # labels and the scale clear the whiskers too
        peaks = [peak + error for peak, error in zip(peaks, errors, strict=True)]
    ticks = ticks_up_to(max(peaks, default=0))
    left = _left_margin(ticks)
    right = 16
    rotate = _rotated(categories, (width - left - right) / max(1, len(categories)))
    frame = Frame(
        width=width,
        height=height,
        left=left,
        right=right,
        top=14 + 15 * max(top_lines, 1),  # room for the labels above the tallest bar
        bottom=_bottom_margin(categories, rotate, x_label),
        y_max=ticks[-1],
    )
    slot = frame.plot_width / max(1, len(categories))
    parts = _value_axis(frame, ticks, y_label)
    for i, category in enumerate(categories):
        parts += _category_bars(frame, i, category, slot, series, stacked, labelled=not top_labels)
        if errors is not None and errors[i] > 0:
            parts += _whisker(frame, frame.left + slot * (i + 0.5), series[0].values[i], errors[i], slot)
        lines = top_labels[i] if top_labels else []
        parts += _lines_above(frame, frame.left + slot * (i + 0.5), frame.y(peaks[i]), lines, slot)
    parts += _category_labels(frame, categories, slot, rotate)
    if x_label:
        parts.append(_axis_title(frame, x_label))
    return _svg(chart_id, title, _describe_bars(categories, series), width, height, parts)


def _whisker(frame: Frame, x: float, value: float, error: float, slot: float) -> list[str]:
    """An error bar from value - error to value + error, with caps."""
    top, bottom, cap = frame.y(value + error), frame.y(max(value - error, 0.0)), slot * 0.08
    color = "#222"
    return [
        _line(x, top, x, bottom, color),
        _line(x - cap, top, x + cap, top, color),
        _line(x - cap, bottom, x + cap, bottom, color),
    ]


def _category_bars(
    frame: Frame,
    index: int,
    category: str,
    slot: float,
    series: Sequence[Series],
    stacked: bool,
    *,
    labelled: bool = True,  # side by side: each bar's value above it (unless the caller has lines there)
) -> list[str]:
    parts = []
    group = slot * 0.72  # the rest of the slot is the gap between categories
    start = frame.left + slot * index + (slot - group) / 2
    bar_width = group if stacked else group / max(1, len(series))
    level = 0.0
    for k, one in enumerate(series):
        value = one.values[index]
        if value <= 0:
            continue
        x = start if stacked else start + k * bar_width
        low = level if stacked else 0.0
        top, bottom = frame.y(low + value), frame.y(low)
        tooltip = f"{category}: {one.name}: {count_text(value)}"
        parts.append(_bar(x, top, bar_width, bottom - top, one.color, tooltip))
        label = count_text(value)
        fits_inside = bottom - top >= FONT_SIZE + 4 and text_width(label) <= bar_width - 4
        if stacked and fits_inside:
            middle = (top + bottom) / 2 + FONT_SIZE / 2 - 2
            parts.append(_text(x + bar_width / 2, middle, label, fill=text_color_on(one.color)))
        elif not stacked and labelled and text_width(label) <= bar_width + 2:
            parts.append(_text(x + bar_width / 2, top - 4, label))
        if stacked:
            level += value
    return parts


def _lines_above(frame: Frame, x: float, y: float, lines: Sequence[str], slot: float) -> list[str]:
    if not lines or any(text_width(line) > slot - 2 for line in lines):
        return []  # no room: the bars' tooltips and the table below hold these numbers
    return [_text(x, y - 5 - 15 * (len(lines) - 1 - k), line) for k, line in enumerate(lines)]


def _describe_bars(categories: Sequence[str], series: Sequence[Series]) -> str:
    """The chart's numbers as one sentence, for a screen reader."""
    described = []
    for i, category in enumerate(categories):
        values = ", ".join(f"{s.name} {count_text(s.values[i])}" for s in series if s.values[i])
        described.append(f"{category}: {values or 'none'}")
    return "; ".join(described)


MIN_BINS, MAX_BINS = 10, 40


def bin_count(ordered: Sequence[float]) -> int:
    """How many bars a histogram of these values (sorted) should have: the Freedman–Diaconis rule
    (bin width twice the interquartile range over the cube root of n), or the square root of n when
    the middle half is one value, clipped to 10..40 so a handful of rows still shows a shape and a
    long run no comb."""
    n = len(ordered)
    span = ordered[-1] - ordered[0]
    spread = percentile(ordered, 0.75) - percentile(ordered, 0.25)
    wanted = span / (2 * spread / n ** (1 / 3)) if spread > 0 and span > 0 else math.sqrt(n)
    return min(MAX_BINS, max(MIN_BINS, round(wanted)))


def _whole_width(low: float, upper: float, target: int) -> float:
    """The round width (1, 2 or 5 times a power of ten, at least 1) that cuts low..upper into the
    count of bins nearest `target` within 10..40 (whole-number values: a bin holds a whole range)."""
    candidates = [f * 10**m for m in range(10) for f in (1, 2, 5)]

    def bins(width: float) -> int:
        return int((upper - math.floor(low / width) * width) // width) + 1

    fitting = [w for w in candidates if MIN_BINS <= bins(w) <= MAX_BINS]
    return min(fitting, key=lambda w: (abs(bins(w) - target), w)) if fitting else 1.0


def histogram_bins(values: Sequence[float]) -> list[Bin]:
    """Round-width bins over whole-number values (`bin_count` of them, about); a long tail (past
    1.5 times the 99.5th percentile) goes into one last overflow bar, so the bulk of the data is
    not squeezed into a bar or two by a single outlier. Values spanning fewer than 10 numbers get
    one bar per number, over 10 numbers around them (none below 0)."""
    if not values:
        return []
    ordered = sorted(values)
    low, high = ordered[0], ordered[-1]
    cap = percentile(ordered, 0.995)
    upper = cap if high > 1.5 * cap and cap > low else high
    width = _whole_width(low, upper, bin_count([v for v in ordered if v <= upper]))
    start = math.floor(low / width) * width
    count = int((upper - start) // width) + 1
    if count < MIN_BINS:  # a narrow range: one bar per number, widened to ten numbers around it
        start = max(0.0, low - (MIN_BINS - (upper - low + 1)) // 2)
        count = MIN_BINS
    counts = [0] * count
    overflow = 0
    for value in ordered:
        index = int((value - start) // width)
        if index < count:
            counts[index] += 1
        else:
            overflow += 1
    bins = [Bin(start + i * width, start + (i + 1) * width, n) for i, n in enumerate(counts)]
    if overflow:
        bins.append(Bin(start + count * width, high, overflow, overflow=True))
    return bins


def bin_text(found: Bin, unit: str) -> str:
    if found.overflow:
        return f"{count_text(found.low)} {unit} or more"
    last = found.high - 1  # whole-number values: a bin of width 5 from 10 holds 10 to 14
    if last <= found.low:
        return f"{count_text(found.low)} {unit}"
    return f"{count_text(found.low)}–{count_text(last)} {unit}"


def histogram(
    chart_id: str,
    title: str,
    bins: Sequence[Bin],
    color: str,
    *,
    unit: str,
    y_label: str = "rows",
    width: float = WIDTH / 2,
    height: float = HEIGHT,
) -> str:
    """Touching bars over a number line of whole-number values (word counts)."""
    ticks = ticks_up_to(max((b.count for b in bins), default=0))
    left = _left_margin(ticks)
    frame = Frame(width=width, height=height, left=left, right=16, top=14, bottom=44, y_max=ticks[-1])
    parts = _value_axis(frame, ticks, y_label)
    slots = max(1, len(bins))
    bar_width = frame.plot_width / slots
    for i, found in enumerate(bins):
        x = frame.left + i * bar_width
        top = frame.y(found.count)
        tooltip = f"{bin_text(found, unit)}: {count_text(found.count)} {y_label}"
        parts.append(_bar(x, top, bar_width, frame.baseline - top, color, tooltip))
        if found.count and text_width(count_text(found.count)) <= bar_width:
            parts.append(_text(x + bar_width / 2, top - 4, count_text(found.count)))
    parts += _bin_labels(frame, bins, bar_width)
    parts.append(_axis_title(frame, unit))
    description = "; ".join(f"{bin_text(b, unit)}: {count_text(b.count)}" for b in bins if b.count)
    return _svg(chart_id, title, description or "no values", width, height, parts)


def _bin_labels(frame: Frame, bins: Sequence[Bin], bar_width: float) -> list[str]:
    """Under bins one value wide, each bar's value at its middle; under wider ones, the edges
    between bars and the last bar's end (an overflow bar: `≥` its start). Thinned to every k-th so
    that no two labels touch; the last is always written."""
    if not bins:
        return []
    single = all(b.high - b.low == 1 and not b.overflow for b in bins)
    marks = [
        (i + 0.5 if single else i, ("≥" if b.overflow else "") + count_text(b.low))
        for i, b in enumerate(bins)
    ]
    if not single and not bins[-1].overflow:
        marks.append((len(bins), count_text(bins[-1].high)))
    room = max(text_width(text) for _, text in marks) + 10
    every = max(1, math.ceil(room / bar_width))
    shown = marks[::every]
    if shown[-1] != marks[-1]:
        if (marks[-1][0] - shown[-1][0]) * bar_width < room:
            shown.pop()
        shown.append(marks[-1])
    parts = []
    for position, text in shown:
        x = frame.left + position * bar_width
        parts.append(_line(x, frame.baseline, x, frame.baseline + 4, AXIS))
        parts.append(_text(x, frame.baseline + 16, text))
    return parts


def horizontal_bar_chart(
    chart_id: str,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    notes: Sequence[str],
    *,
    color: str,
    x_label: str,
    width: float = WIDTH,
) -> str:
    """One bar per label, top to bottom in the given order; each note is written after its bar."""
    row_height = 26
    x_max = max(1.0, *values) if values else 1.0
    ticks = [round(i * x_max / 5, 10) for i in range(6)]
    left = 12 + max((text_width(clip(label, 40)) for label in labels), default=0)
    right = 12 + max((text_width(note) for note in notes), default=0)
    height = 14 + row_height * len(labels) + 44
    # Bars lie along x here: y_max is unused, and the scale is x_max over the plot's width.
    frame = Frame(width=width, height=height, left=left, right=right, top=14, bottom=44, y_max=x_max)
    parts = []
    scale = frame.plot_width / x_max
    for tick in ticks:
        x = frame.left + tick * scale
        parts.append(_line(x, frame.top, x, frame.baseline, GRID))
        parts.append(_text(x, frame.baseline + 16, f"{tick:g}", fill="#555"))
    for i, (label, value, note) in enumerate(zip(labels, values, notes, strict=True)):
        y = frame.top + i * row_height
        tooltip = f"{label}: {x_label} {note}"
        parts.append(_bar(frame.left, y + 4, value * scale, row_height - 8, color, tooltip))
        parts.append(_text(frame.left - 6, y + row_height / 2 + 4, clip(label, 40), anchor="end"))
        parts.append(_text(frame.left + value * scale + 6, y + row_height / 2 + 4, note, anchor="start"))
    parts.append(_axis_title(frame, x_label))
    description = "; ".join(f"{label}: {value:g}" for label, value in zip(labels, values, strict=True))
    return _svg(chart_id, title, description or "none", width, height, parts)


def legend(series: Sequence[Series]) -> str:
    """The series' names beside their colours, as HTML text (it wraps, and screen readers read it)."""
    items = "".join(
        f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" rx="2" '
        f'fill="{s.color}"/></svg>{escape(s.name)}</li>'
        for s in series
    )
    return f'<ul class="legend">{items}</ul>'
