"""Absence monitoring: which establishments sent nothing today, since when, and what it costs.

Every establishment sends, each night, a file carrying the visits of J-1 and the six days
before (rpu-format.md §1). The monitor runs once a day after the cut-off and judges *today*
(a local date, the region's time zone) for every ``parallel`` or ``live`` establishment:

- a day on which no file of the establishment was **loaded** is a *missing day*; it opens an
  absence episode, or extends the open one (a day is never counted twice). Days the monitor did
  not run (scheduler stopped) are judged at the next run, back to the establishment's last
  loaded file (31 days at most); an establishment that never sent anything is judged from the
  first run that watches it;
- the same day, one French e-mail goes to the ARS and to the IT and ARS contacts of the
  establishments it names: every silent establishment and since when, every collapsing flow
  (visits of J-1 under half the median of the same weekday over the 8 weeks before), the
  absences that ended by themselves, and what to do;
- when the establishment sends again, the episode ends. A missing day D costs the visits of
  D-1; the files received since the episode began are checked: if their periods cover every
  such visit date, the episode is ``healed`` (the 7-day window did its job); otherwise it is
  ``replay_needed`` with the exact FINESS and period of visit dates that Santé publique France
  will never get, and the ARS is told how to replay it (DAG ``rpu_invs_replay``);
- once Santé publique France has that period (a replay from ``rpu_invs_replay``, or the daily
  file carrying a catch-up file of the establishment), the episode is ``replayed``.

Running twice the same day counts nothing twice and sends nothing twice. The clock is a
parameter (``today``, ``now``): nothing here reads the wall clock, so tests walk through days.
No Airflow import: the DAG ``rpu_absence_monitor`` calls :func:`run_monitor` and
:func:`send_oru_digest`.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import class_row

from rpu.config.region import Region
from rpu.formats.wording import plural
from rpu.store.db import query

log = logging.getLogger(__name__)

Notify = Callable[[list[str], str, str], None]  # (recipients, subject, body)

REPLAY_DAG_ID = "rpu_invs_replay"
WINDOW_DAYS = 7          # each file re-sends J-1 and the six days before
COLLAPSE_WEEKS = 8       # history of the same weekday for the flow collapse check
COLLAPSE_MIN_WEEKS = 4   # fewer weeks with visits than this: no judgement
COLLAPSE_RATIO = 0.5     # under half the usual level
CATCH_UP_DAYS = 31       # days the monitor did not run are judged this far back at most

WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
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


@dataclass
class MonitorResult:
    today: date
    silent: list[tuple[Watched, Episode]] = field(default_factory=list)
    healed: list[tuple[Watched, Episode]] = field(default_factory=list)
    replay_needed: list[tuple[Watched, Episode]] = field(default_factory=list)
    replayed: list[int] = field(default_factory=list)       # episode ids closed by a replay
    warnings: list[tuple[Watched, FlowWarning]] = field(default_factory=list)
    alert_sent: bool = False
    replay_mails: int = 0

    def lines(self) -> list[str]:
        out = [f"Veille du {fr(self.today)} : {plural(len(self.silent), 'établissement')} sans fichier, "
               f"{len(self.warnings)} flux en forte baisse, {plural(len(self.healed), 'absence résorbée')}, "
               f"{plural(len(self.replay_needed), 'reprise nécessaire')}, "
               f"{plural(len(self.replayed), 'épisode clos', 'épisodes clos')} par une reprise."]
        out += [f"  sans fichier : {w.label} depuis le {fr(e.first_missing_day)} ({plural(e.days_missing, 'jour')})"
                for w, e in self.silent]
        out += [f"  reprise nécessaire : {w.finess}/{w.ordre} du {fr(e.replay_start)} au {fr(e.replay_end)}"
                for w, e in self.replay_needed]
        out.append("  e-mail de veille envoyé" if self.alert_sent else "  aucun e-mail de veille (rien de nouveau)")
        return out

    def as_dict(self) -> dict:
        return {
            "today": self.today.isoformat(),
            "silent": [{"finess": w.finess, "ordre": w.ordre, "since": e.first_missing_day.isoformat(),
                        "days_missing": e.days_missing} for w, e in self.silent],
            "healed": [{"finess": w.finess, "ordre": w.ordre, "episode": e.id} for w, e in self.healed],
            "replay_needed": [{"finess": w.finess, "ordre": w.ordre, "episode": e.id,
                               "start": e.replay_start.isoformat(), "end": e.replay_end.isoformat()}
                              for w, e in self.replay_needed],
            "replayed": self.replayed,
            "flow_warnings": [{"finess": w.finess, "ordre": w.ordre, "day": f.day.isoformat(), "visits": f.visits,
                               "usual": f.usual} for w, f in self.warnings],
            "alert_sent": self.alert_sent,
            "replay_mails": self.replay_mails,
        }


@contextlib.contextmanager
def _transaction(conn: psycopg.Connection) -> Iterator[None]:
    """A real transaction, committed at the end of the block (psycopg would make a savepoint of
    it if earlier reads had left a transaction open)."""
    conn.commit()
    with conn.transaction():
        yield


def fr(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else "?"


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days grouped into (first, last) ranges."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and day == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def ranges_fr(days: Iterable[date]) -> str:
    return ", ".join(fr(a) if a == b else f"du {fr(a)} au {fr(b)}" for a, b in ranges(days))


def _days_fr(days: list[date]) -> str:
    """"le 02/03/2026", or "du 02/03/2026 au 04/03/2026" (every day between)."""
    return f"le {fr(days[0])}" if len(days) == 1 else ranges_fr(days)


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


def _episode(conn, episode_id: int) -> Episode:
    with conn.cursor(row_factory=class_row(Episode)) as cursor:
        return cursor.execute("SELECT * FROM absence_episode WHERE id = %s", (episode_id,)).fetchone()


# --- the daily judgement ---------------------------------------------------------------------

def run_monitor(conn: psycopg.Connection, region: Region, today: date, now: datetime,
                notify: Notify | None) -> MonitorResult:
    """Judge ``today`` for every watched establishment, end the episodes of those that sent
    again, then send what was not sent yet: the day's alert, one e-mail per replay needed.

    Commits as it goes (one transaction per establishment); if an e-mail fails, the next run
    sends it (nothing is marked sent before it is)."""
    result = MonitorResult(today)
    result.replayed = [row[0] for row in close_replayed(conn, now)]
    for establishment in watched(conn):
        with _transaction(conn):
            _judge(conn, region, establishment, today, now, result)
    if notify is not None:
        result.alert_sent = _send_alert(conn, region, result, now, notify)
        result.replay_mails = _send_replay_needed(conn, region, now, notify)
    conn.commit()
    for line in result.lines():
        log.info("%s", line)
    return result


def _judge(conn, region: Region, establishment: Watched, today: date, now: datetime, result: MonitorResult) -> None:
    finess, ordre, tz = establishment.finess, establishment.ordre, region.timezone
    episode = open_episode(conn, finess, ordre)
    # Days not judged yet: today, and the days the monitor did not run (scheduler stopped, first
    # deployment): since the last missing day of the open episode, or since the last file.
    if episode:
        first = episode.last_missing_day + timedelta(days=1)
    else:
        before = loaded_days(conn, finess, ordre, today - timedelta(days=CATCH_UP_DAYS), today - timedelta(days=1), tz)
        first = max(before) + timedelta(days=1) if before else today
        # Never again the days of an episode already ended (up to the day files came back).
        (judged,) = conn.execute("SELECT max(resumed_on) FROM absence_episode WHERE finess = %s AND ordre = %s",
                                 (finess, ordre)).fetchone()
        if judged is not None:
            first = max(first, judged + timedelta(days=1))
    if first <= today:
        with_file = loaded_days(conn, finess, ordre, first, today, tz)
        for day in days_between(first, today):
            if day in with_file:
                if episode is not None:
                    ended = _end_episode(conn, establishment, episode, day, now, tz)
                    (result.healed if ended.state == "healed" else result.replay_needed).append((establishment, ended))
                    episode = None
            else:
                episode = _add_missing_day(conn, establishment, episode, day)
    if episode is not None and episode.last_missing_day == today:
        result.silent.append((establishment, episode))
    if today in loaded_days(conn, finess, ordre, today, today, tz):
        warning = _flow_check(conn, establishment, today)
        if warning:
            result.warnings.append((establishment, warning))


def _add_missing_day(conn, establishment: Watched, episode: Episode | None, day: date) -> Episode:
    if episode is None:
        row = conn.execute(
            "INSERT INTO absence_episode (finess, ordre, first_missing_day, last_missing_day, days_missing)"
            " VALUES (%s, %s, %s, %s, 1) RETURNING id",
            (establishment.finess, establishment.ordre, day, day)).fetchone()
        episode_id = row[0]
    else:
        episode_id = episode.id
        conn.execute(
            "UPDATE absence_episode SET last_missing_day = %s, days_missing = %s - first_missing_day + 1,"
            " updated_at = now() WHERE id = %s", (day, day, episode_id))
    conn.execute("INSERT INTO absence_day (finess, ordre, day, episode_id) VALUES (%s, %s, %s, %s)"
                 " ON CONFLICT DO NOTHING", (establishment.finess, establishment.ordre, day, episode_id))
    return _episode(conn, episode_id)


def _end_episode(conn, establishment: Watched, episode: Episode, resumed_on: date, now: datetime, tz: str) -> Episode:
    """The establishment sent again on ``resumed_on``: are the visit dates its silence cost
    covered by the files received since the episode began?"""
    lost_start, lost_end = episode.lost_visit_days
    covered = covered_days(conn, establishment.finess, establishment.ordre, lost_start, lost_end, tz=tz,
                           received_from=episode.first_missing_day, received_to=resumed_on)
    uncovered = [day for day in days_between(lost_start, lost_end) if day not in covered]
    if uncovered:
        conn.execute(
            "UPDATE absence_episode SET state = 'replay_needed', resumed_on = %s, replay_start = %s, replay_end = %s,"
            " updated_at = now() WHERE id = %s", (resumed_on, min(uncovered), max(uncovered), episode.id))
    else:
        conn.execute(
            "UPDATE absence_episode SET state = 'healed', resumed_on = %s, closed_at = %s, updated_at = now()"
            " WHERE id = %s", (resumed_on, now, episode.id))
    return _episode(conn, episode.id)


def _flow_check(conn, establishment: Watched, today: date) -> FlowWarning | None:
    """Visits of J-1 against the median of the same weekday over the weeks before (days with
    no visit at all are left out of the history: no data then, not a quiet day)."""
    j1 = today - timedelta(days=1)
    first = j1 - timedelta(weeks=COLLAPSE_WEEKS)
    counts = visits_per_day(conn, establishment.finess, establishment.ordre, first, j1)
    history = [counts[j1 - timedelta(weeks=k)] for k in range(1, COLLAPSE_WEEKS + 1)]
    history = [n for n in history if n > 0]
    if len(history) < COLLAPSE_MIN_WEEKS:
        return None
    usual = float(statistics.median(history))
    visits = counts[j1]
    if visits >= usual * COLLAPSE_RATIO:
        return None
    conn.execute("INSERT INTO flow_warning (finess, ordre, day, visits, usual) VALUES (%s, %s, %s, %s, %s)"
                 " ON CONFLICT DO NOTHING", (establishment.finess, establishment.ordre, j1, visits, round(usual, 1)))
    return FlowWarning(establishment.finess, establishment.ordre, j1, visits, usual)


def close_replayed(conn: psycopg.Connection, now: datetime) -> list[tuple]:
    """Episodes waiting for a replay that a delivered replay now covers become ``replayed``.
    Returns (episode id, finess, ordre, replay start, replay end, send id) rows. Commits."""
    with _transaction(conn):
        return conn.execute(query("absence_close_replayed"), {"now": now}).fetchall()


# --- the e-mails -----------------------------------------------------------------------------

def _recipients(region: Region, establishments: Iterable[Watched], *, with_it: bool = False) -> list[str]:
    """The ARS: the region's addresses and the ARS contacts of the establishments named; their
    IT contacts too for a message about one establishment only (``with_it``)."""
    establishments = list(establishments)
    out: list[str] = []
    it = [a for e in establishments for a in e.it_contacts] if with_it else []
    for address in list(region.ars_emails) + [a for e in establishments for a in e.ars_contacts] + it:
        if address not in out:
            out.append(address)
    return out


def replay_link(region: Region) -> str:
    return f"{region.airflow_url.rstrip('/')}/dags/{REPLAY_DAG_ID}"


def _send_alert(conn, region: Region, result: MonitorResult, now: datetime, notify: Notify) -> bool:
    """The day's alert, if anything in it was not said yet: new missing days, new collapsing
    flows, absences that ended by themselves."""
    by_key = {(w.finess, w.ordre): w for w in watched(conn)}
    new_days = conn.execute("SELECT finess, ordre, day FROM absence_day WHERE alerted_at IS NULL AND day <= %s",
                            (result.today,)).fetchall()
    new_warnings = conn.execute("SELECT finess, ordre, day, visits, usual FROM flow_warning WHERE alerted_at IS NULL"
                                " AND day < %s ORDER BY finess, ordre, day", (result.today,)).fetchall()
    healed = [e for e in episodes(conn, state="healed") if e.end_notified_at is None]
    if not (new_days or new_warnings or healed):
        return False
    warnings = [(by_key.get((f, o)), FlowWarning(f, o, d, v, float(u))) for f, o, d, v, u in new_warnings]
    healed_named = [(by_key.get((e.finess, e.ordre)), e) for e in healed]
    named = [w for w, _ in result.silent] + [w for w, _ in warnings if w] + [w for w, _ in healed_named if w]
    to = _recipients(region, named)
    it_copies = {(w.finess, w.ordre): w for w in named if w.it_contacts}
    if not (to or it_copies):
        log.warning("Veille du %s : aucun destinataire (ni ars_emails ni contacts) : e-mail non envoyé.", result.today)
        return False
    subject = (f"[RPU {region.code}] Veille du {fr(result.today)} : "
               f"{plural(len(result.silent), 'établissement')} sans fichier"
               + (f", {len(warnings)} flux en forte baisse" if warnings else ""))
    last_loaded = {(w.finess, w.ordre): last_loaded_day(conn, w.finess, w.ordre, e.first_missing_day, region.timezone)
                   for w, e in result.silent}
    if to:
        notify(to, subject, alert_text(region, result.today, now, result.silent, warnings, healed_named, last_loaded))
    # Each establishment's IT gets its own lines only: hospitals never see each other's.
    for key, establishment in it_copies.items():
        def own(pairs, key=key):
            return [(w, item) for w, item in pairs if w and (w.finess, w.ordre) == key]
        notify(list(establishment.it_contacts), f"[RPU {region.code}] Veille du {fr(result.today)} : {establishment.name}",
               alert_text(region, result.today, now, own(result.silent), own(warnings), own(healed_named),
                          last_loaded))
    with _transaction(conn):
        alerted = conn.execute("UPDATE absence_day SET alerted_at = %s WHERE alerted_at IS NULL AND day <= %s"
                               " RETURNING episode_id", (now, result.today)).fetchall()
        conn.execute("UPDATE absence_episode SET alerted_at = %s WHERE alerted_at IS NULL AND id = ANY(%s)",
                     (now, [row[0] for row in alerted]))
        conn.execute("UPDATE flow_warning SET alerted_at = %s WHERE alerted_at IS NULL AND day < %s", (now, result.today))
        conn.execute("UPDATE absence_episode SET end_notified_at = %s WHERE state = 'healed' AND end_notified_at IS NULL",
                     (now,))
    return True


def alert_text(region: Region, today: date, now: datetime, silent, warnings, healed,
               last_loaded: dict[tuple[str, int], date] | None = None) -> str:
    """``last_loaded``: (FINESS, ORDRE) -> the last day a file of it was loaded (None: never)."""
    lines = ["Bonjour,", "",
             f"Contrôle du {fr(today)} des fichiers RPU reçus par le concentrateur régional ({region.name}).",
             "Chaque établissement doit déposer chaque nuit, avant 4 h, un fichier contenant les passages de la "
             "veille et des six jours précédents.", ""]
    if silent:
        lines.append("ÉTABLISSEMENTS SANS FICHIER AUJOURD'HUI")
        for establishment, episode in silent:
            last = (last_loaded or {}).get((establishment.finess, establishment.ordre))
            since = (f"dernier fichier chargé le {fr(last)}" if last else "aucun fichier chargé à ce jour")
            missing = (fr(episode.first_missing_day) if episode.days_missing == 1 else
                       f"du {fr(episode.first_missing_day)} au {fr(episode.last_missing_day)}")
            lines.append(f"  - {establishment.label} : {since} ; "
                         f"{plural(episode.days_missing, 'jour')} sans fichier ({missing}).")
            lost = lost_days(episode)
            if lost:
                lines.append(f"    Passages perdus pour Santé publique France même si l'établissement renvoie son fichier "
                             f"dès demain : {_days_fr(lost)} ({plural(len(lost), 'jour')}), hors de la fenêtre "
                             "glissante de 7 jours. Quand l'établissement enverra de nouveau, le concentrateur "
                             "indiquera la période exacte à reprendre (rejeu).")
        lines += ["", "Que faire :",
                  "  - Service informatique de l'établissement : vérifier l'export RPU (tâche planifiée, serveur, "
                  "accès SFTP) et déposer le fichier dans le dossier <FINESS>/depot/ du serveur de dépôt ; si un "
                  "fichier a été refusé, son rapport est dans <FINESS>/rejetes/.",
                  "  - ARS : si le silence dure, contacter l'établissement. Une interruption de moins de 7 jours se "
                  "rattrape seule (chaque fichier renvoie les 7 derniers jours) ; au-delà, une reprise vers Santé "
                  "publique France sera nécessaire et vous sera signalée.", ""]
    if warnings:
        lines.append("FLUX EN FORTE BAISSE (passages de la veille sous la moitié de la médiane des mêmes jours de "
                     f"semaine des {COLLAPSE_WEEKS} semaines précédentes)")
        for establishment, warning in warnings:
            name = establishment.label if establishment else f"FINESS {warning.finess}, ORDRE {warning.ordre}"
            lines.append(f"  - {name} : {warning.visits} passages le {WEEKDAYS[warning.day.weekday()]} "
                         f"{fr(warning.day)}, contre {warning.usual:g} habituellement.")
        lines += ["", "Que faire : l'établissement vérifie que son export n'est pas incomplet (service ou site "
                  "manquant, filtre, extraction interrompue) et redépose un fichier complet ; il remplacera le "
                  "précédent pour la même période.", ""]
    if healed:
        lines.append("ABSENCES RÉSORBÉES (les fichiers reçus depuis couvrent tous les jours manquants, rien à faire)")
        for establishment, episode in healed:
            name = establishment.label if establishment else f"FINESS {episode.finess}, ORDRE {episode.ordre}"
            lines.append(f"  - {name} : absence du {fr(episode.first_missing_day)} au {fr(episode.last_missing_day)}, "
                         f"envois repris le {fr(episode.resumed_on)}.")
        lines.append("")
    sent_at = now.astimezone(ZoneInfo(region.timezone)) if now.tzinfo else now
    lines += [f"Message envoyé automatiquement par le concentrateur RPU ({region.code}) le "
              f"{sent_at:%d/%m/%Y à %H:%M}.", ""]
    return "\n".join(lines)


def _send_replay_needed(conn, region: Region, now: datetime, notify: Notify) -> int:
    by_key = {(w.finess, w.ordre): w for w in watched(conn)}
    sent = 0
    for episode in episodes(conn, state="replay_needed"):
        if episode.end_notified_at is not None:
            continue
        establishment = by_key.get((episode.finess, episode.ordre))
        to = _recipients(region, [establishment] if establishment else [], with_it=True)
        if not to:
            continue
        name = establishment.name if establishment else f"FINESS {episode.finess}"
        subject = (f"[RPU {region.code}] Reprise nécessaire : {name} (FINESS {episode.finess}) "
                   f"du {fr(episode.replay_start)} au {fr(episode.replay_end)}")
        notify(to, subject, replay_needed_text(region, establishment, episode))
        with _transaction(conn):
            conn.execute("UPDATE absence_episode SET end_notified_at = %s WHERE id = %s", (now, episode.id))
        sent += 1
    return sent


def replay_needed_text(region: Region, establishment: Watched | None, episode: Episode) -> str:
    name = establishment.label if establishment else f"FINESS {episode.finess}, ORDRE {episode.ordre}"
    start, end = episode.replay_start, episode.replay_end
    lines = [
        "Bonjour,", "",
        f"L'établissement {name} n'a déposé aucun fichier RPU du {fr(episode.first_missing_day)} au "
        f"{fr(episode.last_missing_day)} ({episode.days_missing} jours) ; les envois ont repris le "
        f"{fr(episode.resumed_on)}.",
        "Les fichiers reçus depuis ne couvrent pas toute la période (chaque fichier ne renvoie que les 7 derniers "
        "jours) : Santé publique France n'a pas reçu les passages suivants et ne les recevra pas sans rattrapage :", "",
        f"    FINESS : {episode.finess}",
        f"    ORDRE  : {episode.ordre}",
        f"    Période à reprendre : du {fr(start)} au {fr(end)} (dates d'entrée des passages)", "",
        "Que faire :",
        f"  1. L'établissement dépose un fichier couvrant cette période (DATEDEBUT {fr(start)}, DATEFIN au moins "
        f"{fr(end)}) dans son dossier <FINESS>/depot/ ; vérifiez qu'il a été chargé (rapport dans traites/). "
        "Sans ce fichier, la base régionale n'a pas ces passages et rien ne peut être renvoyé.",
        "  2. Une fois ce fichier chargé, l'envoi quotidien vers Santé publique France le transmet le lendemain "
        "matin et cet épisode se clôt de lui-même (voir le bilan quotidien). Pour l'envoyer sans attendre, ou si "
        f"Santé publique France le redemande, déclenchez la reprise dans Airflow : {replay_link(region)}",
        "     bouton « Déclencher » (« Trigger » si votre navigateur est en anglais), puis dans le formulaire :",
        f"       FINESS géographique = {episode.finess}, ORDRE = {episode.ordre},",
        f"       Premier jour à renvoyer = {fr(start)}, Dernier jour à renvoyer = {fr(end)},",
        "       Simulation (rien n'est envoyé) = cochée d'abord : le nombre de passages par jour s'affiche, rien "
        "n'est envoyé ;",
        "       Motif = par exemple « absence d'envoi du ... au ... ».",
        "     Puis déclenchez de nouveau avec « Simulation » décochée pour l'envoi réel. Si la reprise est refusée, "
        "la raison s'affiche dans Airflow (tâche check_request) : corrigez et déclenchez de nouveau.",
        "     En JSON (API REST, ou « airflow dags trigger -c ») :",
        f'       {{"finess": "{episode.finess}", "ordre": {episode.ordre}, "start": "{start.isoformat()}", '
        f'"end": "{end.isoformat()}", "dry_run": true, "reason": "absence d\'envoi"}}',
        "  3. L'envoi (quotidien ou reprise) est inscrit au journal des envois et clôt cet épisode.", "",
    ]
    if establishment and establishment.status == "parallel":
        lines += ["Établissement en parallèle : c'est encore l'ancien concentrateur qui transmet à Santé publique "
                  "France ; la reprise est à faire de ce côté-là (ce concentrateur refusera de rejouer un établissement "
                  "qui n'est pas en production).", ""]
    lines.append(f"Message envoyé automatiquement par le concentrateur RPU ({region.code}).")
    return "\n".join(lines) + "\n"


# --- the ORU's daily digest ------------------------------------------------------------------

def send_oru_digest(conn: psycopg.Connection, region: Region, today: date, now: datetime,
                    notify: Notify) -> str | None:
    """Once a day, to the ORU: absences under way, replays awaited, flows in collapse, and the
    streak of every parallel establishment (who may go live). Returns the text sent, or None
    when it was already sent today."""
    from rpu.flows import switch  # the streak of the switch from an older concentrator

    if conn.execute("SELECT 1 FROM absence_digest WHERE day = %s", (today,)).fetchone():
        conn.commit()
        return None
    text = digest_text(conn, region, today, switch.streaks(conn, today, region.timezone))
    from rpu.flows import replay  # refused replay requests: one line each, here and nowhere else

    refusals = replay.refusals_digest(conn, now, region.timezone)
    if refusals:
        marker = "\nJournal des exécutions : "
        head, _, tail = text.rpartition(marker)
        text = f"{head}\n{refusals}{marker}{tail}" if head else text + "\n" + refusals
    to = list(region.operator_emails)
    if to:
        notify(to, f"[RPU {region.code}] Bilan quotidien du {fr(today)} : absences et bascules", text)
    with _transaction(conn):
        conn.execute("INSERT INTO absence_digest (day, sent_at) VALUES (%s, %s) ON CONFLICT DO NOTHING", (today, now))
    conn.commit()
    return text


def digest_text(conn, region: Region, today: date, streaks) -> str:
    by_key = {(w.finess, w.ordre): w for w in watched(conn)}

    def name(episode) -> str:
        establishment = by_key.get((episode.finess, episode.ordre))
        return establishment.label if establishment else f"FINESS {episode.finess}, ORDRE {episode.ordre}"

    lines = [f"Bilan du {fr(today)} — {region.name}", ""]
    open_ones = [e for e in episodes(conn, state="open") if (e.finess, e.ordre) in by_key]
    lines.append(f"Absences en cours : {len(open_ones)}")
    lines += [f"  - {name(e)} : sans fichier depuis le {fr(e.first_missing_day)} ({e.days_missing} j)"
              for e in open_ones]
    waiting = episodes(conn, state="replay_needed")
    lines.append(f"Reprises à faire (DAG {REPLAY_DAG_ID}) : {len(waiting)}")
    lines += [f"  - {name(e)} : du {fr(e.replay_start)} au {fr(e.replay_end)}" for e in waiting]
    warnings = conn.execute("SELECT finess, ordre, day, visits, usual FROM flow_warning WHERE day = %s",
                            (today - timedelta(days=1),)).fetchall()
    lines.append(f"Flux en forte baisse (passages du {fr(today - timedelta(days=1))}) : {len(warnings)}")
    lines += [f"  - FINESS {f}/{o} : {v} passages contre {float(u):g} habituellement" for f, o, _, v, u in warnings]
    lines += ["", f"Établissements en parallèle (bascule depuis l'ancien concentrateur) : {len(streaks)}"]
    for streak in streaks:
        lines.append(f"  - {streak.describe()}")
    eligible = [s for s in streaks if s.eligible]
    if eligible:
        lines += ["", "Éligibles au passage en production (rpu establishments promote FINESS --ordre N) : "
                  + ", ".join(f"{s.finess}/{s.ordre}" for s in eligible)]
    lines += ["", f"Journal des exécutions : {region.airflow_url.rstrip('/')}/dags/rpu_absence_monitor"]
    return "\n".join(lines) + "\n"
