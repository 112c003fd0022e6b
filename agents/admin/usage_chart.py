"""The usage page's chart: one line per model over the days, drawn on the server as inline
SVG (no JavaScript, no library, nothing fetched), with its figures as a table beside it.

Accessible by construction: the SVG is an image (`role="img"`) named by its <title> and
described by its <desc> (what is plotted, the period, the highest day), and the same
figures are a table the page shows under it, which screen readers and keyboards reach
like any table. Lines differ by dash pattern as well as colour, and the legend names
each, so colour is never the only cue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 16, 36
# Colours with at least 4.5:1 contrast on white (text-grade, so the legend's text in
# them reads too), and a dash pattern each.
STYLES = [
    ("#0550ae", ""),
    ("#b35900", "6 3"),
    ("#1a7f37", "2 3"),
    ("#8250df", "8 3 2 3"),
    ("#cf222e", "1 2"),
    ("#57606a", "10 4"),
]


@dataclass(frozen=True)
class Series:
    """One model's values per day (0 where it has no row)."""

    model: str
    values: list[Decimal]


def _number(value: Decimal, metric: str) -> str:
    return f"${value:,.2f}" if metric == "cost" else f"{value:,.0f}"


def usage_chart(days: list[date], series: list[Series], *, metric: str, label: str) -> SafeString:
    """The SVG of `series` over `days`; `metric` "cost" or "tokens", `label` its words."""
    if not days or not series:
        return format_html("<p>{}</p>", "No usage in this period.")
    top = max((max(s.values) for s in series), default=Decimal(0)) or Decimal(1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(days) - 1, 1)

    # Coordinates as text: format_html escapes its arguments before formatting them.
    def x(index: int) -> str:
        return f"{LEFT + index * step:.1f}"

    def y(value: Decimal) -> str:
        return f"{TOP + plot_h - float(value / top) * plot_h:.1f}"

    grid = format_html_join(
        "",
        '<line x1="{}" x2="{}" y1="{}" y2="{}" class="usage-grid"/>'
        '<text x="{}" y="{}" class="usage-axis" text-anchor="end">{}</text>',
        (
            (LEFT, WIDTH - RIGHT, y(v), y(v), LEFT - 6, f"{float(y(v)) + 4:.1f}", label)
            for v, label in ((v, _number(v, metric)) for v in (Decimal(0), top / 2, top))
        ),
    )
    ticks = sorted({0, len(days) // 2, len(days) - 1})
    x_labels = format_html_join(
        "",
        '<text x="{}" y="{}" class="usage-axis" text-anchor="middle">{}</text>',
        ((x(i), HEIGHT - 12, days[i].isoformat()) for i in ticks),
    )
    lines = format_html_join(
        "",
        '<polyline fill="none" stroke="{}" stroke-width="2" stroke-dasharray="{}" '
        'points="{}"><title>{}</title></polyline>',
        (
            (
                STYLES[n % len(STYLES)][0],
                STYLES[n % len(STYLES)][1] or "none",
                " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(s.values)),
                s.model or "(no model)",
            )
            for n, s in enumerate(series)
        ),
    )
    peak_day, peak = max(
        ((days[i], sum((s.values[i] for s in series), Decimal(0))) for i in range(len(days))),
        key=lambda pair: pair[1],
    )
    description = (
        f"{label} per day from {days[0]} to {days[-1]}, one line per model "
        f"({', '.join(s.model or '(no model)' for s in series)}). "
        f"Highest day: {peak_day}, {_number(peak, metric)} in all. "
        "The table below the chart holds the same figures."
    )
    legend = format_html_join(
        "",
        '<li><svg width="28" height="10" aria-hidden="true" focusable="false">'
        '<line x1="0" x2="28" y1="5" y2="5" stroke="{}" stroke-width="2" '
        'stroke-dasharray="{}"/></svg> {}</li>',
        (
            (
                STYLES[n % len(STYLES)][0],
                STYLES[n % len(STYLES)][1] or "none",
                s.model or "(no model)",
            )
            for n, s in enumerate(series)
        ),
    )
    return format_html(
        '<figure class="usage-chart">'
        '<svg role="img" viewBox="0 0 {} {}" width="100%" '
        'aria-labelledby="usage-chart-title usage-chart-desc" focusable="false">'
        '<title id="usage-chart-title">{}</title><desc id="usage-chart-desc">{}</desc>'
        '{}{}<line x1="{}" x2="{}" y1="{}" y2="{}" class="usage-axis-line"/>{}</svg>'
        '<figcaption><ul class="usage-legend">{}</ul></figcaption></figure>',
        WIDTH,
        HEIGHT,
        f"{label} per day and model",
        description,
        grid,
        x_labels,
        LEFT,
        WIDTH - RIGHT,
        TOP + plot_h,
        TOP + plot_h,
        lines,
        legend,
    )
