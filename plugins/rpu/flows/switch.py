"""The switch from an older concentrator, establishment by establishment.

While an establishment is ``parallel``, an older concentrator still forwards its data: ours
ingests and checks its files and forwards nothing. It may go ``live`` (forwarded by us) after
**7 consecutive days of correct operation**. A day is correct when at least one file of the
establishment was loaded that day and none was rejected (local dates, the region's time zone).

The streak ends today when today is already correct; when today has no file yet (the day is
not over), it ends yesterday; a file rejected today breaks it. The promotion is one recorded
operator action (:func:`promote`): the status change goes to the registry (who, when, why) and
into the region file, so that the next ``sync`` keeps it.

No Airflow import; no wall clock (``today`` is a parameter).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta

import psycopg

from rpu.config import region as region_config
from rpu.flows.plain_text import render
from rpu.store import registry
from rpu.store.db import query

ELIGIBLE_DAYS = 7
LOOKBACK_DAYS = 400  # a streak is counted back this far at most


class PromotionRefused(Exception):
    """The promotion is not allowed; the message (French) says why and what to do."""


@dataclass(frozen=True)
class Streak:
    finess: str
    ordre: int
    name: str
    days: int                     # consecutive correct days
    last_day: date | None         # the last day of the streak (today or yesterday)
    broken_on: date | None        # the last day that was not correct
    broken_because: str | None    # why, in French

    @property
    def eligible(self) -> bool:
        return self.days >= ELIGIBLE_DAYS

    @property
    def since(self) -> date | None:
        return self.last_day - timedelta(days=self.days - 1) if self.days and self.last_day else None

    def describe(self) -> str:
        """One line: the streak and whether it may go live."""
        return render("switch_streak.txt.j2", streak=self, eligible_days=ELIGIBLE_DAYS).strip()


def day_files(conn: psycopg.Connection, finess: str, ordre: int, first: date, last: date,
              tz: str) -> dict[date, tuple[int, int]]:
    """(files loaded, files rejected) per local day with at least one file."""
    rows = conn.execute(query("absence_file_days"),
                        {"finess": finess, "ordre": ordre, "first_day": first, "last_day": last, "tz": tz})
    return {day: (loaded, rejected) for day, loaded, rejected in rows}


def streak(conn: psycopg.Connection, finess: str, ordre: int, today: date, tz: str = "Europe/Paris",
           name: str = "") -> Streak:
    files = day_files(conn, finess, ordre, today - timedelta(days=LOOKBACK_DAYS), today, tz)
    day = today
    loaded, rejected = files.get(today, (0, 0))
    if not loaded and not rejected:
        day = today - timedelta(days=1)  # nothing yet today: the day is not over
    count = 0
    while count < LOOKBACK_DAYS:
        loaded, rejected = files.get(day, (0, 0))
        if loaded and not rejected:
            count += 1
            day -= timedelta(days=1)
            continue
        because = "fichier rejeté" if rejected else "aucun fichier chargé"
        last_day = day + timedelta(days=count) if count else None
        return Streak(finess, ordre, name, count, last_day, day, because)
    return Streak(finess, ordre, name, count, day + timedelta(days=count), None, None)


def streaks(conn: psycopg.Connection, today: date, tz: str = "Europe/Paris") -> list[Streak]:
    """The streak of every ``parallel`` establishment."""
    rows = conn.execute("SELECT finess, ordre, name FROM establishment WHERE status = 'parallel'"
                        " ORDER BY finess, ordre").fetchall()
    return [streak(conn, finess, ordre, today, tz, name) for finess, ordre, name in rows]


@dataclass(frozen=True)
class Promotion:
    change: registry.StatusChange
    streak: Streak
    forced: bool
    reason: str


def promote(conn: psycopg.Connection, finess: str, ordre: int, today: date, *, author: str,
            region_path: str | os.PathLike, force: bool = False, reason: str | None = None,
            tz: str = "Europe/Paris") -> Promotion:
    """Move a ``parallel`` establishment to ``live``, in the registry (author, reason) and in
    the region file. Refused (:class:`PromotionRefused`) unless it has 7 correct days in a row,
    or ``force`` with a ``reason``. Commits."""
    finess = finess.strip().upper()
    reason = (reason or "").strip()
    if force and not reason:
        raise PromotionRefused("--force exige un motif (--reason \"...\") : il est inscrit à l'historique des statuts.")
    row = conn.execute("SELECT status, name FROM establishment WHERE finess = %s AND ordre = %s",
                       (finess, ordre)).fetchone()
    if row is None:
        raise PromotionRefused(f"Établissement inconnu : FINESS {finess}, ORDRE {ordre}. Déclarez-le dans la "
                               "configuration de la région puis lancez « rpu establishments sync ».")
    status, name = row
    if status != "parallel":
        raise PromotionRefused(
            f"{name} (FINESS {finess}, ORDRE {ordre}) est « {status} » : seul un établissement en parallèle "
            "(« parallel ») passe en production par cette commande. Pour un autre changement, modifiez son "
            "statut dans la configuration de la région puis lancez « rpu establishments sync ».")
    current = streak(conn, finess, ordre, today, tz, name)
    if not current.eligible and not force:
        explanation = (f"Passage en production refusé pour {name} (FINESS {finess}, ORDRE {ordre}) : "
                       f"{current.days} jour(s) correct(s) consécutif(s) sur les {ELIGIBLE_DAYS} exigés.")
        if current.broken_on:
            explanation += (f" Dernier jour non conforme : le {current.broken_on:%d/%m/%Y} ({current.broken_because}).")
        explanation += (f" Un jour est correct quand au moins un fichier a été chargé ce jour-là et qu'aucun n'a été "
                        f"rejeté. Réessayez quand la série atteindra {ELIGIBLE_DAYS} jours, ou forcez avec "
                        "--force --reason \"...\" si la décision est prise en connaissance de cause.")
        raise PromotionRefused(explanation)
    if force and not current.eligible:
        why = f"passage en production forcé ({current.days} jour(s) correct(s) consécutif(s)) : {reason}"
    else:
        why = f"passage en production : {current.days} jours corrects consécutifs" + (f" ; {reason}" if reason else "")
    conn.commit()
    # One transaction: if the region file cannot be rewritten, the registry is not changed
    # either (otherwise the next sync would silently put the establishment back in parallel).
    with conn.transaction():
        change = registry.set_status(conn, finess, ordre, "live", author, why)
        try:
            region_config.set_establishment_status(region_path, finess, ordre, "live")
        except (OSError, region_config.RegionConfigError) as error:
            raise PromotionRefused(f"Configuration de la région non modifiable ({error}) : rien n'a été changé.") from None
    return Promotion(change, current, force and not current.eligible, why)
