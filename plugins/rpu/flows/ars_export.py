"""The daily export of the regional database for the ARS: the RPU of the year as CSV (for a
French spreadsheet) and Parquet, with an HTML quality and activity report; journaled as sends and
delivered to the ARS's SFTP folder.

No Airflow here (``rpu.airflow.ars_tasks`` is the glue). The export day J is the run's date: the files
hold the visits from 1 January of the year of J-1 up to J-1 included (at 06:00 the
establishments have sent J-1, rpu-format.md §1; on 1 January the export is the whole previous
year). The CSV is streamed by COPY, the Parquet by a server-side cursor in row groups, the report
from SQL aggregates: memory stays flat whatever the size of the year. The three files are built
in one read-only REPEATABLE READ snapshot, so they describe the same database state.
"""

from __future__ import annotations

import contextlib
import html
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.rows import class_row

from rpu.config.region import STATUSES, Region, RegionConfigError
from rpu.flows.timeliness_report import ars_section as _timeliness_section
from rpu.formats.wording import plural
from rpu.store import quality, sends, timeliness
from rpu.store.db import query
from rpu.store.quality import FIELDS, ReportData

log = logging.getLogger(__name__)

DESTINATION = "ars"
KIND = "daily"
BATCH_ROWS = 50_000  # rows per Parquet row group
FETCH_ROWS = 10_000  # rows per fetch from the server-side cursor (Python objects alive at once)
ACTIVITY_WEEKS = 8
UTF8_BOM = b"\xef\xbb\xbf"

# The CSV header (French): the order of ars_export_csv.sql and ars_export_rows.sql.
COLUMNS = (
    "finess", "ordre", "code_postal", "commune", "date_naissance", "sexe", "date_entree", "mode_entree",
    "provenance", "transport", "prise_en_charge_transport", "motif", "gravite_ccmu", "diagnostic_principal",
    "diagnostics_associes", "actes", "date_sortie", "mode_sortie", "destination", "orientation", "anomalies",
)
_TEXT, _LIST = pa.string(), pa.list_(pa.string())
PARQUET_SCHEMA = pa.schema([
    ("finess", _TEXT), ("ordre", pa.int16()), ("code_postal", _TEXT), ("commune", _TEXT),
    ("date_naissance", pa.date32()), ("sexe", _TEXT), ("date_entree", pa.timestamp("us")),
    ("mode_entree", _TEXT), ("provenance", _TEXT), ("transport", _TEXT), ("prise_en_charge_transport", _TEXT),
    ("motif", _TEXT), ("gravite_ccmu", _TEXT), ("diagnostic_principal", _TEXT), ("diagnostics_associes", _LIST),
    ("actes", _LIST), ("date_sortie", pa.timestamp("us")), ("mode_sortie", _TEXT), ("destination", _TEXT),
    ("orientation", _TEXT), ("anomalies", _LIST),
])
assert tuple(PARQUET_SCHEMA.names) == COLUMNS


class ExportError(Exception):
    """The export could not be built; the message says why, in French."""


# --- what is exported, under which names ------------------------------------------------------

@dataclass(frozen=True)
class ExportPeriod:
    export_day: date  # J, the day of the run (Europe/Paris)

    @property
    def last_day(self) -> date:
        return self.export_day - timedelta(days=1)

    @property
    def start(self) -> date:
        return date(self.last_day.year, 1, 1)

    @property
    def end(self) -> date:  # exclusive
        return self.export_day

    @property
    def year(self) -> int:
        return self.last_day.year

    @property
    def window_start(self) -> date:
        return self.export_day - timedelta(weeks=ACTIVITY_WEEKS)


def file_names(region_code: str, period: ExportPeriod) -> dict[str, str]:
    code = re.sub(r"[^A-Za-z0-9-]+", "_", region_code).strip("_") or "REGION"
    day = f"{period.export_day:%Y%m%d}"
    return {
        "csv": f"rpu_{code}_{period.year}_{day}.csv",
        "parquet": f"rpu_{code}_{period.year}_{day}.parquet",
        "html": f"rapport_{code}_{day}.html",
        "delais": f"delais_{code}_{period.year}_{day}.csv",  # timeliness, the CSV's companion file
    }


def export_statuses(region: Region) -> tuple[str, ...]:
    """Establishment statuses whose data the ARS receives: ``[ars] statuses`` of the region
    file, by default live and inactive (see quality.DEFAULT_STATUSES)."""
    settings = region.extra.get("ars") or {}
    statuses = tuple(settings.get("statuses") or quality.DEFAULT_STATUSES)
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise RegionConfigError(f"[ars] statuses : statut(s) inconnu(s) {unknown} ({', '.join(STATUSES)})")
    return statuses


def export_dir(region: Region) -> Path:
    """Where the built files are kept until delivered: ``<exports_dir>/ars``, by default an
    ``exports/`` folder beside the region file."""
    base = region.exports_dir or ((region.path.parent if region.path else Path.cwd()) / "exports")
    return Path(base) / "ars"


# --- writing the files ---------------------------------------------------------------------------

def _private_file(path: Path):
    """A file readable by its owner alone, written under a temporary name and renamed when
    complete (a reader never sees half a file)."""
    return sends.private_file(path, "wb", buffering=1 << 20)


def _params(period: ExportPeriod, statuses) -> dict:
    return {"start": period.start, "end": period.end, "statuses": list(statuses)}


def write_csv(conn: psycopg.Connection, path: Path, period: ExportPeriod, statuses) -> int:
    """The year's RPU as CSV (';', UTF-8 with BOM), streamed from COPY; returns the row count."""
    with _private_file(path) as out, conn.cursor() as cursor:
        out.write(UTF8_BOM)
        with cursor.copy(query("ars_export_csv"), _params(period, statuses)) as copy:
            for chunk in copy:
                out.write(chunk)
        return cursor.rowcount


def _record_batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    columns = zip(*rows, strict=True)
    return pa.RecordBatch.from_arrays(
        [pa.array(values, type=column.type) for values, column in zip(columns, schema, strict=True)], schema=schema)


def write_parquet(conn: psycopg.Connection, path: Path, period: ExportPeriod, statuses,
                  batch_rows: int = BATCH_ROWS, metadata: dict[str, str] | None = None) -> int:
    """The year's RPU as Parquet, one row group per ``batch_rows`` rows, from a server-side
    cursor; returns the row count. Rows are fetched at most FETCH_ROWS at a time and turned into
    compact Arrow batches at once, so that few Python objects are alive at any time. Times are
    local (Europe/Paris), as in the RPU."""
    schema = PARQUET_SCHEMA.with_metadata({k: str(v) for k, v in (metadata or {}).items()})
    rows_written, group, group_rows = 0, [], 0
    with (_private_file(path) as out,
          conn.cursor(name="ars_export_rows", binary=True) as cursor,
          pq.ParquetWriter(out, schema, compression="snappy") as writer):
        cursor.itersize = min(FETCH_ROWS, batch_rows)
        cursor.execute(query("ars_export_rows"), _params(period, statuses))
        while True:
            rows = cursor.fetchmany(min(FETCH_ROWS, batch_rows - group_rows))
            exhausted = not rows
            if rows:
                group.append(_record_batch(rows, schema))
                group_rows += len(rows)
                del rows
            if group and (group_rows == batch_rows or exhausted):
                writer.write_table(pa.Table.from_batches(group, schema=schema), row_group_size=batch_rows)
                rows_written += group_rows
                group, group_rows = [], 0
            if exhausted:
                break
    return rows_written


@dataclass(frozen=True)
class BuiltFile:
    kind: str  # csv, parquet, html
    file_name: str
    path: Path
    visit_count: int


def build(conn: psycopg.Connection, region: Region, period: ExportPeriod, out_dir: Path,
          *, statuses=None, now: datetime | None = None, batch_rows: int = BATCH_ROWS) -> list[BuiltFile]:
    """Build the CSV, the Parquet and the report of one export day in a new folder of
    ``out_dir``, from one database snapshot. Nothing is journaled here."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ExportError("L'export doit partir d'une connexion sans transaction en cours.")
    statuses = tuple(statuses or export_statuses(region))
    tz = ZoneInfo(region.timezone)
    now = now or datetime.now(tz)
    names = file_names(region.code, period)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    build_dir = out_dir / f"{period.export_day:%Y%m%d}_{now:%H%M%S%f}"
    build_dir.mkdir(mode=0o700)
    paths = {kind: build_dir / name for kind, name in names.items()}
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            csv_rows = write_csv(conn, paths["csv"], period, statuses)
            parquet_rows = write_parquet(conn, paths["parquet"], period, statuses, batch_rows, metadata={
                "region": region.code, "export_day": period.export_day.isoformat(),
                "period_start": period.start.isoformat(), "period_end": period.last_day.isoformat(),
                "timezone": region.timezone})
            data = quality.collect(
                conn, start=period.start, end=period.end, window_start=period.window_start,
                files_since=datetime.combine(period.window_start, time(0), tz),
                files_until=datetime.combine(period.export_day + timedelta(days=1), time(0), tz),
                statuses=statuses)
            delays = timeliness.summary(conn, period.start, period.end, timezone=region.timezone, statuses=statuses)
            recent = timeliness.summary(conn, period.window_start, period.end, timezone=region.timezone,
                                        statuses=statuses)
        total = data.visits.get(None, 0)
        if not csv_rows == parquet_rows == total:  # one snapshot: cannot differ, unless a query is wrong
            raise ExportError(f"Comptes incohérents : CSV {csv_rows}, Parquet {parquet_rows}, rapport {total}.")
        with _private_file(paths["html"]) as out:
            out.write(render_report(data, region, period, now, recent).encode("utf-8"))
        with _private_file(paths["delais"]) as out:
            out.write(timeliness.companion_csv(delays))
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    return [BuiltFile(kind, names[kind], paths[kind], csv_rows) for kind in ("csv", "parquet", "html", "delais")]


# --- journal and delivery -----------------------------------------------------------------------

@dataclass
class ExportOutcome:
    export_day: date
    built: bool  # False: the day's files were already built (the run only delivers them)
    sends: list[sends.Send] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    @property
    def visit_count(self) -> int:
        return max((s.visit_count for s in self.sends), default=0)

    def as_dict(self) -> dict:
        return {"export_day": self.export_day.isoformat(), "built": self.built, "visits": self.visit_count,
                "sends": [{"id": s.id, "file": s.file_name, "status": s.status} for s in self.sends],
                "cancelled": self.cancelled}


def _require_autocommit(conn: psycopg.Connection) -> None:
    # Every journal write must be committed on its own (sends.attempt uses conn.transaction(),
    # which is only a savepoint inside an implicit transaction).
    if not conn.autocommit:
        raise ExportError("Connexion en autocommit attendue pour le journal des envois.")


def export_daily(conn: psycopg.Connection, region: Region, export_day: date, out_dir: Path | None = None,
                 *, force: bool = False, now: datetime | None = None, batch_rows: int = BATCH_ROWS) -> ExportOutcome:
    """Build and journal (status ``built``) the export of ``export_day``, unless it was already
    built: a second run of the same day only delivers what is pending, from the stored files.
    ``force`` rebuilds: the day's sends not yet delivered are cancelled and replaced."""
    _require_autocommit(conn)
    period = ExportPeriod(export_day)
    names = list(file_names(region.code, period).values())
    with conn.cursor(row_factory=class_row(sends.Send)) as cursor:
        cursor.execute("SELECT * FROM send WHERE destination = %s AND kind = %s AND file_name = ANY(%s)"
                       " AND status <> 'cancelled' ORDER BY id", (DESTINATION, KIND, names))
        existing = cursor.fetchall()
    if existing and not force and {s.file_name for s in existing} >= set(names):
        log.info("Export du %s déjà construit (envois %s) : rien à reconstruire.", export_day,
                 ", ".join(str(s.id) for s in existing))
        return ExportOutcome(export_day, built=False, sends=existing)

    built = build(conn, region, period, out_dir or export_dir(region), now=now, batch_rows=batch_rows)
    with conn.transaction():
        cancelled = [row[0] for row in conn.execute(
            "UPDATE send SET status = 'cancelled', remote_answer = 'remplacé par une nouvelle construction'"
            " WHERE destination = %s AND kind = %s AND file_name = ANY(%s) AND status IN ('built', 'failed')"
            " RETURNING id", (DESTINATION, KIND, names))]
        journaled = [
            sends.record_built(conn, destination=DESTINATION, kind=KIND, path=f.path, file_name=f.file_name,
                               visit_count=f.visit_count, period_start=period.start, period_end=period.last_day,
                               year=period.year)
            for f in built
        ]
    log.info("Export du %s construit : %s RPU, envois %s.", export_day, built[0].visit_count,
             ", ".join(str(s.id) for s in journaled))
    return ExportOutcome(export_day, built=True, sends=journaled, cancelled=cancelled)


def deliver(conn: psycopg.Connection, open_session: Callable[[], contextlib.AbstractContextManager],
            folder: str = "", *, server: str = "de l'ARS") -> list[sends.Send]:
    """(Re)try every pending ARS send over one SFTP session. When the server cannot be reached
    at all, every pending send is journaled ``failed`` with the cause (never left silent) and
    :class:`rpu.store.sends.ServerUnreachable` is raised."""
    _require_autocommit(conn)
    return sends.deliver_pending_over(conn, DESTINATION, open_session, folder, server=server)


# --- the HTML report ------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:1.5rem;color:#222;max-width:1400px}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:2px solid #1f5f99;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1rem;margin:.8rem 0 .3rem}
table{border-collapse:collapse;font-size:.82rem;margin:.4rem 0 1rem}
th,td{border:1px solid #ccc;padding:.2rem .4rem;text-align:right;white-space:nowrap}
th{background:#eef2f6}td.nom,th.nom{text-align:left;white-space:normal;min-width:12rem}
tr.region td{font-weight:bold;background:#f6f6f6}
td.ok{background:#c8e6c9}td.moyen{background:#ffe0b2}td.faible{background:#ffcdd2}td.na{color:#888}
.defile{overflow-x:auto}.note{color:#555;font-size:.85rem}
.multiples{display:flex;flex-wrap:wrap;gap:.6rem}.multiples figure{margin:0;border:1px solid #ddd;padding:.3rem}
figcaption{font-size:.8rem}nav a{margin-right:1rem}
.legende span{display:inline-block;padding:0 .5rem;margin-right:.3rem}
"""
_BLUE, _ORANGE, _GREY, _RED = "#1f5f99", "#e07b39", "#999", "#c62828"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _int(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}".replace(".", ",") + "\u00a0%"


def _d(day: date) -> str:
    return f"{day:%d/%m/%Y}"


def _duration(minutes: float | None) -> str:
    if minutes is None:
        return "—"
    minutes = round(minutes)
    return f"{minutes // 60}\u00a0h\u00a0{minutes % 60:02d}"


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" font-size="11">'
            f"<title>{_e(title)}</title>{''.join(body)}</svg>")


def _line_chart(days: list[date], values: list[int], title: str, *, width: int = 900, height: int = 220,
                compact: bool = False) -> str:
    """Daily counts as a line; Mondays as vertical grid lines; days with no visit as red dots."""
    left, right, top, bottom = (34, 6, 6, 16) if compact else (50, 10, 10, 30)
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = _nice_max(max(values, default=0))
    step = plot_w / max(len(days) - 1, 1)

    def x(i: int) -> float:
        return left + i * step

    def y(v: float) -> float:
        return top + plot_h - v / top_value * plot_h

    body = []
    for fraction in (0, 0.5, 1) if compact else (0, 0.25, 0.5, 0.75, 1):
        v = top_value * fraction
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e3e3e3"/>'
                    f'<text x="{left - 4}" y="{y(v) + 4:.1f}" text-anchor="end">{_e(_int(round(v)))}</text>')
    for i, day in enumerate(days):
        if day.weekday() == 0:
            body.append(f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + plot_h}" stroke="#f0f0f0"/>')
            if not compact:
                body.append(f'<text x="{x(i):.1f}" y="{height - 10}" text-anchor="middle">{day:%d/%m}</text>')
    points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    body.append(f'<polyline fill="none" stroke="{_BLUE}" stroke-width="1.6" points="{points}"/>')
    for i, v in enumerate(values):
        if v == 0:
            body.append(f'<circle cx="{x(i):.1f}" cy="{y(0):.1f}" r="2.5" fill="{_RED}"/>')
    return _svg(width, height, title, body)


def _bar_chart(labels: list[str], values: list[int], title: str, *, width: int = 620, unit_total: int | None = None) -> str:
    """Horizontal bars, one per label, with the count and the share of ``unit_total``."""
    row, left, right = 22, 130, 150
    height = row * len(labels) + 8
    top_value = max(values, default=0) or 1
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 4 + i * row
        bar = (width - left - right) * value / top_value
        share = f" ({_pct(value / unit_total)})" if unit_total else ""
        body.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_e(label)}</text>'
                    f'<rect x="{left}" y="{y + 3}" width="{bar:.1f}" height="{row - 6}" fill="{_BLUE}"/>'
                    f'<text x="{left + bar + 4:.1f}" y="{y + 14}">{_e(_int(value) + share)}</text>')
    return _svg(width, height, title, body)


def _pyramid(male: list[int], female: list[int], title: str, *, width: int = 640) -> str:
    row, centre_w = 20, 90
    bands = len(quality.AGE_BANDS)
    height = row * bands + 30
    half = (width - centre_w) / 2 - 60
    top_value = max(male + female, default=0) or 1
    mid_left, mid_right = (width - centre_w) / 2, (width + centre_w) / 2
    body = [f'<text x="{mid_left - 4:.0f}" y="14" text-anchor="end" font-weight="bold">Hommes</text>',
            f'<text x="{mid_right + 4:.0f}" y="14" font-weight="bold">Femmes</text>']
    for i, label in enumerate(quality.AGE_BANDS):
        y = 22 + (bands - 1 - i) * row  # the oldest at the top
        m, f = male[i], female[i]
        wm, wf = half * m / top_value, half * f / top_value
        body.append(
            f'<text x="{width / 2:.0f}" y="{y + 13}" text-anchor="middle">{_e(label)}</text>'
            f'<rect x="{mid_left - wm:.1f}" y="{y + 2}" width="{wm:.1f}" height="{row - 4}" fill="{_BLUE}"/>'
            f'<text x="{mid_left - wm - 4:.1f}" y="{y + 13}" text-anchor="end">{_e(_int(m))}</text>'
            f'<rect x="{mid_right:.1f}" y="{y + 2}" width="{wf:.1f}" height="{row - 4}" fill="{_ORANGE}"/>'
            f'<text x="{mid_right + wf + 4:.1f}" y="{y + 13}">{_e(_int(f))}</text>')
    return _svg(width, height, title, body)


def _column_chart(labels: list[str], values: list[int], title: str, *, width: int = 720, height: int = 240) -> str:
    left, bottom, top = 50, 30, 20
    plot_h = height - bottom - top
    top_value = _nice_max(max(values, default=0))
    slot = (width - left - 10) / max(len(labels), 1)
    body = []
    for fraction in (0, 0.5, 1):
        y = top + plot_h * (1 - fraction)
        body.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                    f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_e(_int(round(top_value * fraction)))}</text>')
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / top_value
        x = left + i * slot + slot * 0.15
        body.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" fill="{_BLUE}"/>'
                    f'<text x="{x + slot * 0.35:.1f}" y="{top + plot_h - h - 4:.1f}" text-anchor="middle">{_e(_int(value))}</text>'
                    f'<text x="{x + slot * 0.35:.1f}" y="{height - 12}" text-anchor="middle">{_e(label)}</text>')
    return _svg(width, height, title, body)


def _quality_class(share: float | None) -> str:
    if share is None:
        return "na"
    return "ok" if share >= quality.TARGET else "moyen" if share >= 0.6 else "faible"


def _name(establishment: quality.Establishment) -> str:
    return f"{establishment.name} ({establishment.finess}" + (
        f"/{establishment.ordre})" if establishment.ordre else ")")


def _rows(data: ReportData) -> list[tuple[str, quality.Key | None, bool]]:
    """(label, key, is_region): the region first, then each establishment of the scope."""
    return [("Région", None, True)] + [(_name(e), e.key, False) for e in data.establishments]


def _quality_table(data: ReportData, measure: str) -> str:
    head = "".join(f'<th title="{_e(rule.denominator)}">{_e(rule.name)}</th>' for rule in FIELDS)
    lines = [f'<div class="defile"><table><thead><tr><th class="nom">Établissement</th><th>RPU</th>{head}</tr></thead><tbody>']
    for label, key, is_region in _rows(data):
        values = data.quality.get(key, {})
        cells = []
        for rule in FIELDS:
            indicator = values.get(rule.name)
            share = getattr(indicator, measure) if indicator else None
            count = (indicator.filled if measure == "exhaustivite" else indicator.valid) if indicator else 0
            tip = f"{_int(count)} / {_int(indicator.denominator)}" if indicator and indicator.denominator else "aucun RPU concerné"
            cells.append(f'<td class="{_quality_class(share)}" title="{_e(tip)}">{_e(_pct(share))}</td>')
        css = ' class="region"' if is_region else ""
        lines.append(f'<tr{css}><td class="nom">{_e(label)}</td><td>{_e(_int(data.visits.get(key, 0)))}</td>'
                     f"{''.join(cells)}</tr>")
    lines.append("</tbody></table></div>")
    return "".join(lines)


def _section_activity(data: ReportData) -> str:
    days = [data.window_start + timedelta(days=i) for i in range((data.end - data.window_start).days)]
    total = [sum(data.daily.get(e.key, {}).get(day, 0) for e in data.establishments) for day in days]
    out = ['<section id="activite"><h2>Activité quotidienne : RPU par jour d\'entrée, 8 dernières semaines</h2>',
           f'<p class="note">Du {_d(days[0])} au {_d(days[-1])}. Les lignes verticales marquent les lundis ; '
           "un point rouge signale un jour sans aucun RPU (rupture du flux à vérifier avec l'établissement). "
           "Les derniers jours peuvent encore être complétés : chaque fichier renvoie les 7 derniers jours.</p>",
           "<h3>Région</h3>", _line_chart(days, total, "RPU par jour, région"), '<div class="multiples">']
    for establishment in data.establishments:
        values = [data.daily.get(establishment.key, {}).get(day, 0) for day in days]
        mean = sum(values) / len(values) if values else 0
        out.append(f"<figure>{_line_chart(days, values, 'RPU par jour, ' + _name(establishment), width=300, height=110, compact=True)}"
                   f"<figcaption>{_e(_name(establishment))} — moyenne {_e(f'{mean:.0f}')} RPU/jour, "
                   f"maximum {_e(_int(max(values, default=0)))}</figcaption></figure>")
    out.append("</div></section>")
    return "".join(out)


def _section_quality(data: ReportData) -> str:
    definitions = "".join(
        f"<tr><td class=\"nom\">{_e(rule.name)}</td><td class=\"nom\">{_e(rule.denominator)}</td>"
        f"<td class=\"nom\">{_e(rule.validity)}</td>"
        f"<td>{_e(_int(data.quality.get(None, {}).get(rule.name, quality.Indicator(rule.name, 0, 0, 0)).denominator))}</td></tr>"
        for rule in FIELDS)
    return (
        '<section id="qualite"><h2>Qualité des RPU (indicateurs FEDORU) — depuis le 1<sup>er</sup> janvier</h2>'
        '<p class="note">Exhaustivité : part des RPU où le champ est renseigné. Exploitabilité : part des RPU '
        "où il est renseigné <em>et</em> valide. Objectif : 80 % pour chaque champ. "
        '<span class="legende"><span style="background:#c8e6c9">≥ 80 %</span>'
        '<span style="background:#ffe0b2">60 à 80 %</span><span style="background:#ffcdd2">&lt; 60 %</span></span> '
        "Le survol d'une cellule donne le numérateur et le dénominateur.</p>"
        '<h3 id="exhaustivite">Exhaustivité</h3>' + _quality_table(data, "exhaustivite")
        + '<h3 id="exploitabilite">Exploitabilité</h3>' + _quality_table(data, "exploitabilite")
        + '<h3 id="definitions">Définitions (dénominateurs FEDORU)</h3>'
        '<table><thead><tr><th class="nom">Champ</th><th class="nom">Dénominateur</th>'
        '<th class="nom">Valeur valide</th><th>Dénominateur régional</th></tr></thead>'
        f"<tbody>{definitions}</tbody></table>"
        '<p class="note">Une date de naissance ou de sortie illisible est comptée comme non renseignée '
        "(elle est signalée dans la colonne « anomalies » de l'export).</p></section>")


def _section_ccmu(data: ReportData) -> str:
    classes = list(quality.CCMU_CLASSES)
    region = data.ccmu.get(None, {})
    total = data.visits.get(None, 0)
    labels = [f"CCMU {c}" for c in classes] + ["non renseignée", "hors nomenclature"]
    values = [region.get(c, 0) for c in classes] + [region.get("", 0), region.get("?", 0)]
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    lines = []
    for label, key, is_region in _rows(data):
        counts = data.ccmu.get(key, {})
        visits = data.visits.get(key, 0)
        cells = "".join(
            f"<td>{_e(_pct(counts.get(c, 0) / visits if visits else None))}</td>" for c in classes + ["", "?"])
        css = ' class="region"' if is_region else ""
        lines.append(f'<tr{css}><td class="nom">{_e(label)}</td><td>{_e(_int(visits))}</td>{cells}</tr>')
    return ('<section id="ccmu"><h2>Gravité : répartition CCMU — depuis le 1<sup>er</sup> janvier</h2>'
            + _bar_chart(labels, values, "RPU par classe CCMU, région", unit_total=total or None)
            + f'<div class="defile"><table><thead><tr><th class="nom">Établissement</th><th>RPU</th>{head}</tr></thead>'
            f"<tbody>{''.join(lines)}</tbody></table></div></section>")


def _section_ages(data: ReportData) -> str:
    bands = range(len(quality.AGE_BANDS))
    male = [data.ages.get(("M", b), 0) for b in bands]
    female = [data.ages.get(("F", b), 0) for b in bands]
    other = [data.ages.get(("I", b), 0) for b in bands]
    unknown_age = sum(count for (_sexe, band), count in data.ages.items() if band is None)
    rows = "".join(f"<tr><td class=\"nom\">{_e(label)}</td><td>{_e(_int(male[b]))}</td><td>{_e(_int(female[b]))}</td>"
                   f"<td>{_e(_int(other[b]))}</td></tr>" for b, label in enumerate(quality.AGE_BANDS))
    return ('<section id="ages"><h2>Pyramide des âges (âge à l\'entrée) — depuis le 1<sup>er</sup> janvier</h2>'
            + _pyramid(male, female, "Pyramide des âges des patients, région")
            + f'<p class="note">Sexe indéterminé ou non renseigné : {_e(_int(sum(other)))} RPU (hors pyramide). '
            f"Âge inconnu ou hors 0–120 ans : {_e(_int(unknown_age))} RPU.</p>"
            '<table><thead><tr><th class="nom">Tranche d\'âge</th><th>Hommes</th><th>Femmes</th>'
            f"<th>Indéterminé</th></tr></thead><tbody>{rows}</tbody></table></section>")


def _section_stays(data: ReportData) -> str:
    region = data.stays.get(None) or quality.StaySummary(0, 0, 0, None, None, (0,) * len(quality.STAY_CLASSES))
    lines = []
    for label, key, is_region in _rows(data):
        s = data.stays.get(key) or quality.StaySummary(0, 0, 0, None, None, ())
        css = ' class="region"' if is_region else ""
        long_stays = sum(s.bins[3:]) if s.bins else 0  # 4 h and more
        lines.append(f'<tr{css}><td class="nom">{_e(label)}</td><td>{_e(_int(s.visits))}</td>'
                     f"<td>{_e(_int(s.with_sortie))}</td><td>{_e(_int(s.kept))}</td>"
                     f"<td>{_e(_duration(s.median_minutes))}</td><td>{_e(_duration(s.p90_minutes))}</td>"
                     f"<td>{_e(_pct(long_stays / s.kept if s.kept else None))}</td></tr>")
    return ('<section id="durees"><h2>Durée de passage — depuis le 1<sup>er</sup> janvier</h2>'
            '<p class="note">Durée = SORTIE − ENTRÉE, retenue si elle est de plus de 0 et d\'au plus 72 heures '
            "(définition FEDORU).</p>"
            + _column_chart(list(quality.STAY_CLASSES), list(region.bins), "RPU par classe de durée de passage, région")
            + '<div class="defile"><table><thead><tr><th class="nom">Établissement</th><th>RPU</th>'
            "<th>avec sortie</th><th>durée retenue</th><th>médiane</th><th>90<sup>e</sup> centile</th>"
            f"<th>4 h et plus</th></tr></thead><tbody>{''.join(lines)}</tbody></table></div></section>")


def _section_files(data: ReportData, tz: ZoneInfo) -> str:
    labels = {"loaded": "chargés", "duplicate": "doublons", "superseded": "dépassés", "held": "en attente",
              "rejected": "rejetés", "revoked": "révoqués", "loading": "en cours"}
    head = "".join(f"<th>{_e(labels[s])}</th>" for s in quality.FILE_STATUSES)
    lines = []
    for establishment in data.establishments:
        counts = data.files.get(establishment.key) or quality.FileCounts()
        cells = "".join(
            ('<td class="faible">' if s == "rejected" and counts.by_status.get(s) else "<td>")
            + f"{_e(_int(counts.by_status.get(s, 0)))}</td>" for s in quality.FILE_STATUSES)
        last = counts.last_received_at.astimezone(tz).strftime("%d/%m/%Y %H:%M") if counts.last_received_at else "aucun"
        total_css = ' class="faible"' if not counts.total else ""
        lines.append(f'<tr><td class="nom">{_e(_name(establishment))}</td><td{total_css}>{_e(_int(counts.total))}</td>'
                     f"{cells}<td>{_e(_int(counts.records_rejected))}</td><td>{_e(last)}</td></tr>")
    return ('<section id="fichiers"><h2>Fichiers reçus des établissements — 8 dernières semaines</h2>'
            f'<p class="note">Depuis le {_d(data.window_start)}. Un doublon est un fichier identique à un fichier '
            "déjà reçu ; un fichier dépassé est une extraction plus ancienne que celle déjà appliquée. "
            "« RPU rejetés » : passages refusés dans les fichiers chargés (date d'entrée absente ou illisible).</p>"
            f'<div class="defile"><table><thead><tr><th class="nom">Établissement</th><th>reçus</th>{head}'
            f"<th>RPU rejetés</th><th>dernier reçu</th></tr></thead><tbody>{''.join(lines)}</tbody></table></div></section>")


_STATUS_FR = {"onboarding": "en intégration", "parallel": "en parallèle", "live": "en production",
              "inactive": "inactif"}


def render_report(data: ReportData, region: Region, period: ExportPeriod, generated_at: datetime,
                  delays: timeliness.TimelinessData | None = None) -> str:
    """The report: one self-contained HTML file (inline CSS and SVG, no script, nothing fetched)."""
    tz = ZoneInfo(region.timezone)
    title = f"RPU {region.name} — export du {_d(period.export_day)}"
    excluded = ""
    if data.excluded:
        names = ", ".join(f"{_name(e)} [{_STATUS_FR.get(e.status, e.status)}]" for e in data.excluded)
        exported = sorted({_STATUS_FR.get(e.status, e.status) for e in data.establishments}) or ["—"]
        excluded = (f'<p class="note">Établissements hors export (leur statut) : {_e(names)}. '
                    f"Statuts exportés : {_e(', '.join(exported))}.</p>")
    return "".join([
        '<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p>Période exportée : du {_d(period.start)} au {_d(period.last_day)} inclus (date d\'entrée), '
        f"<strong>{_e(_int(data.visits.get(None, 0)))} RPU</strong>, {_e(plural(len(data.establishments), 'établissement'))}. "
        "Fichiers joints : CSV (séparateur « ; », UTF-8) et Parquet, mêmes lignes ; délais de transmission par "
        "établissement et par jour : <code>delais_*.csv</code>.</p>",
        excluded,
        '<nav><a href="#activite">Activité</a><a href="#qualite">Qualité</a><a href="#ccmu">CCMU</a>'
        '<a href="#ages">Âges</a><a href="#durees">Durées</a><a href="#fichiers">Fichiers reçus</a>'
        + ('<a href="#delais">Délais</a>' if delays else "") + "</nav>",
        _section_activity(data), _section_quality(data), _section_ccmu(data), _section_ages(data),
        _section_stays(data), _section_files(data, tz),
        _timeliness_section(delays, _rows(data)) if delays else "",
        f'<footer class="note"><p>Produit le {generated_at.astimezone(tz):%d/%m/%Y à %H:%M} par le concentrateur RPU '
        f"régional : {_e(region.name)} ({_e(region.code)}). Heures locales ({_e(region.timezone)}).</p></footer>",
        "</body></html>\n",
    ])
