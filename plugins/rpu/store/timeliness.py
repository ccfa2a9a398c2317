"""Timeliness: how fast each visit reaches the concentrator, then Santé publique France.

For each visit: **arrival** = the reception of the first file that held it − its exit (SORTIE,
else ENTREE), and **delivery** = its first delivery to Santé publique France − that reception.
Both are stored in ``visit_timeliness`` as they happen, so that no file is ever re-read:

- at load, :func:`record_reception` (called by the loader inside the file's transaction) adds
  the visits the file supplied (a visit already known keeps its first reception) and forgets
  those no longer held over the days it brought;
- at a revocation, :func:`record_revocation` (called by ``revoke_file`` in its transaction) does
  the same on each day the revoked file ruled, for the file whose visits are back (or none);
- at send, :func:`record_delivery` (called when an ``invs`` send is marked sent, in the same
  transaction) stamps the visits of that send's establishment and period not yet delivered.

:func:`summary` aggregates them per establishment and day or week (median, share within 24 h
and 48 h), for the establishment report, the ARS report and the ARS export's companion CSV.
No Airflow here.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg

from rpu.store.db import query

Key = tuple[str, int]


def record_reception(conn: psycopg.Connection, file_id: int) -> None:
    """Record the visits a file just loaded supplied (its rpu rows), over the days it brought
    (``file_day``, visits dated outside its period included). Called by the loader in the
    file's transaction, before its journal row is closed."""
    row = conn.execute(
        "SELECT f.received_at, d.finess, d.ordre, min(d.day), max(d.day) + 1 FROM received_file f"
        " JOIN file_day d ON d.received_file_id = f.id WHERE f.id = %s"
        " GROUP BY f.received_at, d.finess, d.ordre", (file_id,)).fetchone()
    if row is None:  # a file that brought no day
        return
    received_at, finess, ordre, start, end = row
    _record(conn, file_id, received_at, finess, ordre, start, end)


def record_revocation(conn: psycopg.Connection, finess: str, ordre: int, days: list[date],
                      restored: dict[date, int]) -> None:
    """After a revocation: on each of ``days`` (those the revoked file ruled), the visits of the
    file now back (``restored``) are recorded as if it had just been loaded (a visit already
    known keeps its first reception), and the revoked file's visits no longer held are
    forgotten (a day no file brings again is emptied); a visit back that had been forgotten gets
    again the first delivery that carried its file. Called by ``revoke_file`` in its
    transaction, after the visits are restored."""
    received = dict(conn.execute("SELECT id, received_at FROM received_file WHERE id = ANY(%s)",
                                 (sorted(set(restored.values())),)).fetchall())
    for day in days:
        file_id = restored.get(day)
        start, end = day, day + timedelta(days=1)
        _record(conn, file_id, received.get(file_id), finess, ordre, start, end)
        if file_id is not None:  # the visits back that the revoked file had dropped: their delivery too
            conn.execute(query("timeliness_restamp_restored"),
                         {"file_id": file_id, "finess": finess, "ordre": ordre, "start": start, "end": end})


def _record(conn: psycopg.Connection, file_id: int | None, received_at, finess: str, ordre: int, start: date,
            end: date) -> None:
    """Make visit_timeliness hold, on ENTREE days [start, end), what ``rpu`` holds: the visits of
    ``file_id`` recorded, those no longer held forgotten (``file_id`` None: no file supplies them)."""
    bounds = {"file_id": file_id, "received_at": received_at, "finess": finess, "ordre": ordre, "start": start,
              "end": end}
    if not conn.execute(query("timeliness_days_known"), bounds).fetchone()[0]:
        # Days never recorded (a first file, a backfill): no row to meet nor to forget, and a
        # plain insert costs a third less than a speculative one. Loads of an establishment are
        # serialised (the loader's advisory lock), so no other load can record these days meanwhile.
        if file_id is not None:
            reception = query("timeliness_record_reception")
            conn.execute(reception[:reception.index("ON CONFLICT")], bounds)
        return
    if file_id is not None:
        conn.execute(query("timeliness_record_reception"), bounds)
    conn.execute(query("timeliness_forget_gone"), bounds)


def record_delivery(conn: psycopg.Connection, send_id: int) -> int:
    """Stamp the visits carried by a delivered ``invs`` send (those no earlier delivery carried);
    returns how many. Any other send changes nothing."""
    return conn.execute(query("timeliness_record_delivery"), {"send_id": send_id}).rowcount


@dataclass(frozen=True)
class Timeliness:
    """Timeliness of a set of visits (hours; shares from 0 to 1; None when there is no visit)."""

    visits: int
    arrival_median_h: float | None
    arrival_24h: float | None
    arrival_48h: float | None
    delivered: int  # visits delivered to Santé publique France
    delivery_median_h: float | None
    delivery_24h: float | None
    delivery_48h: float | None


@dataclass
class TimelinessData:
    """Per (establishment or None for all) and (bucket day, or None for the whole period)."""

    start: date
    end: date  # exclusive
    bucket: str  # 'day' or 'week'
    rows: dict[tuple[Key | None, date | None], Timeliness]

    def of(self, key: Key | None, bucket: date | None = None) -> Timeliness | None:
        return self.rows.get((key, bucket))

    def buckets(self) -> list[date]:
        first = self.start if self.bucket == "day" else self.start - timedelta(days=self.start.weekday())
        step = timedelta(days=1 if self.bucket == "day" else 7)
        out, day = [], first
        while day < self.end:
            out.append(day)
            day += step
        return out


def _float(value) -> float | None:
    return None if value is None else float(value)


def summary(conn: psycopg.Connection, start: date, end: date, *, timezone: str, statuses, bucket: str = "day",
            finess: str | None = None, ordre: int = 0) -> TimelinessData:
    """Timeliness of the visits with ENTREE in [start, end), per establishment (of ``statuses``,
    or only ``finess``/``ordre``) and bucket (``day`` or ``week``, weeks start on Monday), per
    establishment, per bucket for the scope, and for the scope."""
    if bucket not in ("day", "week"):
        raise ValueError(f"bucket inconnu : {bucket}")
    params = {"start": start, "end": end, "timezone": timezone, "statuses": list(statuses), "bucket": bucket,
              "finess": finess, "ordre": ordre}
    rows: dict[tuple[Key | None, date | None], Timeliness] = {}
    for (row_finess, row_ordre, row_bucket, visits, a_med, a24, a48, delivered, d_med, d24,
         d48) in conn.execute(query("timeliness"), params):
        if not visits:  # the grand total of an empty scope
            continue
        key = None if row_finess is None else (row_finess, int(row_ordre))
        rows[(key, row_bucket)] = Timeliness(int(visits), _float(a_med), _float(a24), _float(a48), int(delivered),
                                             _float(d_med), _float(d24), _float(d48))
    return TimelinessData(start, end, bucket, rows)


# --- the companion CSV of the ARS export ---------------------------------------------------------

COMPANION_COLUMNS = (
    "finess", "ordre", "jour_entree", "rpu", "arrivee_mediane_heures", "arrivee_part_24h", "arrivee_part_48h",
    "rpu_transmis_spf", "transmission_mediane_heures", "transmission_part_24h", "transmission_part_48h",
)


def _fr(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}".replace(".", ",")


def companion_rows(data: TimelinessData) -> list[list[str]]:
    """One line per establishment and day with visits (per-establishment rows only)."""
    lines = []
    for (key, day), t in sorted(((k, v) for k, v in data.rows.items() if k[0] is not None and k[1] is not None),
                                key=lambda item: (item[0][0], item[0][1])):
        lines.append([key[0], str(key[1]), f"{day:%d/%m/%Y}", str(t.visits), _fr(t.arrival_median_h),
                      _fr(t.arrival_24h, 3), _fr(t.arrival_48h, 3), str(t.delivered), _fr(t.delivery_median_h),
                      _fr(t.delivery_24h, 3), _fr(t.delivery_48h, 3)])
    return lines


def companion_csv(data: TimelinessData) -> bytes:
    """The ARS export's companion file: timeliness per establishment and ENTREE day (';', decimal
    comma, UTF-8 with BOM, like the export itself)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(COMPANION_COLUMNS)
    writer.writerows(companion_rows(data))
    return b"\xef\xbb\xbf" + out.getvalue().encode("utf-8")
