"""The monthly SYRIUS files for ATIH and their reconciliation: ``rpu_atih_monthly``.

For a month M of year Y, every **live** establishment (FINESS, ORDRE) gets one cumulative
SYRIUS file, 1 January → last day of M, anonymised (CODEGEO, AGE, AGE_JOURS instead of CP,
COMMUNE, NAISSANCE) and zipped (rpu-format.md §4), journaled as a send (destination
``atih``, kind ``monthly``, year, month). Establishments in ``parallel`` are left out, like
``onboarding`` and ``inactive``: the older concentrator still sends them to ATIH, and ATIH
must not receive the same establishment's month twice. An establishment without any visit
in the period gets no file (there is nothing to count on Syrius's page).

Delivery (``region.atih_delivery``):

- ``http``: Syrius's two-step upload. A multipart POST with ``check=1`` and ``userId``,
  ``userPwd``, ``year``, ``period``, ``finess``, ``rpuCount``, ``ordre``; only if the answer
  says ``OK``, the same POST with ``check=0`` and the zip in ``theFile``. Any other answer
  leaves the send ``failed`` with the answer journaled.
- ``sftp``: the zip dropped in a folder (temporary name, then rename).

A send is ``sent`` only on ATIH's ``OK`` (or once the file is renamed on the SFTP server).

The reconciliation (view ``atih_reconciliation``, migration 005) gives, per establishment
and month, the latest file, its status and ATIH's answer, and the RPU per month each file
holds (``atih_send_month``, counted while the file is written); ``write_reconciliation``
turns it into the two CSV files the ORU compares with Syrius's page (the year view pivoted
with pandas), ``summary_text`` into the e-mail (``include/templates/atih_summary*.txt.j2``). Re-running a month
builds it again: a new send row, the earlier one of that month cancelled if not yet
delivered; the reconciliation shows the latest.
"""

from __future__ import annotations

import calendar
import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import psycopg
from psycopg.rows import dict_row

from rpu.flows.invs import local_now
from rpu.flows.templating import render
from rpu.formats.model import Header, Visit
from rpu.formats.syrius import CodegeoTable, write_syrius_zip
from rpu.store import sends
from rpu.store.db import query
from rpu.store.extract import count_visits, visits_for

log = logging.getLogger(__name__)

DESTINATION = "atih"
MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
             "novembre", "décembre")
# ATIH's answers are free text; a send is accepted when the answer has OK as a word
# ("OK", "OK;12 RPU"), and never on "KO" nor "NOK".
_ACCEPTED = re.compile(r"(?<![A-Za-z])OK(?![A-Za-z])")
_ANSWER_MAX = 2000


# --- which month -------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonthPlan:
    year: int
    month: int
    # True when the operator named the month: every live establishment is rebuilt. False for
    # the scheduled run: only what is not journaled yet is built (so a daily run after
    # atih_day catches up an establishment gone live since, and builds nothing twice).
    forced: bool

    @property
    def start(self) -> date:
        return date(self.year, 1, 1)

    @property
    def end(self) -> date:
        return last_day(self.year, self.month)

    @property
    def label(self) -> str:
        return f"{self.month:02d}/{self.year}"


def last_day(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


def previous_month(day: date) -> tuple[int, int]:
    """The month before ``day``'s (January → December of the year before)."""
    first = day.replace(day=1) - timedelta(days=1)
    return first.year, first.month


def plan_month(today: date, atih_day: int, year: int | None = None, month: int | None = None) -> MonthPlan | None:
    """The month a run must send, or None when a scheduled run has nothing to do yet.

    With ``year`` and ``month`` (a re-run asked by the operator): that month, which must be
    over. Without: the month before ``today``, from the region's ``atih_day`` of the month on
    (None before it). Raises ValueError on a wrong request (in French, for the operator)."""
    if (year is None) != (month is None):
        raise ValueError("Donnez l'année et le mois ensemble (year et month), ou aucun des deux.")
    if year is not None:
        if not 1 <= month <= 12:
            raise ValueError(f"Mois invalide : {month} (attendu 1 à 12).")
        if not 2000 <= year <= 2100:
            raise ValueError(f"Année invalide : {year}.")
        if last_day(year, month) >= today:
            raise ValueError(f"Le mois {month:02d}/{year} n'est pas terminé : le fichier cumulé serait incomplet.")
        return MonthPlan(year, month, forced=True)
    if today.day < atih_day:
        return None
    year, month = previous_month(today)
    return MonthPlan(year, month, forced=False)


# --- building ----------------------------------------------------------------------------------

def syrius_zip_name(finess: str, ordre: int, when: datetime) -> str:
    """``<FINESS>_<ORDRE><yyyymmddHHMMSS>.zip``, the name of the zip entry without ``.rpu.xml``."""
    return f"{finess}_{ordre}{when:%Y%m%d%H%M%S}.zip"


class _MonthCounter:
    """Passes visits through and counts them by ENTREE month (the file is cumulative)."""

    def __init__(self) -> None:
        self.by_month = [0] * 13

    def count(self, visits: Iterable[Visit]) -> Iterator[Visit]:
        by_month = self.by_month
        for visit in visits:
            by_month[visit.entree.month] += 1
            yield visit


def build_syrius(conn: psycopg.Connection, finess: str, ordre: int, year: int, month: int,
                 codegeo: CodegeoTable, out_path: str | os.PathLike, *,
                 when: datetime | None = None) -> tuple[str, int, list[int]]:
    """Write one establishment's cumulative SYRIUS zip (1 January → end of ``month``) from the
    regional database. Returns (zip entry name, PATIENT count, PATIENT count by ENTREE month
    as a 13-item list indexed by month number). The zip is owner-only and appears whole."""
    plan = MonthPlan(year, month, forced=True)
    when = when or local_now()
    header = Header("SYRIUS", finess, ordre, when, plan.start, plan.end)
    counter = _MonthCounter()
    visits = visits_for(conn, finess, ordre, plan.start, plan.end, anonymised=True)
    with closing(visits):
        entry, count = write_syrius_zip(out_path, header, counter.count(visits), codegeo, when)
    return entry, count, counter.by_month


@dataclass
class MonthlyOutcome:
    plan: MonthPlan
    built: list[sends.Send]
    without_data: list[tuple[str, int]]  # live establishments with no visit in the period
    already_journaled: list[tuple[str, int]]  # scheduled run: sent or pending already
    errors: list[str]  # "FINESS/ORDRE" whose file could not be built (the error is logged)


def live_establishments(conn: psycopg.Connection) -> list[tuple[str, int]]:
    """(FINESS, ORDRE) of every live establishment: those whose month is sent to ATIH."""
    with conn.transaction():
        return [(finess, ordre) for finess, ordre, _name in conn.execute(query("live_establishments")).fetchall()]


def build_monthly(conn: psycopg.Connection, plan: MonthPlan, codegeo: CodegeoTable, outbox: str | os.PathLike, *,
                  timezone: str = "Europe/Paris", now: datetime | None = None) -> MonthlyOutcome:
    """Build and journal the month's file of every live establishment (only the missing ones
    unless ``plan.forced``). Each establishment in its own transaction: a failure on one
    leaves nothing of it behind, does not stop the others, and is listed in ``errors``. (The
    DAG builds the establishments as separate tasks, with ``build_establishment``.)"""
    outcome = MonthlyOutcome(plan, [], [], [], [])
    for finess, ordre in live_establishments(conn):
        try:
            kind, send = build_establishment(conn, plan, finess, ordre, codegeo, outbox, timezone=timezone, now=now)
        except Exception:  # one establishment's failure must not stop the others
            log.exception("ATIH : construction impossible pour %s/%s", finess, ordre)
            outcome.errors.append(f"{finess}/{ordre}")
            continue
        if kind == BUILT:
            outcome.built.append(send)
        else:
            getattr(outcome, kind).append((finess, ordre))
    return outcome


BUILT, WITHOUT_DATA, ALREADY_JOURNALED = "built", "without_data", "already_journaled"


def build_establishment(conn: psycopg.Connection, plan: MonthPlan, finess: str, ordre: int, codegeo: CodegeoTable,
                        outbox: str | os.PathLike, *, timezone: str = "Europe/Paris",
                        now: datetime | None = None) -> tuple[str, sends.Send | None]:
    """One establishment's month, in one transaction: (``BUILT``, the send), or
    (``WITHOUT_DATA``, None) when it has no visit in the period, or (``ALREADY_JOURNALED``,
    None) when a scheduled run finds the month sent or pending already. Raises on failure,
    leaving nothing behind."""
    outbox = Path(outbox)
    outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = {"finess": finess, "ordre": ordre, "year": plan.year, "month": plan.month}
    with conn.transaction():
        # One build of an establishment's month at a time (a re-run beside a scheduled run).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"atih/{finess}/{ordre}",))
        if not plan.forced and conn.execute(query("atih_month_sent_or_pending"), key).fetchone()[0]:
            return ALREADY_JOURNALED, None
        if count_visits(conn, finess, ordre, plan.start, plan.end) == 0:
            return WITHOUT_DATA, None
        return BUILT, _build_one(conn, plan, finess, ordre, codegeo, outbox, now or local_now(timezone))


def _build_one(conn, plan: MonthPlan, finess: str, ordre: int, codegeo: CodegeoTable, outbox: Path,
               when: datetime) -> sends.Send:
    path = outbox / syrius_zip_name(finess, ordre, when)
    while path.exists():
        when += timedelta(seconds=1)
        path = outbox / syrius_zip_name(finess, ordre, when)
    try:
        _entry, count, by_month = build_syrius(conn, finess, ordre, plan.year, plan.month, codegeo, path, when=when)
        send = sends.record_built(
            conn, destination=DESTINATION, path=path, visit_count=count, kind="monthly", finess=finess, ordre=ordre,
            period_start=plan.start, period_end=plan.end, year=plan.year, month=plan.month,
        )
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO atih_send_month (send_id, month, visits) VALUES (%s, %s, %s)",
                [(send.id, m, by_month[m]) for m in range(1, plan.month + 1)],
            )
        conn.execute(query("atih_cancel_superseded"), {
            "finess": finess, "ordre": ordre, "year": plan.year, "month": plan.month, "replaced_by": send.id})
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    log.info("ATIH : %s construit (%s RPU, %s)", send.file_name, count, plan.label)
    return send


# --- delivering --------------------------------------------------------------------------------

def accepted(answer: str) -> bool:
    """True when Syrius's answer says OK."""
    return bool(_ACCEPTED.search(answer or ""))


def _short(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= _ANSWER_MAX else text[:_ANSWER_MAX] + "…"


class SyriusUpload:
    """Syrius's two-step HTTP upload of one send (rpu-format.md §4), for ``sends.attempt``.

    ``url`` is the upload address; ``user``/``password`` the region's e-PMSI account. The
    password goes in the form only, never in an answer or a log line."""

    def __init__(self, url: str, user: str, password: str, *, timeout: tuple[float, float] = (15, 600),
                 session=None):
        import requests

        self.url = url
        self.user = user
        self.password = password
        self.timeout = timeout
        self.session = session or requests.Session()

    def close(self) -> None:
        self.session.close()

    def _fields(self, send: sends.Send, check: int) -> dict:
        return {
            "check": (None, str(check)),
            "userId": (None, self.user),
            "userPwd": (None, self.password),
            "year": (None, str(send.year)),
            "period": (None, str(send.month)),
            "finess": (None, send.finess),
            "rpuCount": (None, str(send.visit_count)),
            "ordre": (None, str(send.ordre or 0)),
        }

    def _post(self, files: dict) -> str:
        response = self.session.post(self.url, files=files, timeout=self.timeout)
        answer = _short(response.text)
        if response.status_code != 200:
            raise sends.DeliveryError(f"HTTP {response.status_code} : {answer}")
        return answer

    def __call__(self, send: sends.Send) -> str:
        checked = self._post(self._fields(send, 1))
        if not accepted(checked):
            raise sends.DeliveryError(f"contrôle refusé par Syrius : {checked}")
        with open(send.local_path, "rb") as zipped:
            files = self._fields(send, 0)
            files["theFile"] = (send.file_name, zipped, "application/zip")
            deposited = self._post(files)
        if not accepted(deposited):
            raise sends.DeliveryError(f"dépôt refusé par Syrius : {deposited} (contrôle : {checked})")
        return f"contrôle : {checked} ; dépôt : {deposited}"


def syrius_url(conn_type: str | None, host: str | None, schema: str | None, port: int | None,
               extra: dict | None = None) -> str:
    """The upload address from an Airflow connection's fields.

    ``extra.url`` when given, as is. Otherwise built from the host (which may carry its own
    scheme), the port, and the path: ``schema`` as in a URI-form connection
    (``https://user:pwd@host/path/to/upload`` puts ``path/to/upload`` in schema), unless
    ``schema`` is ``http``/``https`` (the HTTP hook's convention), then the path is
    ``extra.endpoint``. The scheme is the connection type's when it is http/https, else https."""
    extra = extra or {}
    if extra.get("url"):
        return str(extra["url"])
    if not host:
        raise ValueError("connexion atih_syrius : hôte manquant")
    scheme = conn_type if conn_type in ("http", "https") else "https"
    path = schema or ""
    if path in ("http", "https"):
        scheme, path = path, ""
    path = path or str(extra.get("endpoint", ""))
    if "://" in host:
        scheme, host = host.split("://", 1)
    host = host.rstrip("/")
    netloc = f"{host}:{port}" if port else host
    return f"{scheme}://{netloc}/{path.lstrip('/')}"


def deliver(conn: psycopg.Connection, deliver_one: sends.Deliver) -> list[sends.Send]:
    """(Re)try every pending ATIH send, oldest first, with ``deliver_one`` (a
    ``SyriusUpload`` or an ``sends.SftpOutbox``)."""
    return sends.deliver_pending(conn, DESTINATION, deliver_one)


# --- reconciliation ----------------------------------------------------------------------------

RECONCILIATION_COLUMNS = (
    "annee", "mois", "finess", "ordre", "etablissement", "fichiers_acceptes", "envoi_no", "fichier", "statut",
    "rpu_fichier_cumul", "rpu_du_mois", "tentatives", "reponse_serveur", "construit_le", "envoye_le",
)
_STATUS_FR = {"built": "construit", "sent": "envoyé", "failed": "en échec", "cancelled": "annulé"}


@dataclass(frozen=True)
class Reconciliation:
    month_csv: Path
    year_csv: Path
    rows: list[dict]
    year_table: pd.DataFrame  # the year view as written, the region's total last


def reconciliation_rows(conn: psycopg.Connection, year: int) -> list[dict]:
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(query("atih_reconciliation"), {"year": year}).fetchall()


def year_view(conn: psycopg.Connection, year: int) -> pd.DataFrame:
    """The year as Syrius's page shows it, the table the ORU checks against it: one row per
    establishment with sends accepted in ``year`` (finess, ordre, etablissement), then per month
    the files ATIH accepted (``<mois> fichiers``) and the RPU of the month in the latest of them
    (``<mois> RPU``), 0 for a month without any; the region's total (``RÉGION``) last."""
    with conn.transaction(), conn.cursor() as cursor:
        cursor.execute(query("atih_year_view"), {"year": year})
        frame = pd.DataFrame.from_records(cursor.fetchall(), columns=[c.name for c in cursor.description])
    frame = frame.assign(name=frame["name"].fillna(""), rpu=frame["rpu"].fillna(0))
    months = range(1, 13)
    wide = (frame.set_index(["finess", "ordre", "name", "month"])[["files", "rpu"]]
            .unstack("month", fill_value=0)
            .reindex(columns=[(kind, m) for m in months for kind in ("files", "rpu")], fill_value=0)
            .fillna(0).astype(int))
    wide.columns = [f"{MONTHS_FR[m - 1]} {'fichiers' if kind == 'files' else 'RPU'}" for kind, m in wide.columns]
    table = wide.reset_index().rename(columns={"name": "etablissement"})
    total = {"finess": "RÉGION", "ordre": "", "etablissement": "total"} | wide.sum().astype(int).to_dict()
    return pd.concat([table.astype(object), pd.DataFrame([total], dtype=object)], ignore_index=True)


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    """``;``-separated, UTF-8 with BOM, owner-only, written under a temporary name then renamed."""
    with sends.private_file(path, "w", encoding="utf-8-sig", newline="") as stream:
        writer = csv.writer(stream, delimiter=";", lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)


def _when(value: datetime | None, timezone: str) -> str:
    return value.astimezone(ZoneInfo(timezone)).strftime("%d/%m/%Y %H:%M") if value else ""


def write_reconciliation(conn: psycopg.Connection, plan: MonthPlan, directory: str | os.PathLike, *,
                         timezone: str = "Europe/Paris") -> Reconciliation:
    """Write the two CSV files (``;``, UTF-8 with BOM, owner-only) of the year of ``plan``:

    - ``atih_rapprochement_<yyyy>-<mm>.csv``: per establishment and month of the year, the
      latest file, its status, ATIH's answer, the RPU it holds (cumulated) and those of the month
      (one line per row of the view, as it is);
    - ``atih_vue_annuelle_<yyyy>.csv``: :func:`year_view`, what Syrius's page shows."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    rows = reconciliation_rows(conn, plan.year)
    month_csv = directory / f"atih_rapprochement_{plan.year}-{plan.month:02d}.csv"
    _csv(month_csv, list(RECONCILIATION_COLUMNS), [[
        r["year"], r["month"], r["finess"], r["ordre"], r["name"] or "", r["files_sent"], r["send_id"], r["file_name"],
        _STATUS_FR.get(r["status"], r["status"]), r["visit_count"], r["month_visits"] if r["month_visits"] is not None
        else "", r["attempts"], r["remote_answer"] or "", _when(r["created_at"], timezone), _when(r["sent_at"], timezone),
    ] for r in rows])

    year_table = year_view(conn, plan.year)
    year_csv = directory / f"atih_vue_annuelle_{plan.year}.csv"
    _csv(year_csv, list(year_table.columns), year_table.values.tolist())
    return Reconciliation(month_csv, year_csv, rows, year_table)


def summary_text(plan: MonthPlan, rows: list[dict], region_name: str = "") -> tuple[str, str]:
    """(subject, body) of the e-mail to the ORU, in French (``include/templates/atih_summary*.txt.j2``)."""
    of_month = [r | {"statut": _STATUS_FR.get(r["status"], r["status"])} for r in rows if r["month"] == plan.month]
    values = {"plan": plan, "region_name": region_name, "of_month": of_month,
              "sent": [r for r in of_month if r["status"] == "sent"],
              "failed": [r for r in of_month if r["status"] != "sent"]}
    return render("atih_summary_subject.txt.j2", **values).strip(), render("atih_summary.txt.j2", **values)
