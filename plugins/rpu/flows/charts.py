"""Charts of the HTML reports: matplotlib figures rendered to inline SVG (svg backend, no
display, text kept as text), so that a report stays one self-contained file."""

from __future__ import annotations

import io
from datetime import date

import matplotlib
from markupsafe import Markup
from matplotlib import dates as mdates
from matplotlib.figure import Figure  # not pyplot: no global state, no display; savefig(format="svg")

BLUE, ORANGE, GREY, GREEN, RED = "#1f5f99", "#e07b39", "#8a8a8a", "#2e7d32", "#c62828"
_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "rpu", "font.size": 9, "font.family": "sans-serif",
          "axes.spines.top": False, "axes.spines.right": False}


def _svg(figure: Figure, title: str) -> Markup:
    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", bbox_inches="tight",
                       metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg"):]  # inline: no XML declaration nor DOCTYPE
    opening = text.index(">") + 1  # the chart's title, for screen readers and on hover
    return Markup(text[:opening]) + Markup("<title>%s</title>") % title + Markup(text[opening:])


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_STYLE):
        return Figure(figsize=(width, height), dpi=96)


def daily_against_usual(days: list[date], visits: list[int], usual: list[float | None], title: str) -> Markup:
    """Visits per day (bars) against the usual level of that weekday (dashed line)."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(8.5, 2.6)
        axes = figure.add_subplot()
        axes.bar(days, visits, color=BLUE, width=0.8, label="passages du jour")
        axes.plot(days, [u if u is not None else float("nan") for u in usual], color=ORANGE, linestyle="--",
                  linewidth=1.4, label="niveau habituel (médiane du même jour, 8 semaines avant)")
        zero = [d for d, v in zip(days, visits, strict=True) if v == 0]
        if zero:
            axes.plot(zero, [0] * len(zero), "o", color=RED, markersize=4, label="jour sans passage")
        axes.xaxis.set_major_locator(mdates.WeekdayLocator(byweekday=mdates.MO))
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m"))
        axes.set_ylabel("passages")
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left", fontsize=7, frameon=False, ncols=3)
        axes.set_title(title, fontsize=9, loc="left")
    return _svg(figure, title)


def shares_over_time(buckets: list[date], series: dict[str, list[float | None]], title: str, *,
                     target: float | None = None) -> Markup:
    """Shares (0–1) per day or week, one line per series, with an optional target line."""
    colors = [BLUE, ORANGE, GREEN, GREY]
    with matplotlib.rc_context(_STYLE):
        figure = _figure(8.5, 2.4)
        axes = figure.add_subplot()
        for (label, values), color in zip(series.items(), colors, strict=False):
            axes.plot(buckets, [v * 100 if v is not None else float("nan") for v in values], marker="o",
                      markersize=3, color=color, label=label)
        if target is not None:
            axes.axhline(target * 100, color=GREY, linewidth=0.8, linestyle=":", label=f"objectif {target:.0%}")
        axes.set_ylim(0, 105)
        axes.set_ylabel("%")
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m"))
        axes.legend(loc="lower left", fontsize=7, frameon=False, ncols=4)
        axes.set_title(title, fontsize=9, loc="left")
    return _svg(figure, title)
