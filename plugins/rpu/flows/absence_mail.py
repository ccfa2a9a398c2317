"""What the absence monitor says, and to whom: the day's alert (to the ARS, and to each
establishment's IT its own lines only), one e-mail per replay needed, the ORU's daily digest.

The words are in ``include/templates/`` (``absence_alert``, ``replay_needed``,
``oru_digest``, each with its ``_subject``); here, who gets what and when. Nothing is marked
sent before it is: an e-mail that fails is sent by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg

from rpu.config.region import Region
from rpu.flows import switch
from rpu.flows.absence_journal import (
    COLLAPSE_WEEKS,
    REPLAY_DAG_ID,
    Episode,
    FlowWarning,
    Watched,
    episodes,
    last_loaded_day,
    lost_days,
    transaction,
    watched,
)
from rpu.flows.plain_text import render, subject

log = logging.getLogger(__name__)

Notify = Callable[[list[str], str, str], None]  # (recipients, subject, body)
# The refused replay requests not listed yet, as lines of the digest (marked listed): given by
# the caller (``flows.replay.refusals_digest``), so that the monitor does not import the replays.
Refusals = Callable[[psycopg.Connection, datetime, str], str]


def recipients(region: Region, establishments: Iterable[Watched], *, with_it: bool = False) -> list[str]:
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


def send_alert(conn, region: Region, today: date, silent: list[tuple[Watched, Episode]], now: datetime,
               notify: Notify) -> bool:
    """The day's alert, if anything in it was not said yet: new missing days, new collapsing
    flows, absences that ended by themselves. ``silent``: today's silent establishments."""
    by_key = {(w.finess, w.ordre): w for w in watched(conn)}
    new_days = conn.execute("SELECT finess, ordre, day FROM absence_day WHERE alerted_at IS NULL AND day <= %s",
                            (today,)).fetchall()
    new_warnings = conn.execute("SELECT finess, ordre, day, visits, usual FROM flow_warning WHERE alerted_at IS NULL"
                                " AND day < %s ORDER BY finess, ordre, day", (today,)).fetchall()
    healed = [e for e in episodes(conn, state="healed") if e.end_notified_at is None]
    if not (new_days or new_warnings or healed):
        return False
    warnings = [(by_key.get((f, o)), FlowWarning(f, o, d, v, float(u))) for f, o, d, v, u in new_warnings]
    healed_named = [(by_key.get((e.finess, e.ordre)), e) for e in healed]
    named = [w for w, _ in silent] + [w for w, _ in warnings if w] + [w for w, _ in healed_named if w]
    to = recipients(region, named)
    it_copies = {(w.finess, w.ordre): w for w in named if w.it_contacts}
    if not (to or it_copies):
        log.warning("Veille du %s : aucun destinataire (ni ars_emails ni contacts) : e-mail non envoyé.", today)
        return False
    last_loaded = {(w.finess, w.ordre): last_loaded_day(conn, w.finess, w.ordre, e.first_missing_day, region.timezone)
                   for w, e in silent}
    if to:
        notify(to, subject("absence_alert_subject.txt.j2", region_code=region.code, today=today, establishment=None,
                           silent_count=len(silent), warning_count=len(warnings)),
               alert_text(region, today, now, silent, warnings, healed_named, last_loaded))
    # Each establishment's IT gets its own lines only: hospitals never see each other's.
    for key, establishment in it_copies.items():
        def own(pairs, key=key):
            return [(w, item) for w, item in pairs if w and (w.finess, w.ordre) == key]
        notify(list(establishment.it_contacts),
               subject("absence_alert_subject.txt.j2", region_code=region.code, today=today,
                       establishment=establishment),
               alert_text(region, today, now, own(silent), own(warnings), own(healed_named), last_loaded))
    with transaction(conn):
        alerted = conn.execute("UPDATE absence_day SET alerted_at = %s WHERE alerted_at IS NULL AND day <= %s"
                               " RETURNING episode_id", (now, today)).fetchall()
        conn.execute("UPDATE absence_episode SET alerted_at = %s WHERE alerted_at IS NULL AND id = ANY(%s)",
                     (now, [row[0] for row in alerted]))
        conn.execute("UPDATE flow_warning SET alerted_at = %s WHERE alerted_at IS NULL AND day < %s", (now, today))
        conn.execute("UPDATE absence_episode SET end_notified_at = %s WHERE state = 'healed' AND end_notified_at IS NULL",
                     (now,))
    return True


def alert_text(region: Region, today: date, now: datetime, silent, warnings, healed,
               last_loaded: dict[tuple[str, int], date] | None = None) -> str:
    """``last_loaded``: (FINESS, ORDRE) -> the last day a file of it was loaded (None: never)."""
    sent_at = now.astimezone(ZoneInfo(region.timezone)) if now.tzinfo else now
    silent = [(establishment, episode, (last_loaded or {}).get((establishment.finess, establishment.ordre)),
               lost_days(episode)) for establishment, episode in silent]
    return render("absence_alert.txt.j2", region_name=region.name, region_code=region.code, today=today,
                  sent_at=sent_at, silent=silent, warnings=warnings, healed=healed, collapse_weeks=COLLAPSE_WEEKS)


def send_replay_needed(conn, region: Region, now: datetime, notify: Notify) -> int:
    by_key = {(w.finess, w.ordre): w for w in watched(conn)}
    sent = 0
    for episode in episodes(conn, state="replay_needed"):
        if episode.end_notified_at is not None:
            continue
        establishment = by_key.get((episode.finess, episode.ordre))
        to = recipients(region, [establishment] if establishment else [], with_it=True)
        if not to:
            continue
        notify(to, subject("replay_needed_subject.txt.j2", region_code=region.code, establishment=establishment,
                           episode=episode),
               replay_needed_text(region, establishment, episode))
        with transaction(conn):
            conn.execute("UPDATE absence_episode SET end_notified_at = %s WHERE id = %s", (now, episode.id))
        sent += 1
    return sent


def replay_needed_text(region: Region, establishment: Watched | None, episode: Episode) -> str:
    return render("replay_needed.txt.j2", region_code=region.code, establishment=establishment, episode=episode,
                  replay_link=replay_link(region))


# --- the ORU's daily digest ------------------------------------------------------------------

def send_oru_digest(conn: psycopg.Connection, region: Region, today: date, now: datetime,
                    notify: Notify, refusals: Refusals | None = None) -> str | None:
    """Once a day, to the ORU: absences under way, replays awaited, flows in collapse, the
    streak of every parallel establishment (who may go live), and the refused replay requests
    (``refusals``: ``flows.replay.refusals_digest``). Returns the text sent, or None when it was
    already sent today."""
    if conn.execute("SELECT 1 FROM absence_digest WHERE day = %s", (today,)).fetchone():
        conn.commit()
        return None
    refused = refusals(conn, now, region.timezone) if refusals else ""
    text = digest_text(conn, region, today, switch.streaks(conn, today, region.timezone), refused)
    to = list(region.operator_emails)
    if to:
        notify(to, subject("oru_digest_subject.txt.j2", region_code=region.code, today=today), text)
    with transaction(conn):
        conn.execute("INSERT INTO absence_digest (day, sent_at) VALUES (%s, %s) ON CONFLICT DO NOTHING", (today, now))
    conn.commit()
    return text


def digest_text(conn, region: Region, today: date, streaks, refusals: str = "") -> str:
    by_key = {(w.finess, w.ordre): w for w in watched(conn)}
    open_ones = [(by_key[(e.finess, e.ordre)], e) for e in episodes(conn, state="open") if (e.finess, e.ordre) in by_key]
    waiting = [(by_key.get((e.finess, e.ordre)), e) for e in episodes(conn, state="replay_needed")]
    yesterday = today - timedelta(days=1)
    warnings = [FlowWarning(f, o, d, v, float(u)) for f, o, d, v, u in conn.execute(
        "SELECT finess, ordre, day, visits, usual FROM flow_warning WHERE day = %s", (yesterday,))]
    return render("oru_digest.txt.j2", region_name=region.name, today=today, yesterday=yesterday,
                  open_ones=open_ones, waiting=waiting, warnings=warnings, streaks=streaks,
                  eligible=[f"{s.finess}/{s.ordre}" for s in streaks if s.eligible],
                  eligible_days=switch.ELIGIBLE_DAYS, replay_dag_id=REPLAY_DAG_ID, refusals=refusals,
                  runs_link=f"{region.airflow_url.rstrip('/')}/dags/rpu_absence_monitor")
