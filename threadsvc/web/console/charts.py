"""The dashboard's charts as inline SVG, drawn by the server: bars per time bucket, stacked by
status. No script, no `style` attribute (the console's Content-Security-Policy allows neither
inline): shapes carry only geometry and a class, coloured by console.css. Each chart is an
image named by its title (`role="img"`), and the page gives its numbers as a table too.

Threat model: a chart holds numbers and the labels this module makes (times, counts, the
statuses' names); the title is escaped like any template value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 220  # the viewBox; the SVG scales to its box (console.css)
LEFT, BOTTOM, TOP = 44, 24, 8  # room for the axes' labels


@dataclass(frozen=True)
class Series:
    name: str  # also the class of its bars: s-NAME
    counts: Sequence[int]


def nice_top(most: int) -> int:
    """A round number at or above `most` for the top of the axis (at least 1)."""
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000):
        if most <= step * 4:
            return step * 4
    return -(-most // 10_000) * 10_000


def bars(chart_id: str, title: str, series: Sequence[Series], since: int, width_ms: int) -> Markup:
    """Stacked bars, one per bucket (bucket i starts at since + i * width_ms), the series
    stacked in order from the axis up; time labels at four points along the bottom."""
    buckets = max((len(s.counts) for s in series), default=0)
    totals = [sum(s.counts[i] for s in series if i < len(s.counts)) for i in range(buckets)]
    top = nice_top(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(buckets, 1)
    gap = min(2.0, slot * 0.2)
    parts = [
        (f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" '
         f'role="img" aria-labelledby="{escape(chart_id)}-title">'),
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
    ]
    for k in range(5):  # the axis: 0, a quarter ... the top
        value = top * k // 4
        y = TOP + plot_h - plot_h * k / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f'{value}</text>')
    for i in range(buckets):
        base: float = TOP + plot_h
        for s in series:
            n = s.counts[i] if i < len(s.counts) else 0
            if n <= 0:
                continue
            h = plot_h * n / top
            base -= h
            parts.append(f'<rect class="bar s-{escape(s.name)}" x="{LEFT + i * slot + gap / 2:.1f}" '
                         f'y="{base:.1f}" width="{max(slot - gap, 0.5):.1f}" height="{h:.1f}">'
                         f'<title>{escape(s.name)}: {n} at {_hhmm(since + i * width_ms)}</title>'
                         f'</rect>')
    for k in range(4):  # time labels
        i = buckets * k // 4
        x = LEFT + i * slot
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 6}">'
                     f'{_hhmm(since + i * width_ms)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _hhmm(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M")
