"""Replays (reprises): re-sending one establishment's data for a period to Santé publique France.

An interruption of 7 days or more leaves visit dates that the rolling window of the
establishment's files will never bring back (rpu-format.md §1); the ARS decides a replay of
that FINESS and period, from the Airflow form of the DAG ``rpu_invs_replay``:

1. :func:`check_request` refuses, with a French message, anything that cannot be right: a
   malformed FINESS or a wrong check digit, an establishment not in the registry or not live,
   an impossible period (end before start, not over yet, more than 366 days), no reason given,
   and a period the regional database does not hold (the establishment must first send its
   files for it);
2. :func:`build` rebuilds the OSCOUR file from the regional database (never from the inbox)
   and counts the visits per day; a dry run stops there;
3. :func:`journal` records the send (``kind='replay'``, who asked, why) and :func:`deliver`
   delivers it through the same journaled SFTP outbox as the daily files
   (``sends.deliver_pending_over``: exclusive per send, a server down journaled as a failed
   attempt), then closes the absence episodes the replay covers.

No Airflow import; ``today`` and ``now`` are parameters.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import psycopg

from rpu.flows.absence_journal import close_replayed, covered_days, visits_per_day
from rpu.flows.days import days_between, fr, ranges_fr
from rpu.flows.plain_text import render
from rpu.formats import finess as finess_rules
from rpu.store import sends

log = logging.getLogger(__name__)

MAX_SPAN_DAYS = 366
MIN_REASON = 5
REPLAYABLE = ("live", "inactive")  # inactive: its data of the time it was live may be replayed


class ReplayRefused(Exception):
    """The replay cannot be done as asked; the message (French) says why and what to do."""


@dataclass(frozen=True)
class ReplayRequest:
    finess: str
    ordre: int
    start: date
    end: date
    reason: str
    dry_run: bool
    requested_by: str
    name: str = ""

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def as_dict(self) -> dict:
        return {**asdict(self), "start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, data: dict) -> ReplayRequest:
        return cls(**{**data, "start": date.fromisoformat(data["start"]), "end": date.fromisoformat(data["end"])})


@dataclass(frozen=True)
class BuiltReplay:
    path: Path
    visits: int
    per_day: dict[date, int]

    def report(self, request: ReplayRequest) -> list[str]:
        """What the ARS reads in the task's log: the request and the visits per day."""
        return render("replay_report.txt.j2", request=request, visits=self.visits,
                      per_day=sorted(self.per_day.items())).splitlines()


def _as_date(value, label: str, errors: list[str]) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        errors.append(f"{label} : date invalide {value!r} (attendu AAAA-MM-JJ, par exemple 2026-03-01).")
        return None


def check_request(conn: psycopg.Connection, *, finess: str, start, end, reason: str | None, today: date,
                  ordre: int = 0, dry_run: bool = True, requested_by: str | None = None,
                  tz: str = "Europe/Paris") -> ReplayRequest:
    """The request, checked; :class:`ReplayRefused` with every problem found otherwise."""
    errors: list[str] = []
    finess = str(finess or "").strip().upper()
    if not finess_rules.is_well_formed(finess):
        errors.append(f"FINESS {finess!r} mal formé : 9 caractères, le département (01 à 95, 2A, 2B, 97x) puis des "
                      "chiffres.")
    elif not finess_rules.check_digit_ok(finess):
        errors.append(f"FINESS {finess} : la clé de contrôle (dernier chiffre, algorithme de Luhn) est fausse ; "
                      "vérifiez le numéro (une faute de frappe ?).")
    start_day, end_day = (_as_date(start, "Premier jour à renvoyer", errors),
                          _as_date(end, "Dernier jour à renvoyer", errors))
    if start_day and end_day:
        if end_day < start_day:
            errors.append(f"La fin ({fr(end_day)}) est avant le début ({fr(start_day)}).")
        if end_day >= today:
            errors.append(f"La fin ({fr(end_day)}) doit être antérieure à aujourd'hui ({fr(today)}) : "
                          "on ne rejoue qu'une journée terminée.")
        span = (end_day - start_day).days + 1
        if span > MAX_SPAN_DAYS:
            errors.append(f"Période de {span} jours : {MAX_SPAN_DAYS} au plus par reprise ; découpez-la en plusieurs "
                          "reprises.")
    reason = " ".join((reason or "").split())
    if len(reason) < MIN_REASON:
        errors.append(f"Motif manquant ou trop court : au moins {MIN_REASON} caractères, il est inscrit au "
                      "journal des envois.")
    if errors:
        raise ReplayRefused(_refusal(errors))

    row = conn.execute("SELECT name, status FROM establishment WHERE finess = %s AND ordre = %s",
                       (finess, ordre)).fetchone()
    conn.commit()
    if row is None:
        known = [o for (o,) in conn.execute("SELECT ordre FROM establishment WHERE finess = %s ORDER BY ordre",
                                            (finess,))]
        conn.commit()
        if known:
            raise ReplayRefused(_refusal([f"FINESS {finess} : pas d'ORDRE {ordre} dans le registre (ORDRE connus : "
                                          f"{', '.join(map(str, known))})."]))
        raise ReplayRefused(_refusal([f"FINESS {finess} inconnu du registre des établissements de la région : "
                                      "vérifiez le numéro (FINESS géographique du service d'urgences)."]))
    name, status = row
    if status not in REPLAYABLE:
        detail = {"parallel": "il est encore transmis par l'ancien concentrateur : la reprise se fait de ce côté-là",
                  "onboarding": "il est en cours d'intégration : ses données n'ont jamais été transmises par ce "
                                "concentrateur"}.get(status, f"statut {status}")
        raise ReplayRefused(_refusal([f"{name} (FINESS {finess}) n'est pas en production ({detail})."]))

    missing = missing_days(conn, finess, ordre, start_day, end_day, tz)
    visits = sum(visits_per_day(conn, finess, ordre, start_day, end_day).values())
    conn.commit()
    if missing or visits == 0:
        period = ranges_fr(missing) if missing else f"du {fr(start_day)} au {fr(end_day)}"
        raise ReplayRefused(_refusal([
            f"La base régionale n'a pas les données de {name} (FINESS {finess}) pour : {period}. "
            "L'établissement doit d'abord envoyer ses fichiers pour cette période (un fichier dont DATEDEBUT et "
            "DATEFIN la couvrent, déposé dans son dossier depot/) ; relancez la reprise une fois le fichier chargé."]))
    return ReplayRequest(finess, ordre, start_day, end_day, reason, bool(dry_run), requested_by or "inconnu", name)


def _refusal(errors: list[str]) -> str:
    if len(errors) == 1:
        return f"Reprise refusée : {errors[0]}"
    return "Reprise refusée :\n" + "\n".join(f"  - {error}" for error in errors)


def missing_days(conn: psycopg.Connection, finess: str, ordre: int, start: date, end: date,
                 tz: str = "Europe/Paris") -> list[date]:
    """Days of [start, end] that no loaded file of the establishment covered: the regional
    database has nothing for them (a covered day with no visit is a real empty day)."""
    covered = covered_days(conn, finess, ordre, start, end, tz=tz)
    return [day for day in days_between(start, end) if day not in covered]


def spool_dir(region) -> Path:
    """Where built replay files are kept (owner-only) until delivered: a retry resends the same
    file. Beside the daily InVS files (``Region.outbox_dir``), in their own folder."""
    return region.outbox_dir("invs") / "reprises"


def build(conn: psycopg.Connection, request: ReplayRequest, out_dir: str | os.PathLike,
          extract: datetime) -> BuiltReplay:
    """Rebuild the OSCOUR file of the request from the regional database (owner-only), with
    the same builder and file naming as the daily file; ``extract`` is the EXTRACT of the
    header (local time) and the time stamp of the name."""
    from rpu.flows import invs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = out_dir / invs.oscour_file_name(request.finess, request.ordre, extract)
    while path.exists():  # two builds within a second
        extract += timedelta(seconds=1)
        path = out_dir / invs.oscour_file_name(request.finess, request.ordre, extract)
    visits = invs.build_oscour(conn, request.finess, request.ordre, request.start, request.end, path, extract=extract)
    per_day = visits_per_day(conn, request.finess, request.ordre, request.start, request.end)
    conn.commit()
    if visits != sum(per_day.values()):  # the database changed under us: never send half a period
        path.unlink(missing_ok=True)
        raise RuntimeError(f"{visits} passages écrits, {sum(per_day.values())} comptés : les données ont changé "
                           "pendant la construction ; relancez la tâche.")
    return BuiltReplay(path, visits, per_day)


def journal(conn: psycopg.Connection, request: ReplayRequest, built: BuiltReplay) -> sends.Send:
    """The replay in the send journal (status ``built``): who asked, why, what. Commits."""
    conn.commit()
    return sends.record_built(
        conn, destination="invs", kind="replay", path=built.path, visit_count=built.visits,
        finess=request.finess, ordre=request.ordre, period_start=request.start, period_end=request.end,
        requested_by=request.requested_by, reason=request.reason)


def deliver(conn: psycopg.Connection, send_id: int, open_session: Callable[[], AbstractContextManager],
            folder: str, now: datetime, *, server: str | None = None) -> tuple[sends.Send, list]:
    """Deliver a journaled replay over one SFTP session (``open_session()``) into ``folder``
    (created when missing): again if an earlier attempt failed, never rebuilt; then close the
    absence episodes it covers. Returns the send and the closed episodes' rows.

    When the server cannot be reached, the attempt is journaled (``failed``, with the cause)
    and :class:`rpu.store.sends.ServerUnreachable` is raised. When the daily delivery is sending this
    very file at the same moment, it is not sent a second time: the send is returned as it is
    (``sent`` once the other delivery is done)."""
    send = sends.get(conn, send_id)
    conn.commit()
    if send is None or send.kind != "replay":
        raise LookupError(f"Envoi n°{send_id} introuvable ou qui n'est pas une reprise.")
    if send.status != "sent":
        sends.deliver_pending_over(conn, send.destination, open_session, folder, server=server, create_folder=True,
                                   only={send.id})
        conn.commit()
        send = sends.get(conn, send_id)
        conn.commit()
    closed = close_replayed(conn, now) if send.status == "sent" else []
    return send, closed


# --- refusals: answers to the ARS, listed once in the ORU's digest ------------------------------

def record_refusal(conn: psycopg.Connection, refusal: str, *, requested_by: str | None, run_id: str | None,
                   params: dict) -> int | None:
    """Journal a refused request (values as typed) for the ORU's next daily digest. Commits.
    Never in the way of the answer: if it cannot be journaled (None), the ARS still gets it."""
    try:
        conn.commit()
        (refusal_id,) = conn.execute(
            "INSERT INTO replay_refusal (requested_by, run_id, finess, ordre, period_start, period_end, reason,"
            " refusal) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (requested_by or "inconnu", run_id, *(None if params.get(k) is None else str(params.get(k))
                                                   for k in ("finess", "ordre", "start", "end", "reason")),
             refusal)).fetchone()
        conn.commit()
        return refusal_id
    except psycopg.Error:
        log.warning("Refus de reprise non journalisé (le bilan de l'ORU ne le citera pas)", exc_info=True)
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        return None


def refusals_digest(conn: psycopg.Connection, now: datetime, tz: str = "Europe/Paris") -> str:
    """The lines of the ORU's digest about the refusals not listed yet (empty when none), and
    they are marked listed. The caller commits with the digest."""
    from zoneinfo import ZoneInfo

    rows = conn.execute("UPDATE replay_refusal SET digested_at = %s WHERE digested_at IS NULL"
                        " RETURNING requested_at, requested_by, finess, period_start, period_end, refusal",
                        (now,)).fetchall()
    if not rows:
        return ""
    refusals = [{"requested_at_local": f"{at.astimezone(ZoneInfo(tz)):%d/%m %H:%M}", "requested_by": by,
                 "finess": finess, "period_start": start, "period_end": end,
                 "first_line": " ".join(refusal.removeprefix("Reprise refusée :").split())}
                for at, by, finess, start, end, refusal in sorted(rows)]
    return render("replay_refusals_digest.txt.j2", refusals=refusals)
