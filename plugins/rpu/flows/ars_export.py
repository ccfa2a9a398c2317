"""The daily export of the regional database for the ARS: the RPU of the year as CSV (for a
French spreadsheet) and Parquet, with an HTML quality and activity report (``rpu.flows.ars_report``)
and the timeliness companion CSV; journaled as sends and delivered to the ARS's SFTP folder.

No Airflow here (``rpu.airflow.ars_tasks`` is the glue). The export day J is the run's date: the files
hold the visits from 1 January of the year of J-1 up to J-1 included (at 06:00 the
establishments have sent J-1, rpu-format.md §1; on 1 January the export is the whole previous
year). The CSV is streamed by COPY, the Parquet by a server-side cursor in row groups, the report
from SQL aggregates: memory stays flat whatever the size of the year. The three files are built
in one read-only REPEATABLE READ snapshot, so they describe the same database state.
"""

from __future__ import annotations

import contextlib
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
from rpu.flows import ars_report
from rpu.store import quality, sends, timeliness
from rpu.store.db import query

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
            data = ars_report.collect(
                conn, start=period.start, end=period.end, window_start=period.window_start,
                files_since=datetime.combine(period.window_start, time(0), tz),
                files_until=datetime.combine(period.export_day + timedelta(days=1), time(0), tz),
                statuses=statuses)
            delays = timeliness.summary(conn, period.start, period.end, timezone=region.timezone, statuses=statuses)
            recent = timeliness.summary(conn, period.window_start, period.end, timezone=region.timezone,
                                        statuses=statuses)
        total = data.visits()
        if not csv_rows == parquet_rows == total:  # one snapshot: cannot differ, unless a query is wrong
            raise ExportError(f"Comptes incohérents : CSV {csv_rows}, Parquet {parquet_rows}, rapport {total}.")
        with _private_file(paths["html"]) as out:
            out.write(ars_report.render_report(data, region, now, recent).encode("utf-8"))
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
