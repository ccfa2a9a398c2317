"""Charts of the HTML reports: matplotlib figures rendered to inline SVG (svg backend, no
display, text kept as text), so that a report stays one self-contained file."""

from __future__ import annotations

import hashlib
import io
import re
from datetime import date

import matplotlib
from markupsafe import Markup
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.figure import Figure  # not pyplot: no global state, no display; savefig(format="svg")

from rpu.flows.templating import fr_int, fr_pct

BLUE, ORANGE, GREY, GREEN, RED = "#1f5f99", "#e07b39", "#8a8a8a", "#2e7d32", "#c62828"
_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "rpu", "font.size": 9, "font.family": "sans-serif",
          "axes.spines.top": False, "axes.spines.right": False}


def _svg(figure: Figure, title: str) -> Markup:
    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        figure.savefig(buffer, format="svg", bbox_inches="tight",
                       metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = _own_ids(text[text.index("<svg"):])  # inline: no XML declaration nor DOCTYPE
    opening = text.index(">") + 1  # the chart's title, for screen readers and on hover
    return Markup(text[:opening]) + Markup("<title>%s</title>") % title + Markup(text[opening:])


_ID = re.compile(r'(\bid="|href="#|url\(#)([^")]+)')


def _own_ids(svg: str) -> str:
    """matplotlib names the elements of every figure alike (``figure_1``, ``axes_1``...): a page
    of several charts would repeat ids, and a reference (clip path, marker) could resolve in
    another chart. Each chart's ids get a prefix drawn from its content (stable output)."""
    prefix = "c" + hashlib.sha1(svg.encode()).hexdigest()[:8] + "-"
    return _ID.sub(lambda m: m.group(1) + prefix + m.group(2), svg)


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
            axes.axhline(target * 100, color=GREY, linewidth=0.8, linestyle=":", label=f"objectif {fr_pct(target, 0)}")
        axes.set_ylim(0, 105)
        axes.set_ylabel("%")
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m"))
        axes.legend(loc="lower left", fontsize=7, frameon=False, ncols=4)
        axes.set_title(title, fontsize=9, loc="left")
    return _svg(figure, title)


def _days_axis(axes, days: list[date], *, labels: bool = True) -> None:
    """Mondays as vertical grid lines (and dd/mm labels), the window's days end to end."""
    axes.xaxis.set_major_locator(mdates.WeekdayLocator(byweekday=mdates.MO))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%d/%m") if labels else mdates.DateFormatter(""))
    axes.grid(axis="x", color="#ececec", linewidth=0.8)
    if days:
        axes.set_xlim(days[0], days[-1])


def daily_line(days: list[date], visits: list[int], title: str, *, first_day: date | None = None,
               compact: bool = False) -> Markup:
    """RPU per day as a line. A day without any RPU from ``first_day`` on is a red dot (a break
    in the flow to check); the days before ``first_day`` (the establishment's first file) are
    shaded and drawn neither as a line nor as a break: it was not sending yet. ``first_day``
    None: every day counts."""
    sending = [first_day is None or day >= first_day for day in days]
    with matplotlib.rc_context(_STYLE):
        figure = _figure(3.2, 1.25) if compact else _figure(9.4, 2.4)
        axes = figure.add_subplot()
        axes.plot(days, [v if s else float("nan") for v, s in zip(visits, sending, strict=True)], color=BLUE,
                  linewidth=1.2 if compact else 1.6, label="RPU par jour d'entrée")
        if first_day is not None and days and first_day > days[0]:
            axes.axvspan(days[0], min(first_day, days[-1]), color=GREY, alpha=0.15, linewidth=0,
                         label="avant le premier fichier")
        missing = [d for d, v, s in zip(days, visits, sending, strict=True) if s and v == 0]
        if missing:
            axes.plot(missing, [0] * len(missing), "o", color=RED, markersize=3 if compact else 4, clip_on=False,
                      gid="jours-sans-rpu", label="jour sans aucun RPU")
        _days_axis(axes, days, labels=not compact)
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_locator(ticker.MaxNLocator(3 if compact else 5, integer=True))
        if compact:
            axes.tick_params(labelsize=7, length=2)
        else:
            axes.set_ylabel("RPU")
            axes.legend(loc="lower left", fontsize=7, frameon=False, ncols=3)
    return _svg(figure, title)


def bars(labels: list[str], values: list[int], title: str, *, total: int | None = None) -> Markup:
    """Horizontal bars, one per label (the first at the top), with the count and its share of
    ``total`` at the end of each bar."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(6.5, 0.28 * len(labels) + 0.4)
        axes = figure.add_subplot()
        positions = range(len(labels))
        drawn = axes.barh(positions, values, color=BLUE, height=0.7)
        ends = [fr_int(v) + (f" ({fr_pct(v / total)})" if total else "") for v in values]
        axes.bar_label(drawn, ends, padding=3, fontsize=8)
        axes.set_yticks(list(positions), labels)
        axes.invert_yaxis()
        axes.set_xlim(0, max(max(values, default=0), 1) * 1.3)  # room for the labels
        axes.xaxis.set_visible(False)
        axes.spines["bottom"].set_visible(False)
    return _svg(figure, title)


def age_pyramid(bands: list[str], male: list[int], female: list[int], title: str) -> Markup:
    """Men to the left, women to the right, the youngest band at the bottom."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(6.8, 0.24 * len(bands) + 0.7)
        axes = figure.add_subplot()
        positions = range(len(bands))
        left = axes.barh(positions, [-m for m in male], color=BLUE, height=0.75)
        right = axes.barh(positions, female, color=ORANGE, height=0.75)
        axes.bar_label(left, [fr_int(m) for m in male], padding=3, fontsize=7)
        axes.bar_label(right, [fr_int(f) for f in female], padding=3, fontsize=7)
        widest = max(male + female, default=0) or 1
        axes.set_xlim(-widest * 1.3, widest * 1.3)
        axes.set_yticks(list(positions), bands)
        axes.axvline(0, color=GREY, linewidth=0.8)
        axes.xaxis.set_visible(False)
        axes.spines["bottom"].set_visible(False)
        axes.set_title("Hommes", loc="left", fontsize=9, fontweight="bold", color=BLUE)
        axes.set_title("Femmes", loc="right", fontsize=9, fontweight="bold", color=ORANGE)
    return _svg(figure, title)


def columns(labels: list[str], values: list[int], title: str) -> Markup:
    """Vertical bars, one per class, with the count on top."""
    with matplotlib.rc_context(_STYLE):
        figure = _figure(7.5, 2.4)
        axes = figure.add_subplot()
        drawn = axes.bar(labels, values, color=BLUE, width=0.7)
        axes.bar_label(drawn, [fr_int(v) for v in values], padding=2, fontsize=8)
        axes.set_ylim(0, max(max(values, default=0), 1) * 1.15)
        axes.set_ylabel("RPU")
        axes.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _pos: fr_int(v)))
    return _svg(figure, title)
