"""Loading one OSCOUR file into the regional store: one file, one transaction.

Authority is per day. For each (FINESS, ORDRE, ENTREE day), the visits held are those of one
file: among the files that bring the day, the first by (the day is inside the file's declared
period, latest EXTRACT, received last). A file's visits dated outside its own period thus
count only on days no file's period covers. Loading a file applies it on exactly the days where
it now ranks first, leaves alone the days a newer file rules, and records each day in
``file_day``: whatever the order files arrive in, the database ends the same.

In the file's transaction: the intake journal row, the visits streamed in with COPY while the
file is read, the findings, then, under the establishment's lock, the day plan and its
application. A file that would empty a day we hold, or remove more than half of what we hold
for its days, is held for the ORU (nothing applied, its bytes kept in ``held_file``) until
``rpu files apply``. A rejected, duplicate or held file changes nothing but its journal row.
A crash at any point leaves the database as it was: PostgreSQL rolls the transaction back,
and the file is still in the inbox for the next run.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from psycopg.types.json import Jsonb

from rpu.formats.model import Limits, VolumeGuard
from rpu.formats.rules import Finding
from rpu.formats.validation import FileReport
from rpu.store.copy_in import copy_findings, copy_visits, insert_findings
from rpu.store.db import query
from rpu.store.timeliness import record_reception, record_revocation

ONE_DAY = timedelta(days=1)
DEFAULT_GUARD = VolumeGuard()


DEFAULT_LIMITS = Limits()


class Busy(Exception):
    """Another load holds the establishment: nothing was done, the file is taken next time."""


def local_now(timezone: str | None = None) -> datetime:
    """Now, as local time without zone (as EXTRACT is written), in the region's time zone."""
    return datetime.now(ZoneInfo(timezone or os.environ.get("RPU_TIMEZONE") or "Europe/Paris")).replace(tzinfo=None)


@dataclass(frozen=True)
class Decision:
    """An operator's decision on a held file (``rpu files apply``): who, why."""

    received_file_id: int
    by: str
    reason: str


@dataclass
class DayPlan:
    """One day a file brings, and whether the file is (now) that day's authority."""

    day: date
    brought: int  # visits the file brings for the day
    in_period: bool  # false: only visits dated outside the file's own period
    holder: int | None = None  # the day's authority before this file
    holder_name: str | None = None
    holder_extract: datetime | None = None
    held: int = 0  # visits held for the day before this file
    won: bool = True

    def as_json(self) -> dict:
        return {"day": self.day.isoformat(), "held": self.held, "brought": self.brought}


@dataclass
class LoadResult:
    file: str
    status: str  # loaded, duplicate, superseded, held, rejected
    received_file_id: int
    report: FileReport | None = None
    replaced_records: int = 0
    same_as: int | None = None  # the journal row of the earlier file (duplicate of)
    same_as_name: str | None = None
    same_as_at: datetime | None = None
    days: list[DayPlan] = field(default_factory=list)
    same_status: str | None = None  # the journal status of the earlier copy of a duplicate
    error: str | None = None  # TECHNICAL_ERROR: the traceback, for the ORU only (never the sender)
    # Visits of this file on days a newer extract (or a file whose period covers them) rules.
    not_applied_records: int = 0
    # Where the load's time went (seconds): reading, checking and copying the visits ("read"),
    # planning and applying the days ("days"), the timeliness record ("timeliness").
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def loaded_records(self) -> int:
        if self.status != "loaded" or not self.report:
            return 0
        return self.report.kept_records - self.not_applied_records

    @property
    def days_applied(self) -> list[date]:
        return [d.day for d in self.days if d.won] if self.status == "loaded" else []

    @property
    def days_not_applied(self) -> list[DayPlan]:
        return [d for d in self.days if not d.won]

    @property
    def held_days(self) -> list[DayPlan]:
        """The days that made the file held: emptied or dropping."""
        return [d for d in self.days if d.won and d.holder is not None and d.brought < d.held]

    @property
    def reason(self) -> str | None:
        earlier = f"« {self.same_as_name} »" + (f" reçu le {self.same_as_at:%d/%m/%Y à %H:%M}" if self.same_as_at else "")
        if self.status == "duplicate":
            text = f"Fichier identique au fichier {earlier} (journal n°{self.same_as}) : ce dépôt n'a rien changé."
            if self.same_status == "held":
                text += " Ce fichier est en attente de vérification par l'ORU."
            if self.days_not_applied:
                text += " Depuis, " + self._newer_sources() + " : la base régionale diffère de ce fichier pour ces jours."
            return text
        if self.status == "superseded":
            return ("Aucun jour appliqué : " + self._newer_sources()
                    + ". Ce fichier n'a rien changé.")
        if self.status == "loaded":
            text = f"Appliqué pour {day_ranges(self.days_applied) or 'aucun jour'}"
            if self.days_not_applied:
                text += " ; " + self._newer_sources()
            return text + "."
        if self.status == "held":
            lines = ", ".join(f"le {d.day:%d/%m} : {d.held} passage{_s(d.held)} détenu{_s(d.held)}, "
                              f"{d.brought} dans ce fichier" for d in self.held_days)
            return ("Fichier mis en attente, rien n'a été appliqué : il retirerait des passages que la base "
                    f"régionale détient ({lines}). L'ORU vérifie avec l'établissement avant de l'appliquer.")
        if self.status == "rejected" and self.report:
            return " ".join(f.message for f in self.report.file_findings)
        return None

    def _newer_sources(self) -> str:
        by_holder: dict[int, list[DayPlan]] = {}
        for plan in self.days_not_applied:
            by_holder.setdefault(plan.holder, []).append(plan)
        parts = []
        for holder, plans in by_holder.items():
            first = plans[0]
            days = day_ranges([p.day for p in plans])
            why = "plus récent" if first.in_period else "dont la période couvre ce jour"
            verb = "proviennent" if len(plans) > 1 else "provient"
            extract = f", extraction du {first.holder_extract:%d/%m/%Y %H:%M}" if first.holder_extract else ""
            parts.append(f"{'les' if len(plans) > 1 else 'le'} {days} {verb} du fichier « {first.holder_name} » "
                         f"(journal n°{holder}{extract}), {why}")
        return " ; ".join(parts)


def _s(count: int) -> str:
    return "" if count <= 1 else "s"


def day_ranges(days: list[date]) -> str:
    """``01/03–07/03, 09/03``: consecutive days as ranges."""
    ranges: list[list[date]] = []
    for day in sorted(days):
        if ranges and (day - ranges[-1][1]).days == 1:
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return ", ".join(f"{a:%d/%m}" if a == b else f"{a:%d/%m}–{b:%d/%m}" for a, b in ranges)


def sha256_of(path: str | os.PathLike) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def load_file(
    conn: psycopg.Connection,
    path: str | os.PathLike,
    *,
    sender: str | None = None,
    name: str | None = None,
    extra_findings: list[Finding] | None = None,
    guard: VolumeGuard | None = DEFAULT_GUARD,
    decision: Decision | None = None,
    received_at: datetime | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> LoadResult:
    """Validate and load one file. ``extra_findings`` are file-level findings decided by the
    caller (e.g. ``SENDER_MISMATCH`` by the ingest); any of them rejects the file. ``guard``
    None applies a file whatever it removes; ``decision`` applies a held file (its journal row).
    ``received_at`` (local time, default now): an EXTRACT later than it is refused.

    Raises ``Busy`` when another load of the same establishment holds it longer than
    ``limits.lock_seconds`` (nothing done: try again later). Any other unexpected error while
    reading the file ends as a ``rejected`` verdict (``TECHNICAL_ERROR``, the traceback in
    ``LoadResult.error`` for the ORU), nothing of the file kept; a lost database connection
    is raised."""
    name = name or Path(path).name
    sha256, size = sha256_of(path)
    received_at = received_at or local_now()
    try:
        with conn.transaction():
            _session_limits(conn, limits)
            # Identical bytes arriving at once are taken one after the other: the second sees the first.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"sha256/{sha256}",))
            if decision is None:
                # A file refused by the caller (SENDER_MISMATCH) is refused even if its bytes are known.
                same = None if extra_findings else conn.execute(query("find_same_file"), {"sha256": sha256}).fetchone()
                if same:
                    return _duplicate(conn, name, sender, sha256, size, same)
                file_id = _open_journal(conn, name, sender, sha256, size, status="loading")
            else:
                file_id, guard = decision.received_file_id, None
            return _load(conn, path, name, file_id, extra_findings, guard, decision, received_at, limits)
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled) as error:
        raise Busy(f"« {name} » : l'établissement est en cours de chargement par un autre traitement "
                   f"(attente de plus de {limits.lock_seconds} s) ; le fichier sera repris au prochain passage."
                   ) from error


def refuse_unread(conn: psycopg.Connection, name: str, sender: str | None, size: int, finding: Finding) -> LoadResult:
    """Journal a file refused without reading it (too large to be read safely)."""
    with conn.transaction():
        file_id = _open_journal(conn, name, sender, "0" * 64, size, status="loading")
        report = FileReport(file=name)
        report.add(finding)
        result = LoadResult(name, "rejected", file_id, report)
        insert_findings(conn, file_id, report.file_findings)
        conn.execute(query("close_received_file"), _journal_row(file_id, "rejected", report, result))
    return result


def _session_limits(conn, limits: Limits) -> None:
    # SET LOCAL: for this file's transaction only.
    conn.execute(f"SET LOCAL lock_timeout = '{int(limits.lock_seconds)}s'")
    conn.execute(f"SET LOCAL statement_timeout = '{int(limits.statement_seconds)}s'")


def _duplicate(conn, name, sender, sha256, size, same) -> LoadResult:
    file_id = _open_journal(conn, name, sender, sha256, size, status="duplicate")
    conn.execute(query("close_duplicate"), {"id": file_id, "same_as": same[0]})
    result = LoadResult(name, "duplicate", file_id, same_as=same[0], same_as_name=same[1], same_as_at=same[2],
                        same_status=same[3])
    # Days the earlier copy no longer supplies: the database differs from these bytes there.
    result.days = [DayPlan(day, 0, in_period, holder, holder_name, extract, won=False)
                   for day, in_period, holder, holder_name, extract in conn.execute(
                       query("days_taken_since"), {"file_id": same[0]})]
    conn.execute("UPDATE received_file SET reason = %s WHERE id = %s", (result.reason, file_id))
    return result


def _load(conn, path, name, file_id, extra_findings, guard, decision, received_at, limits) -> LoadResult:
    result = LoadResult(name, "loaded", file_id)
    deadline = time.monotonic() + limits.read_seconds if limits.read_seconds else None
    with tempfile.TemporaryFile() as findings_spool:
        try:
            with conn.transaction():  # a savepoint: the visits go only if the file is applied
                started = time.perf_counter()
                report = result.report = copy_visits(conn, path, name, file_id, findings_spool, received_at,
                                                     deadline)
                result.seconds["read"] = time.perf_counter() - started
                for finding in extra_findings or ():
                    report.add(finding)
                if report.rejected:
                    result.status = "rejected"
                    raise psycopg.Rollback()
                # Loads of one establishment are serialised from here to the commit, so that each
                # sees every earlier load's days.
                header = report.header
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{header.finess}/{header.ordre}",))
                started = time.perf_counter()
                result.days = _plan_days(conn, report, file_id)
                if guard is not None and _alarming(result.days, guard):
                    result.status = "held"
                    raise psycopg.Rollback()
                _apply_days(conn, report, file_id, result)
                copy_findings(conn, findings_spool)
                result.seconds["days"] = time.perf_counter() - started
        except (psycopg.OperationalError, psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            raise  # the database is gone or busy: the caller retries, the file stays where it is
        except Exception:  # a file must end with a verdict, never loop on a crash
            result.error = traceback.format_exc(limit=8)
            result.status = "rejected"
            report = result.report = FileReport(file=name)
            report.add(Finding("TECHNICAL_ERROR", detail=f"({_error_name(result.error)})"))
    if result.status == "rejected":
        insert_findings(conn, file_id, report.file_findings)
    elif result.status == "held":
        _keep_held(conn, path, file_id, result)
    if result.status == "loaded":
        started = time.perf_counter()
        record_reception(conn, file_id)  # timeliness: the first file that held each visit
        result.seconds["timeliness"] = time.perf_counter() - started
    conn.execute(query("close_received_file"), _journal_row(file_id, result.status, report, result))
    if decision is not None:
        conn.execute("UPDATE received_file SET decided_by = %s, decided_reason = %s, decided_at = now()"
                     " WHERE id = %s", (decision.by, decision.reason, file_id))
        conn.execute("DELETE FROM held_file WHERE received_file_id = %s", (file_id,))
    return result


def _error_name(trace: str) -> str:
    """The exception's class name (last line of a traceback), never its message (it may quote data)."""
    last = trace.strip().splitlines()[-1] if trace.strip() else "Exception"
    return last.split(":", 1)[0].strip()[:80]


class NotHeld(Exception):
    """``rpu files apply|discard`` on a journal row that is not a held file."""


def apply_held(conn: psycopg.Connection, file_id: int, *, by: str, reason: str) -> LoadResult:
    """Apply a held file deliberately, whatever it removes: an operator's decision, journaled
    (who, why) on the file's own journal row. The days are ranked as for any file (a newer
    extract received since keeps its days)."""
    with conn.transaction():
        name, sender, content = _held(conn, file_id)
        with tempfile.NamedTemporaryFile(suffix=".xml") as copy:
            copy.write(gzip.decompress(content))
            copy.flush()
            return load_file(conn, copy.name, sender=sender, name=name, decision=Decision(file_id, by, reason))


def discard_held(conn: psycopg.Connection, file_id: int, *, by: str, reason: str) -> None:
    """Set a held file aside for good (rejected, with the operator's reason)."""
    with conn.transaction():
        _held(conn, file_id)
        conn.execute("UPDATE received_file SET status = 'rejected', reason = %s, decided_by = %s,"
                     " decided_reason = %s, decided_at = now() WHERE id = %s",
                     (f"Écarté par l'ORU : {reason}", by, reason, file_id))
        conn.execute("DELETE FROM held_file WHERE received_file_id = %s", (file_id,))


@dataclass
class Revocation:
    file_id: int
    days: list[date]  # the days the revoked file ruled
    restored: dict[date, int]  # day → the file whose visits are back
    incomplete: list[date]  # days whose next file's visits were purged already: ask for a re-drop
    emptied: list[date]  # days no other file brings


def revoke_file(conn: psycopg.Connection, file_id: int, *, by: str, reason: str) -> Revocation:
    """Take back a file applied by mistake (a future EXTRACT that ruled every later file, a file
    of another unit): its visits go, and on each day it ruled the next file in rank rules again,
    its visits restored from ``rpu_superseded``. Journaled (who, why) on the file's row."""
    with conn.transaction():
        row = conn.execute("SELECT status, finess, ordre FROM received_file WHERE id = %s FOR UPDATE",
                           (file_id,)).fetchone()
        if row is None or row[0] not in ("loaded", "superseded"):
            raise NotHeld(f"Le fichier n°{file_id} n'est pas un fichier appliqué (statut : {row[0] if row else 'inconnu'}).")
        _status, finess, ordre = row
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{finess}/{ordre}",))
        scope = {"file_id": file_id, "finess": finess, "ordre": ordre}
        days = [r[0] for r in conn.execute(
            "SELECT day FROM file_day WHERE received_file_id = %s AND superseded_by IS NULL AND NOT revoked"
            " ORDER BY day", (file_id,))]
        conn.execute("DELETE FROM rpu WHERE finess = %(finess)s AND ordre = %(ordre)s AND received_file_id = %(file_id)s",
                     scope)
        conn.execute("DELETE FROM rpu_superseded WHERE received_file_id = %(file_id)s", scope)
        conn.execute("UPDATE file_day SET revoked = true WHERE received_file_id = %(file_id)s", scope)
        revocation = Revocation(file_id, days, {}, [], [])
        for day, next_file, expected in conn.execute(query("next_authorities"), {**scope, "days": days}).fetchall():
            revocation.restored[day] = next_file
            restored = conn.execute(query("restore_day"), {"file_id": next_file, "day": day}).rowcount
            conn.execute("UPDATE file_day SET superseded_by = NULL WHERE received_file_id = %s AND day = %s",
                         (next_file, day))
            if restored < expected:
                revocation.incomplete.append(day)
        revocation.emptied = [day for day in days if day not in revocation.restored]
        # Timeliness follows rpu: the revoked visits go, the restored ones come back.
        record_revocation(conn, finess, ordre, days, revocation.restored)
        conn.execute("UPDATE received_file SET status = 'revoked', reason = %s, decided_by = %s, decided_reason = %s,"
                     " decided_at = now() WHERE id = %s", (f"Révoqué par l'ORU : {reason}", by, reason, file_id))
    return revocation


def purge_replaced(conn: psycopg.Connection, keep_days: int) -> int:
    """Forget replaced visits older than ``keep_days`` (they only serve ``revoke_file``)."""
    with conn.transaction():
        return conn.execute("DELETE FROM rpu_superseded WHERE superseded_at < now() - make_interval(days => %s)",
                            (keep_days,)).rowcount


def _held(conn, file_id: int) -> tuple[str, str | None, bytes]:
    row = conn.execute("SELECT f.file_name, f.sender, h.content_gzip FROM received_file f"
                       " JOIN held_file h ON h.received_file_id = f.id"
                       " WHERE f.id = %s AND f.status = 'held' FOR UPDATE OF f", (file_id,)).fetchone()
    if row is None:
        raise NotHeld(f"Le fichier n°{file_id} n'est pas en attente (voir `rpu files list --status held`).")
    return row


def _plan_days(conn, report: FileReport, file_id: int) -> list[DayPlan]:
    """Every day the file brings (each day of its period, even without visits, and the days of
    visits dated outside it), with the day's current authority and what it holds."""
    header = report.header
    per_day = report.visits_per_day
    plans = {}
    day = header.period_start
    while day <= header.period_end:
        plans[day] = DayPlan(day, per_day.get(day, 0), True)
        day += ONE_DAY
    for day, count in per_day.items():
        if day not in plans:
            plans[day] = DayPlan(day, count, False)
    rows = conn.execute(query("day_authorities"), {
        "finess": header.finess, "ordre": header.ordre, "days": list(plans)}).fetchall()
    for day, holder, in_period, extract, held, holder_name in rows:
        plan = plans[day]
        plan.holder, plan.holder_name, plan.holder_extract, plan.held = holder, holder_name, extract, held
        # Rank: the day inside the file's period, then the latest EXTRACT, then received last.
        plan.won = (plan.in_period, header.extract, file_id) > (in_period, extract, holder)
    return sorted(plans.values(), key=lambda p: p.day)


def _alarming(days: list[DayPlan], guard: VolumeGuard) -> bool:
    replaced = [d for d in days if d.won and d.holder is not None and d.held > 0]
    if guard.hold_when_day_emptied and any(d.brought == 0 for d in replaced):
        return True
    held = sum(d.held for d in replaced)
    brought = sum(d.brought for d in replaced)
    return held > 0 and brought < held * (1 - guard.hold_when_drop_over)


def _apply_days(conn, report: FileReport, file_id: int, result: LoadResult) -> None:
    """Replace what we hold on the days this file now rules; drop its own visits on the days a
    newer file rules; record every day in ``file_day``."""
    header = report.header
    won = [d.day for d in result.days if d.won]
    lost = [d.day for d in result.days if not d.won]
    scope = {"file_id": file_id, "finess": header.finess, "ordre": header.ordre}
    if won:
        result.replaced_records = conn.execute(query("replace_days"), {**scope, **_day_span(won), "own": False}).rowcount
        conn.execute(query("supersede_days"), {**scope, "days": won})
    if lost:
        result.not_applied_records = conn.execute(query("replace_days"),
                                                  {**scope, **_day_span(lost), "own": True}).rowcount
    if not won:
        result.status = "superseded"
        newest = max((d for d in result.days if not d.won), key=lambda d: (d.holder_extract, d.holder))
        result.same_as, result.same_as_name = newest.holder, newest.holder_name
    days = result.days
    conn.execute(query("insert_file_days"), {
        **scope, "extract": header.extract, "days": [d.day for d in days], "in_period": [d.in_period for d in days],
        "visits": [d.brought for d in days], "superseded_by": [None if d.won else d.holder for d in days]})


def _day_span(days: list[date]) -> dict:
    return {"days": days, "first": min(days), "after_last": max(days) + ONE_DAY}


def _keep_held(conn, path, file_id: int, result: LoadResult) -> None:
    with open(path, "rb") as stream:
        content = gzip.compress(stream.read(), compresslevel=6)
    conn.execute("INSERT INTO held_file (received_file_id, content_gzip, days) VALUES (%s, %s, %s)",
                 (file_id, content, Jsonb([d.as_json() for d in result.held_days])))


def _open_journal(conn, name, sender, sha256, size, status) -> int:
    row = conn.execute(
        "INSERT INTO received_file (file_name, sender, sha256, size_bytes, status)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (name, sender, sha256, size, status),
    ).fetchone()
    return row[0]


def _journal_row(file_id: int, status: str, report: FileReport | None = None, result: LoadResult | None = None,
                 same_as: int | None = None) -> dict:
    header = report.header if report else None
    file_rule = report.file_findings[0].rule if report and report.rejected else None
    return {
        "id": file_id,
        "status": status,
        # A malformed FINESS (the reason of a rejection) does not fit the column: the finding keeps it.
        "finess": header.finess if header and header.finess and len(header.finess) <= 9 else None,
        "ordre": header.ordre if header else None,
        "extract": header.extract if header else None,
        "period_start": header.period_start if header else None,
        "period_end": header.period_end if header else None,
        "records": report.records if report else 0,
        "loaded_records": result.loaded_records if result else 0,
        "rejected_records": report.rejected_records if report else 0,
        "flagged_records": report.flagged_records if report else 0,
        "normalised_values": report.normalised_values if report else 0,
        "replaced_records": result.replaced_records if result else 0,
        "rule": file_rule,
        "reason": result.reason if result else None,
        "same_as": result.same_as if result else same_as,
    }
