"""Geometry for the usage page's bar charts, drawn by the template as inline SVG (no JavaScript, no CDN).

A chart is a list of points, each a list of stacked segments; this module only turns numbers into rectangles,
grid lines and labels in a fixed viewBox that the browser scales to the page's width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.contrib.humanize.templatetags.humanize import intcomma
from django.utils import dateformat
from django.utils.formats import get_format
from django.utils.translation import gettext, ngettext

WIDTH = 640
HEIGHT = 200
LEFT = 48  # room for the y-axis labels
BOTTOM = 22  # room for the x-axis labels
TOP = 8
GAP = 0.2  # share of each slot left empty between bars


@dataclass(frozen=True, slots=True)
class Segment:
    css_class: str
    y: float
    height: float


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    segments: tuple[Segment, ...]
    title: str  # the bar's tooltip (an SVG <title>)


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    plot_left: int
    plot_bottom: float
    bars: tuple[Bar, ...]
    grid: tuple[tuple[float, str], ...]  # (y, label) of each horizontal grid line
    x_labels: tuple[tuple[float, str], ...]  # (x of the label's centre, text)
    empty: bool

    @property
    def center_x(self) -> float:
        return (self.plot_left + self.width) / 2

    @property
    def center_y(self) -> float:
        return (TOP + self.plot_bottom) / 2


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``, so grid labels are round numbers."""
    if value <= 0:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _short(number: float) -> str:
    if number >= 1_000_000:
        return f"{number / 1_000_000:g}M"
    if number >= 1_000:
        return f"{number / 1_000:g}k"
    return f"{number:g}"


def grid_divisions(top: float) -> int:
    """How many steps to split the axis into so each grid label is a round number.

    ``top`` is 1, 2 or 5 times 10^n (``nice_ceiling``). Small tops are split into whole units: "0.25 requests" means
    nothing.
    """
    leading = round(top / 10 ** math.floor(math.log10(top)))
    divisions = 4 if leading == 2 else 5  # 2 → steps of 0.5; 1 and 5 → steps of 0.2 and 1
    return int(top) if top < divisions else divisions


def bar_chart(points: list[tuple[str, list[tuple[str, int]], str]], *, label_every: int) -> Chart:
    """``points``: (x label, [(css class, value), ...] stacked bottom-up, tooltip) for each bar, left to right."""
    plot_width = WIDTH - LEFT
    plot_bottom = HEIGHT - BOTTOM
    plot_height = plot_bottom - TOP
    highest = max((sum(v for _, v in segments) for _, segments, _ in points), default=0)
    top = nice_ceiling(highest)
    grid_lines = grid_divisions(top)
    slot = plot_width / max(len(points), 1)
    bars, x_labels = [], []
    for i, (label, segments, title) in enumerate(points):
        x = LEFT + i * slot
        y = plot_bottom
        drawn = []
        for css_class, value in segments:
            if value <= 0:
                continue
            h = value / top * plot_height
            y -= h
            drawn.append(Segment(css_class, round(y, 2), round(h, 2)))
        bars.append(Bar(round(x + slot * GAP / 2, 2), round(slot * (1 - GAP), 2), tuple(drawn), title))
        if i % label_every == 0:
            x_labels.append((round(x + slot / 2, 2), label))
    grid = tuple(
        (round(plot_bottom - plot_height * k / grid_lines, 2), _short(top * k / grid_lines))
        for k in range(grid_lines + 1)
    )
    return Chart(WIDTH, HEIGHT, LEFT, plot_bottom, tuple(bars), grid, tuple(x_labels), empty=highest == 0)


def _request_points(buckets, label_format: str, title_format: str):
    return [
        (
            dateformat.format(b.start, label_format),
            [("bar-requests", b.requests)],
            ngettext("%(when)s: %(count)s request", "%(when)s: %(count)s requests", b.requests)
            % {"when": dateformat.format(b.start, title_format), "count": intcomma(b.requests)},
        )
        for b in buckets
    ]


def _token_points(buckets, label_format: str, title_format: str):
    points = []
    for b in buckets:
        cached = min(b.cached_tokens, b.prompt_tokens)
        # Stacked bottom-up: fresh prompt, cached prompt, completion; the three add up to the bucket's tokens.
        segments = [
            ("bar-prompt", b.prompt_tokens - cached),
            ("bar-cached", cached),
            ("bar-completion", b.completion_tokens),
        ]
        title = gettext("%(when)s: %(prompt)s prompt (%(cached)s cached), %(completion)s completion tokens") % {
            "when": dateformat.format(b.start, title_format),
            "prompt": intcomma(b.prompt_tokens),
            "cached": intcomma(cached),
            "completion": intcomma(b.completion_tokens),
        }
        points.append((dateformat.format(b.start, label_format), segments, title))
    return points


def _day_formats() -> tuple[str, str]:
    """(axis label, tooltip) date formats of the active language."""
    return get_format("MONTH_DAY_FORMAT"), get_format("DATE_FORMAT")


def usage_charts(daily, hourly) -> dict[str, Chart]:
    """The four charts of the usage page: requests and tokens, per day and per hour."""
    return {
        # Day labels in the language's own short form ("Nov 1", "11月1日"), never English month names in zh.
        "daily_requests": bar_chart(_request_points(daily, *_day_formats()), label_every=7),
        "daily_tokens": bar_chart(_token_points(daily, *_day_formats()), label_every=7),
        "hourly_requests": bar_chart(_request_points(hourly, "H:i", "D H:i"), label_every=8),
        "hourly_tokens": bar_chart(_token_points(hourly, "H:i", "D H:i"), label_every=8),
    }
