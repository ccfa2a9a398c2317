"""The timeliness section of the ARS report: per establishment over the activity window (a
table), and for the region day by day (a chart). Rendered from
``include/templates/ars_timeliness_section.html.j2``."""

from __future__ import annotations

from datetime import date

from markupsafe import Markup

from rpu.flows import charts
from rpu.flows.templating import render
from rpu.store import quality
from rpu.store.timeliness import TimelinessData


def ars_section(data: TimelinessData, rows: list[tuple[str, tuple[str, int] | None, bool]],
                export_start: date) -> Markup:
    """``rows``: (label, key, is_region) in the report's order, the region first (key None).
    ``export_start``: the first day of the export's CSV (1 January), which the caption names:
    the section counts the visits of the activity window, the CSV those of the year, so that
    their totals agree only over the same ENTREE days (the ARS compares them)."""
    days = data.buckets()
    region_days = [data.of(None, day) for day in days]
    chart = charts.shares_over_time(
        days, {"reçus dans les 24 h": [t.arrival_24h if t else None for t in region_days],
               "reçus dans les 48 h": [t.arrival_48h if t else None for t in region_days],
               "transmis à SpF dans les 24 h après réception": [t.delivery_24h if t else None for t in region_days]},
        "Délais de la région, par jour d'entrée : part des RPU reçus dans les 24 h / 48 h après la sortie",
        target=quality.TARGET) if data.of(None) else None
    lines = [(label, data.of(key), is_region) for label, key, is_region in rows]
    return Markup(render("ars_timeliness_section.html.j2", start=data.start, last_day=days[-1] if days else data.start,
                         export_start=export_start, lines=lines, chart=chart, target=quality.TARGET))
