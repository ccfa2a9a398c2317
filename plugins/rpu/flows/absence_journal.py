"""The absence journal in the database: the establishments watched, their episodes of absence,
the days their files were loaded and covered, their visits per day. Under both the monitor
(``flows/absence.py``, its e-mails in ``flows/absence_mail.py``) and the replays
(``flows/replay.py``), which close the episodes they cover.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import psycopg
from psycopg.rows import class_row

from rpu.flows.days import days_between
from rpu.store.db import query

REPLAY_DAG_ID = "rpu_invs_replay"
WINDOW_DAYS = 7          # each file re-sends J-1 and the six days before
COLLAPSE_WEEKS = 8       # history of the same weekday for the flow collapse check
COLLAPSE_MIN_WEEKS = 4   # fewer weeks with visits than this: no judgement
COLLAPSE_RATIO = 0.5     # under half the usual level
CATCH_UP_DAYS = 31       # days the monitor did not run are judged this far back at most

STATUS_FR = {"onboarding": "en intégration", "parallel": "en parallèle", "live": "en production",
             "inactive": "inactif"}


@dataclass
class Watched:
    finess: str
    ordre: int
    name: str
    status: str
    it_contacts: list[str]
    ars_contacts: list[str]

    @property
    def label(self) -> str:
        return f"{self.name} (FINESS {self.finess}, ORDRE {self.ordre}, {STATUS_FR.get(self.status, self.status)})"


@dataclass
class Episode:
    id: int
    finess: str
    ordre: int
    first_missing_day: date
    last_missing_day: date
    days_missing: int
    state: str
    alerted_at: datetime | None
    resumed_on: date | None
    replay_start: date | None
    replay_end: date | None
    end_notified_at: datetime | None
    closed_at: datetime | None
    replay_send_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def lost_visit_days(self) -> tuple[date, date]:
        """The visit dates a missing day costs: D-1 for each missing day D."""
        return self.first_missing_day - timedelta(days=1), self.last_missing_day - timedelta(days=1)


@dataclass
class FlowWarning:
    finess: str
    ordre: int
    day: date           # the visit date (J-1)
    visits: int
    usual: float        # median of the same weekday over the weeks before



@contextlib.contextmanager
def transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A real transaction, committed at the end of the block (psycopg would make a savepoint of
    it if earlier reads had left a transaction open)."""
    conn.commit()
    with conn.transaction():
        yield


def lost_days(episode: Episode) -> list[date]:
    """The visit dates an open absence has already lost: a missing day D costs the visits of
    D-1, and the file sent the day after the last missing day still brings its 7 days back
    (the last missing day's J-1 and the six days before); what lies before is lost for good
    unless a file covering it is sent (then a replay)."""
    window_start = episode.last_missing_day - timedelta(days=WINDOW_DAYS - 1)
    first_lost = episode.first_missing_day - timedelta(days=1)
    return days_between(first_lost, window_start - timedelta(days=1)) if first_lost < window_start else []



# --- reading the journal ---------------------------------------------------------------------

def watched(conn: psycopg.Connection) -> list[Watched]:
    with conn.cursor(row_factory=class_row(Watched)) as cursor:
        return cursor.execute(query("absence_watched")).fetchall()


def loaded_days(conn: psycopg.Connection, finess: str, ordre: int, first: date, last: date, tz: str) -> set[date]:
    rows = conn.execute(query("absence_loaded_days"),
                        {"finess": finess, "ordre": ordre, "first_day": first, "last_day": last, "tz": tz})
    return {row[0] for row in rows}


def last_loaded_day(conn: psycopg.Connection, finess: str, ordre: int, before: date, tz: str) -> date | None:
    """The last local day before ``before`` on which a file of the establishment was loaded."""
    (day,) = conn.execute(query("absence_last_loaded_day"),
                          {"finess": finess, "ordre": ordre, "before": before, "tz": tz}).fetchone()
    return day


def covered_days(conn: psycopg.Connection, finess: str, ordre: int, start: date, end: date, *, tz: str,
                 received_from: date | None = None, received_to: date | None = None) -> set[date]:
    """The visit dates of [start, end] covered by the period of a file loaded (received between
    the two local days, inclusive; unbounded when not given)."""
    rows = conn.execute(query("absence_coverage"), {
        "finess": finess, "ordre": ordre, "period_start": start, "period_end": end, "tz": tz,
        "received_from": received_from or "-infinity", "received_to": received_to or date(9999, 12, 30),
    })
    covered: set[date] = set()
    for period_start, period_end in rows:
        covered.update(days_between(max(period_start, start), min(period_end, end)))
    return covered


def visits_per_day(conn: psycopg.Connection, finess: str, ordre: int, first: date, last: date) -> dict[date, int]:
    """Visits per ENTREE date, every day of [first, last] present (0 when none)."""
    counts = {day: 0 for day in days_between(first, last)}
    for day, visits in conn.execute(query("absence_visits_per_day"),
                                    {"finess": finess, "ordre": ordre, "first_day": first, "last_day": last}):
        counts[day] = visits
    return counts


def open_episode(conn: psycopg.Connection, finess: str, ordre: int) -> Episode | None:
    with conn.cursor(row_factory=class_row(Episode)) as cursor:
        return cursor.execute("SELECT * FROM absence_episode WHERE finess = %s AND ordre = %s AND state = 'open'"
                              " FOR UPDATE", (finess, ordre)).fetchone()


def episodes(conn: psycopg.Connection, *, state: str | None = None, finess: str | None = None) -> list[Episode]:
    sql, params = "SELECT * FROM absence_episode WHERE true", []
    if state:
        sql += " AND state = %s"
        params.append(state)
    if finess:
        sql += " AND finess = %s"
        params.append(finess)
    with conn.cursor(row_factory=class_row(Episode)) as cursor:
        return cursor.execute(sql + " ORDER BY id", params).fetchall()


def episode_by_id(conn, episode_id: int) -> Episode:
    with conn.cursor(row_factory=class_row(Episode)) as cursor:
        return cursor.execute("SELECT * FROM absence_episode WHERE id = %s", (episode_id,)).fetchone()


def close_replayed(conn: psycopg.Connection, now: datetime) -> list[tuple]:
    """Episodes waiting for a replay that a delivered replay now covers become ``replayed``.
    Returns (episode id, finess, ordre, replay start, replay end, send id) rows. Commits."""
    with transaction(conn):
        return conn.execute(query("absence_close_replayed"), {"now": now}).fetchall()

