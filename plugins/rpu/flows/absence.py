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
``absence_mail.send_oru_digest``. The journal's reads and writes are in ``absence_journal``,
the e-mails in ``absence_mail``.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import psycopg

from rpu.config.region import Region
from rpu.flows.absence_journal import (
    CATCH_UP_DAYS,
    COLLAPSE_MIN_WEEKS,
    COLLAPSE_RATIO,
    COLLAPSE_WEEKS,
    Episode,
    FlowWarning,
    Watched,
    close_replayed,
    covered_days,
    episode_by_id,
    episodes,
    loaded_days,
    lost_days,
    open_episode,
    transaction,
    visits_per_day,
    watched,
)
from rpu.flows.absence_mail import (
    Notify,
    alert_text,
    digest_text,
    replay_needed_text,
    send_alert,
    send_oru_digest,
    send_replay_needed,
)
from rpu.flows.days import days_between, fr
from rpu.formats.wording import plural

# Also the names callers knew here before the journal and the e-mails had modules of their own.
__all__ = ["Episode", "FlowWarning", "MonitorResult", "Watched", "alert_text", "close_replayed", "digest_text",
           "episodes", "lost_days", "replay_needed_text", "run_monitor", "send_oru_digest"]

log = logging.getLogger(__name__)


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
        with transaction(conn):
            _judge(conn, region, establishment, today, now, result)
    if notify is not None:
        result.alert_sent = send_alert(conn, region, today, result.silent, now, notify)
        result.replay_mails = send_replay_needed(conn, region, now, notify)
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
    return episode_by_id(conn, episode_id)


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
    return episode_by_id(conn, episode.id)


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

