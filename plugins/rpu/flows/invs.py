"""The daily OSCOUR files for Santé publique France (ex-InVS, OSCOUR network): ``rpu_invs_daily``.

Every morning, for each **live** establishment that had files loaded since it was last sent,
one OSCOUR file is rebuilt from the regional database: it covers the union of those files'
periods (earliest DATEDEBUT → latest DATEFIN), with the region's current data for that
period, EXTRACT = the build time. Santé publique France applies it as every OSCOUR file is
applied: it cancels and replaces what it holds for that establishment and period.

Which files a send carries is journaled (``send.covers_files``): a file carried by a send that
is sent, or built/failed and still to be delivered, is never carried again, so a second run
on the same day builds nothing, and a failed delivery is retried from its stored file, never
rebuilt. Establishments in ``onboarding``, ``parallel`` (an older concentrator forwards them)
or ``inactive`` are never sent; files loaded before an establishment went live are not sent
either (the older concentrator forwarded them).

``build_oscour`` (one establishment, one period, to one file) also serves ``rpu build oscour``
and the replays.
"""

from __future__ import annotations

import logging
import os
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from rpu.formats import schemas
from rpu.formats.model import Header
from rpu.formats.oscour_writer import write_oscour
from rpu.store import sends
from rpu.store.db import query
from rpu.store.extract import visits_for

log = logging.getLogger(__name__)

DESTINATION = "invs"
# With the establishment, serialises its daily builds: two runs at once would otherwise both find
# the same files not yet carried.
_BUILD_LOCK = 0x5250


@dataclass(frozen=True)
class DueEstablishment:
    """A live establishment with files loaded that no invs send carries yet."""

    finess: str
    ordre: int
    file_ids: list[int]
    period_start: date
    period_end: date


def local_now(timezone: str = "Europe/Paris") -> datetime:
    """The wall-clock time of the region, naive, to the second (OSCOUR times are local)."""
    return datetime.now(ZoneInfo(timezone)).replace(tzinfo=None, microsecond=0)


def oscour_file_name(finess: str, ordre: int, when: datetime) -> str:
    """``RPU_<FINESS>_<ORDRE>_<yyyymmddHHMMSS>.xml``."""
    return f"RPU_{finess}_{ordre}_{when:%Y%m%d%H%M%S}.xml"


def build_oscour(conn: psycopg.Connection, finess: str, ordre: int, start: date, end: date,
                 out_path: str | os.PathLike, *, extract: datetime | None = None) -> int:
    """Write the OSCOUR file of one establishment for [start, end] from the regional database
    and return its number of visits.

    Header: DATEDEBUT/DATEFIN = the period, EXTRACT = ``extract`` (default: now, Europe/Paris).
    The file is written under a temporary name beside ``out_path``, owner-only, checked
    against the OSCOUR schema (``rpu.formats.schemas``), then renamed: ``out_path`` is never seen
    half-written nor invalid. On error nothing is left behind."""
    if end < start:
        raise ValueError(f"période inversée : {start} → {end}")
    header = Header("OSCOUR", finess, ordre, extract or local_now(), start, end)
    target = Path(out_path)
    temporary = target.with_name(f".{target.name}.part")
    try:
        visits = visits_for(conn, finess, ordre, start, end)
        with closing(visits), sends.open_owner_only(temporary, "wb", buffering=1 << 20) as stream:
            count = write_oscour(stream, header, visits)
            stream.flush()
            os.fsync(stream.fileno())
        schemas.check(temporary, schemas.OSCOUR)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


def due_establishments(conn: psycopg.Connection, finess: str | None = None,
                       ordre: int | None = None) -> list[DueEstablishment]:
    """Every live establishment with files no send carries yet (or only the one named)."""
    with conn.transaction():
        rows = conn.execute(query("invs_due_files"), {"finess": finess, "ordre": ordre}).fetchall()
    return [DueEstablishment(finess, ordre, list(ids), start, end) for finess, ordre, ids, start, end in rows]


@dataclass
class DailyOutcome:
    built: list[sends.Send]
    failed: list[str]  # "FINESS/ORDRE" of the establishments whose file could not be built


def build_daily(conn: psycopg.Connection, outbox: str | os.PathLike, *, timezone: str = "Europe/Paris",
                now: datetime | None = None) -> DailyOutcome:
    """Build and journal (status ``built``) the day's OSCOUR file of every live establishment
    with files not yet carried; return the new sends (none when there is nothing new).

    Each establishment is built and journaled in its own transaction: a failure on one leaves
    nothing of it behind (no journal row, no file; the error is logged), does not stop the
    others, and is listed in ``failed``: its files stay due for the next run. (The DAG builds
    the establishments as separate tasks, with ``build_establishment``.)"""
    outcome = DailyOutcome([], [])
    for due in due_establishments(conn):
        try:
            send = build_establishment(conn, due.finess, due.ordre, outbox, timezone=timezone, now=now)
        except Exception:  # one establishment's failure must not stop the others
            log.exception("InVS : construction impossible pour %s/%s", due.finess, due.ordre)
            outcome.failed.append(f"{due.finess}/{due.ordre}")
            continue
        if send is not None:
            outcome.built.append(send)
    return outcome


def build_establishment(conn: psycopg.Connection, finess: str, ordre: int, outbox: str | os.PathLike, *,
                        timezone: str = "Europe/Paris", now: datetime | None = None) -> sends.Send | None:
    """Build and journal one establishment's file if it still has files no send carries (None
    when not, e.g. another run built it meanwhile). One build of an establishment at a time:
    two runs at once would otherwise both find the same files not yet carried."""
    outbox = Path(outbox)
    outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_BUILD_LOCK, f"{finess}/{ordre}"))
        due = due_establishments(conn, finess, ordre)
        if not due:
            return None
        return _build_one(conn, due[0], outbox, now or local_now(timezone))


def _build_one(conn: psycopg.Connection, due: DueEstablishment, outbox: Path, when: datetime) -> sends.Send:
    path = outbox / oscour_file_name(due.finess, due.ordre, when)
    while path.exists():  # two builds of one establishment within a second (a replay, a re-run)
        when += timedelta(seconds=1)
        path = outbox / oscour_file_name(due.finess, due.ordre, when)
    try:
        with conn.transaction():
            count = build_oscour(conn, due.finess, due.ordre, due.period_start, due.period_end, path, extract=when)
            send = sends.record_built(
                conn, destination=DESTINATION, path=path, visit_count=count, kind="daily", finess=due.finess,
                ordre=due.ordre, period_start=due.period_start, period_end=due.period_end,
                covers_files=due.file_ids,
            )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    log.info("InVS : %s construit (%s passages, %s → %s, fichiers reçus %s)", send.file_name, count,
             due.period_start, due.period_end, due.file_ids)
    return send


def deliver(conn: psycopg.Connection, sftp, folder: str = "") -> list[sends.Send]:
    """Deliver every pending invs send (built or failed, oldest first) to Santé publique
    France's SFTP folder (temporary name, then rename); return them in their new state."""
    if folder:
        sends.ensure_folder(sftp, folder)
    return sends.deliver_pending(conn, DESTINATION, sends.SftpOutbox(sftp, folder))


ensure_folder = sends.ensure_folder  # create an SFTP folder (and its parents) when missing
