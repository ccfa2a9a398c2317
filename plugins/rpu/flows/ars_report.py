"""The HTML report of the ARS's daily export (``rpu_ars_daily``): activity over 8 weeks, FEDORU
quality, CCMU, age pyramid, length of stay, files received and timeliness, in French.

The data are the ``ars_*`` aggregates of ``include/sql/queries/`` read as DataFrames
(``rpu.store.quality.frame``) inside the export's snapshot; pandas pivots them and computes the
shares. The page is ``include/templates/ars_report.html.j2`` (autoescaped: an establishment's
name is text, never markup) and its charts matplotlib figures inlined as SVG
(``rpu.flows.charts``): one self-contained file, no script, nothing fetched when it is read.

An establishment's days before its first file are not a break in its flow: they are shaded, never
marked as days without RPU, and its daily mean is over the days it was sending.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
from markupsafe import Markup

from rpu.config.region import Region
from rpu.flows import charts
from rpu.flows.templating import fr_int, render
from rpu.flows.timeliness_report import ars_section as timeliness_section
from rpu.formats.wording import plural
from rpu.store import quality, timeliness
from rpu.store.quality import FIELDS, Establishment

REGION = "région"  # the key of the region's rows in the frames (finess NULL in the SQL)
STATUS_FR = {"onboarding": "en intégration", "parallel": "en parallèle", "live": "en production",
             "inactive": "inactif"}
FILE_STATUS_FR = {"loaded": "chargés", "duplicate": "doublons", "superseded": "dépassés", "held": "en attente",
                  "rejected": "rejetés", "revoked": "révoqués", "loading": "en cours"}
CCMU_COLUMNS = (*quality.CCMU_CLASSES, "", "?")  # '' not filled, '?' outside the value set
CCMU_LABELS = tuple(f"CCMU {c}" for c in quality.CCMU_CLASSES) + ("non renseignée", "hors nomenclature")
LONG_STAY_FROM = 3  # index in STAY_CLASSES of "4–6 h": "4 h et plus"


def frame_key(finess, ordre) -> str:
    """``FINESS/ORDRE``, or REGION for a row of the region (finess NULL)."""
    return REGION if finess is None or pd.isna(finess) else f"{finess}/{int(ordre)}"


def key_of(establishment: Establishment) -> str:
    return frame_key(establishment.finess, establishment.ordre)


def _keyed(frame: pd.DataFrame, *, index: bool = True) -> pd.DataFrame:
    """The frame with a ``key`` (frame_key) in place of finess and ordre; as its index if ``index``."""
    keys = [frame_key(f, o) for f, o in zip(frame["finess"], frame["ordre"], strict=True)]
    keyed = frame.drop(columns=["finess", "ordre"]).assign(key=pd.Series(keys, index=frame.index, dtype=object))
    return keyed.set_index("key") if index else keyed


def _pivot(frame: pd.DataFrame, index: str, columns: str, values: str, rows, cols) -> pd.DataFrame:
    """Counts of ``values`` by ``index`` × ``columns``, every one of ``rows`` × ``cols`` present (0)."""
    if frame.empty:
        return pd.DataFrame(0, index=pd.Index(list(rows), dtype=object), columns=list(cols))
    table = frame.pivot_table(index=index, columns=columns, values=values, aggfunc="sum", fill_value=0)
    return table.reindex(index=list(rows), columns=list(cols), fill_value=0).fillna(0).astype(int)


def _share(count, total) -> float | None:
    return None if total is None or pd.isna(total) or not total or pd.isna(count) else float(count) / float(total)


def _none(value):
    return None if value is None or pd.isna(value) else value


# --- the data ----------------------------------------------------------------------------------------

@dataclass
class ReportData:
    """Everything the report shows, as read in the export's snapshot; frames indexed by frame_key."""

    start: date  # first ENTREE day of the period
    end: date  # exclusive: the export day
    window_start: date  # first day of the activity window (8 weeks)
    establishments: list[Establishment]  # in the export scope, in the report's order
    excluded: list[Establishment]  # registered, out of the export scope (their status)
    first_days: dict[str, date | None]  # the day each establishment's first file starts (None: never sent)
    indicators: pd.DataFrame  # ars_quality.sql: visits, <field>_den, _filled, _valid
    daily: pd.DataFrame  # ars_daily_visits.sql (key, day, visits): days without visits are absent
    ccmu: pd.DataFrame  # ars_ccmu.sql: (key, gravite, visits)
    ages: pd.DataFrame  # ars_age_pyramid.sql: (sexe, band, visits), band NaN when unknown
    stays: pd.DataFrame  # ars_length_of_stay.sql
    files: pd.DataFrame  # ars_received_files.sql: (key, status, files, records_rejected, last_received_at)

    @property
    def keys(self) -> list[str]:
        return [REGION] + [key_of(e) for e in self.establishments]

    def visits(self, key: str = REGION) -> int:
        return int(self.indicators["visits"].get(key, 0)) if len(self.indicators) else 0

    def rows(self) -> list[tuple[str, str, bool]]:
        """(label, key, is_region): the region first, then each establishment of the scope."""
        return [("Région", REGION, True)] + [(name(e), key_of(e), False) for e in self.establishments]


def name(establishment: Establishment) -> str:
    return f"{establishment.name} ({establishment.finess}" + (
        f"/{establishment.ordre})" if establishment.ordre else ")")


def collect(conn, *, start: date, end: date, window_start: date, files_since: datetime, files_until: datetime,
            statuses=quality.DEFAULT_STATUSES) -> ReportData:
    """All the report's aggregates. Run it in the export's snapshot so that the report and the
    data files describe the same database state."""
    statuses = tuple(statuses)
    registered = quality.establishments(conn)
    in_scope = [e for e in registered if e.status in statuses]
    known = {e.key for e in in_scope}

    def read(name: str, since: date = start) -> pd.DataFrame:
        return quality.frame(conn, name, quality.params(name, since, end, statuses))

    return ReportData(
        start=start, end=end, window_start=window_start,
        establishments=in_scope,
        excluded=[e for e in registered if e.key not in known],
        first_days={frame_key(*key): day for key, day in quality.first_days(conn, statuses).items()},
        indicators=_keyed(read("ars_quality")),
        daily=_keyed(read("ars_daily_visits", window_start), index=False),
        ccmu=_keyed(read("ars_ccmu"), index=False),
        ages=read("ars_age_pyramid"),
        stays=_keyed(read("ars_length_of_stay")),
        files=_keyed(quality.frame(conn, "ars_received_files", {
            "since": files_since, "until": files_until, "statuses": list(statuses)}), index=False),
    )


# --- the sections, as the template shows them ----------------------------------------------------------

@dataclass(frozen=True)
class ActivityLine:
    """One establishment's (or the region's) RPU per day of the window."""

    label: str
    days: list[date]
    visits: list[int]
    first_day: date | None  # its first file; None: it never sent anything

    def sending(self, day: date) -> bool:
        return self.first_day is not None and day >= self.first_day

    @property
    def missing_days(self) -> list[date]:
        """Days without any RPU since its first file: a break in the flow to check."""
        return [d for d, v in zip(self.days, self.visits, strict=True) if v == 0 and self.sending(d)]

    @property
    def mean(self) -> float | None:
        """RPU per day over the days it was sending (not over the whole window)."""
        sent = pd.Series(self.visits, index=self.days)[[self.sending(d) for d in self.days]]
        return float(sent.mean()) if len(sent) else None

    def chart(self, title: str, *, compact: bool) -> Markup:
        # Never sent: the whole window is "before its first file" (shaded, no red dot).
        first = self.first_day if self.first_day is not None else self.days[-1] + timedelta(days=1)
        return charts.daily_line(self.days, self.visits, title, first_day=first, compact=compact)


def activity(data: ReportData) -> tuple[ActivityLine, list[ActivityLine]]:
    """The region's line (its first day: the earliest first file) and one per establishment."""
    days = list(pd.date_range(data.window_start, data.end - timedelta(days=1), freq="D").date)
    keys = [key_of(e) for e in data.establishments]
    counts = _pivot(data.daily, "day", "key", "visits", days, keys)
    firsts = [data.first_days.get(k) for k in keys]
    region = ActivityLine("Région", days, [int(v) for v in counts.sum(axis=1)],
                          min((f for f in firsts if f is not None), default=None))
    lines = [ActivityLine(name(e), days, [int(v) for v in counts[k]], f)
             for e, k, f in zip(data.establishments, keys, firsts, strict=True)]
    return region, lines


def _quality_class(share: float | None) -> str:
    if share is None:
        return "na"
    return "ok" if share >= quality.TARGET else "moyen" if share >= 0.6 else "faible"


def quality_tables(data: ReportData) -> dict[str, list[dict]]:
    """Per measure (exhaustivite: filled / denominator, exploitabilite: valid / denominator),
    one row per line of the report: its RPU and, per field, (share, css class, tooltip)."""
    table = data.indicators.reindex(data.keys).astype(float)
    names = [rule.name for rule in FIELDS]
    den = table[[f"{rule.column}_den" for rule in FIELDS]].set_axis(names, axis=1)
    out = {}
    for measure, part in (("exhaustivite", "filled"), ("exploitabilite", "valid")):
        counts = table[[f"{rule.column}_{part}" for rule in FIELDS]].set_axis(names, axis=1)
        shares = counts / den.where(den > 0)  # NaN: no RPU in the field's denominator
        out[measure] = [{"label": label, "is_region": is_region, "visits": int(_none(table.at[key, "visits"]) or 0),
                         "cells": [_quality_cell(_none(shares.at[key, n]), counts.at[key, n], den.at[key, n])
                                   for n in names]}
                        for label, key, is_region in data.rows()]
    return out


def _quality_cell(share: float | None, count: float, denominator: float) -> tuple[float | None, str, str]:
    tip = "aucun RPU concerné" if share is None else f"{fr_int(count)} / {fr_int(denominator)}"
    return share, _quality_class(share), tip


def definitions(data: ReportData) -> list[tuple[quality.FieldRule, int]]:
    region = data.indicators.reindex([REGION]).fillna(0)
    return [(rule, int(region.at[REGION, f"{rule.column}_den"])) for rule in FIELDS]


def ccmu_view(data: ReportData) -> dict:
    counts = _pivot(data.ccmu, "key", "gravite", "visits", data.keys, CCMU_COLUMNS)
    totals = counts.sum(axis=1)
    shares = counts.div(totals.where(totals > 0), axis=0)
    region = counts.loc[REGION]
    return {
        "labels": CCMU_LABELS,
        "chart": charts.bars(list(CCMU_LABELS), [int(v) for v in region], "RPU par classe CCMU, région",
                             total=int(totals[REGION]) or None),
        "rows": [{"label": label, "is_region": is_region, "visits": int(totals[key]),
                  "shares": [_none(v) for v in shares.loc[key]]} for label, key, is_region in data.rows()],
    }


def ages_view(data: ReportData) -> dict:
    ages = data.ages
    known = ages[ages["band"].notna()].astype({"band": int})
    table = _pivot(known, "band", "sexe", "visits", range(len(quality.AGE_BANDS)), ("M", "F", "I"))
    return {
        "chart": charts.age_pyramid(list(quality.AGE_BANDS), table["M"].tolist(), table["F"].tolist(),
                                    "Pyramide des âges des patients, région"),
        "rows": list(zip(quality.AGE_BANDS, table["M"], table["F"], table["I"], strict=True)),
        "indeterminate": int(table["I"].sum()),
        "unknown_age": int(ages.loc[ages["band"].isna(), "visits"].sum()),
    }


def stays_view(data: ReportData) -> dict:
    stays = data.stays.reindex(data.keys)
    classes = range(len(quality.STAY_CLASSES))
    bins = (pd.DataFrame([b if isinstance(b, dict) else {} for b in stays["bins"]], index=stays.index)
            .rename(columns=int).reindex(columns=classes, fill_value=0).fillna(0).astype(int))
    long_stays = bins.loc[:, LONG_STAY_FROM:].sum(axis=1)
    return {
        "chart": charts.columns(list(quality.STAY_CLASSES), bins.loc[REGION].tolist(),
                                "RPU par classe de durée de passage, région"),
        "rows": [{"label": label, "is_region": is_region,
                  "visits": int(_none(stays.at[key, "visits"]) or 0),
                  "with_sortie": int(_none(stays.at[key, "with_sortie"]) or 0),
                  "kept": int(_none(stays.at[key, "kept"]) or 0),
                  "median_h": _hours(stays.at[key, "median_minutes"]), "p90_h": _hours(stays.at[key, "p90_minutes"]),
                  "long_share": _share(long_stays[key], _none(stays.at[key, "kept"]))}
                 for label, key, is_region in data.rows()],
    }


def _hours(minutes) -> float | None:
    return None if _none(minutes) is None else float(minutes) / 60


def files_view(data: ReportData, tz: ZoneInfo) -> list[dict]:
    keys = [key_of(e) for e in data.establishments]
    files = data.files
    counts = _pivot(files, "key", "status", "files", keys, quality.FILE_STATUSES)
    by_key = files.groupby("key") if len(files) else None
    rejected = by_key["records_rejected"].sum() if by_key is not None else pd.Series(dtype=int)
    last = by_key["last_received_at"].max() if by_key is not None else pd.Series(dtype=object)
    rows = []
    for establishment, key in zip(data.establishments, keys, strict=True):
        received = _none(last.get(key))
        rows.append({"label": name(establishment), "total": int(counts.loc[key].sum()),
                     "by_status": [(s, int(counts.at[key, s])) for s in quality.FILE_STATUSES],
                     "records_rejected": int(rejected.get(key, 0)),
                     "last": received.astimezone(tz).strftime("%d/%m/%Y %H:%M") if received is not None else "aucun"})
    return rows


# --- the page -------------------------------------------------------------------------------------------

def render_report(data: ReportData, region: Region, generated_at: datetime,
                  delays: timeliness.TimelinessData | None = None) -> str:
    """The report of the export day ``data.end``: one self-contained HTML file."""
    tz = ZoneInfo(region.timezone)
    region_line, lines = activity(data)
    days = region_line.days
    rows = [("Région", None, True)] + [(name(e), e.key, False) for e in data.establishments]  # keys as timeliness has them
    return render(
        "ars_report.html.j2",
        title=f"RPU {region.name} — export du {data.end:%d/%m/%Y}",
        region=region, start=data.start, last_day=data.end - timedelta(days=1),
        visits=data.visits(), establishments=plural(len(data.establishments), "établissement"),
        excluded=[f"{name(e)} [{STATUS_FR.get(e.status, e.status)}]" for e in data.excluded],
        exported_statuses=sorted({STATUS_FR.get(e.status, e.status) for e in data.establishments}) or ["—"],
        window=(days[0], days[-1]),
        region_chart=region_line.chart("RPU par jour, région", compact=False),
        lines=[(line, line.chart(f"RPU par jour, {line.label}", compact=True)) for line in lines],
        quality=quality_tables(data), fields=FIELDS, definitions=definitions(data), target=quality.TARGET,
        ccmu=ccmu_view(data), ages=ages_view(data), stays=stays_view(data),
        files=files_view(data, tz), file_statuses=[FILE_STATUS_FR[s] for s in quality.FILE_STATUSES],
        files_since=data.window_start,
        delays=timeliness_section(delays, rows, data.start) if delays else None,
        generated_at=generated_at.astimezone(tz),
    )
