"""The report sent back to each establishment ("rétro-information"): ``rpu_establishment_reports``.

For each ``live``, ``parallel`` or ``onboarding`` establishment, one self-contained HTML page in
French over the last 8 weeks: visits per day against its own usual level, the files it sent and
what became of them (with the main reasons), the FEDORU completeness and validity of each field
against the 80 % objective and the region's median, the coded values it sends most that are
refused, its timeliness, and what to fix first. Delivered into its own SFTP folder
(``<FINESS>/rapports/``: nobody else sees it) and e-mailed to its IT contacts.

Nothing in the page identifies a patient: only counts, shares and coded values of coded fields
(never a postcode, a commune, a birth date or free text), and only this establishment's data
(the region appears only as a median per field).

The same :func:`build` serves the DAG, ``rpu report establishment`` and the tests. No Airflow here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg

from rpu.config.region import Region, RegionConfigError
from rpu.flows import charts, plain_text
from rpu.flows.templating import render_for
from rpu.formats.rules import RULES
from rpu.store import quality, sends, timeliness
from rpu.store.db import query

log = logging.getLogger(__name__)

STATUSES = ("live", "parallel", "onboarding")
WEEKS = 8
HISTORY_WEEKS = 8  # the usual level of a weekday: its median over the 8 weeks before the day
CODED_FIELDS = ("SEXE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT", "TRANSPORT_PEC", "GRAVITE", "DP", "DA", "ACTE",
                "MODE_SORTIE", "DESTINATION", "ORIENT")
REFUSED_RULES = ("VALUE_NOT_IN_SET", "FORMAT_INVALID", "PROVENANCE_INCOHERENT", "DESTINATION_INCOHERENT",
                 "ORIENT_INCOHERENT")
TOP_CODES = 10
FOLDER = "rapports"
STATUS_LABELS = {"loaded": "chargés", "duplicate": "doublons (déjà reçus)", "superseded": "dépassés (extraction plus "
                 "ancienne)", "rejected": "refusés", "held": "retenus (en attente de l'ORU)", "revoked": "révoqués par l'ORU", "loading": "en cours"}
WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")


class ReportError(Exception):
    """The report cannot be built; the message says why, in French."""


# --- settings of the region ------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """``[establishment_reports]`` of the region file."""

    frequency: str = "weekly"  # "weekly" or "monthly"
    weekday: int = 0  # weekly: 0 = Monday
    day: int = 1  # monthly: day of the month
    email: str = "attachment"  # "attachment", "link" (the SFTP path only) or "none"


def settings(region: Region) -> Settings:
    raw = region.extra.get("establishment_reports") or {}
    frequency = raw.get("frequency", "weekly")
    if frequency not in ("weekly", "monthly"):
        raise RegionConfigError('[establishment_reports] frequency doit valoir "weekly" ou "monthly"')
    weekday = raw.get("weekday", "lundi")
    if isinstance(weekday, str):
        if weekday.lower() not in WEEKDAYS:
            raise RegionConfigError(f"[establishment_reports] weekday : jour inconnu {weekday!r} ({', '.join(WEEKDAYS)})")
        weekday = WEEKDAYS.index(weekday.lower())
    day = int(raw.get("day", 1))
    if not 1 <= day <= 28:
        raise RegionConfigError("[establishment_reports] day doit être entre 1 et 28")
    email = raw.get("email", "attachment")
    if email not in ("attachment", "link", "none"):
        raise RegionConfigError('[establishment_reports] email doit valoir "attachment", "link" ou "none"')
    return Settings(frequency, int(weekday), day, email)


def due(run_day: date, conf: Settings) -> bool:
    """Is ``run_day`` a report day of the region?"""
    if conf.frequency == "monthly":
        return run_day.day == conf.day
    return run_day.weekday() == conf.weekday


def period_for(run_day: date) -> tuple[date, date]:
    """The 8 weeks ending the day before ``run_day`` (a Monday run: eight whole weeks)."""
    end = run_day - timedelta(days=1)
    return end - timedelta(weeks=WEEKS) + timedelta(days=1), end


# --- the page --------------------------------------------------------------------------------------

@dataclass
class Page:
    finess: str
    ordre: int
    name: str
    status: str
    start: date
    end: date  # inclusive
    visits: int
    html: str
    context: dict = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class DayLine:
    day: date
    visits: int
    usual: float | None
    before_first: bool  # before the establishment's first visit ever: not a day "without visits"

    @property
    def gap(self) -> float | None:
        return None if not self.usual else self.visits / self.usual - 1


def _establishment(conn, finess: str, ordre: int) -> tuple[str, str, list[str]]:
    row = conn.execute("SELECT name, status, it_contacts FROM establishment WHERE finess = %s AND ordre = %s",
                       (finess, ordre)).fetchone()
    if row is None:
        raise ReportError(f"Établissement {finess}/{ordre} inconnu du registre (rpu establishments sync ?).")
    return row[0], row[1], list(row[2] or [])


def _days(conn, finess: str, ordre: int, start: date, end: date) -> list[DayLine]:
    history_start = start - timedelta(weeks=HISTORY_WEEKS)
    counts = dict(conn.execute(query("establishment_report_daily"), {
        "finess": finess, "ordre": ordre, "start": history_start, "end": end + timedelta(days=1)}).fetchall())
    first = conn.execute("SELECT min(entree)::date FROM rpu WHERE finess = %s AND ordre = %s",
                         (finess, ordre)).fetchone()[0]
    lines = []
    day = start
    while day <= end:
        same_weekday = [counts.get(day - timedelta(weeks=w), 0) for w in range(1, HISTORY_WEEKS + 1)
                        if first is not None and day - timedelta(weeks=w) >= first]
        usual = float(statistics.median(same_weekday)) if same_weekday else None
        lines.append(DayLine(day, counts.get(day, 0), usual, first is None or day < first))
        day += timedelta(days=1)
    return lines


@dataclass(frozen=True)
class FileLine:
    status: str
    label: str
    rule: str | None
    reason: str | None
    fix: str | None
    files: int
    loaded_records: int
    rejected_records: int


def _files(conn, finess: str, ordre: int, since: datetime, until: datetime) -> list[FileLine]:
    lines = []
    for status, rule, reason, files, loaded, rejected, _last in conn.execute(
            query("establishment_report_files"), {"finess": finess, "ordre": ordre, "since": since, "until": until}):
        fix = RULES[rule].fix if rule in RULES else None
        lines.append(FileLine(status, STATUS_LABELS.get(status, status), rule, reason, fix, int(files), int(loaded),
                              int(rejected)))
    return lines


@dataclass(frozen=True)
class FieldLine:
    field: str
    denominator_label: str
    denominator: int
    exhaustivite: float | None
    exploitabilite: float | None
    region_exhaustivite: float | None
    region_exploitabilite: float | None

    @property
    def below_target(self) -> bool:
        return self.exploitabilite is not None and self.exploitabilite < quality.TARGET


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _fields(conn, key: tuple[str, int], status: str, start: date, end: date) -> tuple[int, list[FieldLine]]:
    statuses = STATUSES if status in STATUSES else (*STATUSES, status)  # by hand: an inactive one too
    visits, indicators = quality.indicators(conn, start, end + timedelta(days=1), statuses)
    mine = indicators.get(key, {})
    others = [values for k, values in indicators.items() if k is not None and visits.get(k)]
    lines = []
    for rule in quality.FIELDS:
        own = mine.get(rule.name)
        region_ex = [v[rule.name].exhaustivite for v in others if v[rule.name].exhaustivite is not None]
        region_ok = [v[rule.name].exploitabilite for v in others if v[rule.name].exploitabilite is not None]
        lines.append(FieldLine(rule.name, rule.denominator, own.denominator if own else 0,
                               own.exhaustivite if own else None, own.exploitabilite if own else None,
                               _median(region_ex), _median(region_ok)))
    return visits.get(key, 0), lines


@dataclass(frozen=True)
class CodeLine:
    field: str
    value: str
    rule: str
    title: str
    fix: str
    visits: int


def _refused_codes(conn, finess: str, ordre: int, start: date, end: date) -> list[CodeLine]:
    rows = conn.execute(query("establishment_report_refused_codes"), {
        "finess": finess, "ordre": ordre, "start": start, "end": end + timedelta(days=1),
        "fields": list(CODED_FIELDS), "rules": list(REFUSED_RULES), "top": TOP_CODES})
    return [CodeLine(f, v[:30], r, RULES[r].title, RULES[r].fix, int(n)) for f, v, r, n in rows]


def _priorities(days: list[DayLine], files: list[FileLine], fields: list[FieldLine], codes: list[CodeLine],
                overall: timeliness.Timeliness | None) -> list[dict]:
    """What to fix first, most important first: each item a ``kind`` and its figures, worded by
    ``include/templates/establishment_priority.html.j2``."""
    out: list[dict] = [{"kind": "files", "line": line, "rule": RULES.get(line.rule)}
                       for line in files if line.status in ("rejected", "held")]
    silent = [d for d in days if d.visits == 0 and not d.before_first]
    if silent:
        out.append({"kind": "silent", "days": len(silent), "first": silent[0].day})
    weak = sorted((f for f in fields if f.below_target), key=lambda f: f.exploitabilite)
    out += [{"kind": "field", "field": f} for f in weak[:3]]
    out += [{"kind": "code", "code": code} for code in codes[:2]]
    if overall is not None and overall.arrival_24h is not None and overall.arrival_24h < quality.TARGET:
        out.append({"kind": "late", "share": overall.arrival_24h})
    return out


def build(conn: psycopg.Connection, region: Region, finess: str, ordre: int, start: date, end: date, *,
          now: datetime | None = None) -> Page:
    """The report of one establishment for [start, end] (inclusive), as a self-contained page."""
    if end < start:
        raise ReportError(f"Période inversée : {start} → {end}.")
    tz = ZoneInfo(region.timezone)
    now = now or datetime.now(tz)
    key = (finess, ordre)
    name, status, _contacts = _establishment(conn, finess, ordre)
    days = _days(conn, finess, ordre, start, end)
    # Files received the day after each day of the period: the night's file carries the day before.
    since = datetime.combine(start + timedelta(days=1), time(0), tz)
    until = datetime.combine(end + timedelta(days=2), time(0), tz)
    files = _files(conn, finess, ordre, since, until)
    visits, fields = _fields(conn, key, status, start, end)
    codes = _refused_codes(conn, finess, ordre, start, end)
    weekly = timeliness.summary(conn, start, end + timedelta(days=1), timezone=region.timezone,
                                statuses=[status], bucket="week", finess=finess, ordre=ordre)
    overall = weekly.of(key)
    weeks = [(week, weekly.of(key, week)) for week in weekly.buckets()]
    title = f"Vos RPU du {start:%d/%m/%Y} au {end:%d/%m/%Y}"
    context = {
        "title": title, "name": name, "finess": finess, "ordre": ordre, "status": status,
        "region_name": region.name, "start": start, "end": end, "generated_at": now.astimezone(tz),
        "timezone": region.timezone, "visits": visits, "days": days,
        # Averaged over the days it was sending (not the days before its first visit).
        "mean_per_day": visits / max(1, sum(1 for d in days if not d.before_first)),
        "files_since": since.date(), "files_until": until.date() - timedelta(days=1),
        "silent_days": sum(1 for d in days if d.visits == 0 and not d.before_first),
        "files": files, "files_total": sum(f.files for f in files),
        "fields": fields, "target": quality.TARGET, "codes": codes,
        "overall": overall, "weeks": [(w, t) for w, t in weeks],
        "priorities": _priorities(days, files, fields, codes, overall),
        "chart_days": charts.daily_against_usual([d.day for d in days], [d.visits for d in days],
                                                 [d.usual for d in days], f"Passages par jour d'entrée — {name}"),
        "chart_timeliness": charts.shares_over_time(
            [w for w, _ in weeks],
            {"reçus dans les 24 h": [t.arrival_24h if t else None for _, t in weeks],
             "reçus dans les 48 h": [t.arrival_48h if t else None for _, t in weeks]},
            "Part des passages reçus par le concentrateur dans les 24 h / 48 h après la sortie, par semaine",
            target=quality.TARGET) if overall else None,
        "folder": f"{finess}/{FOLDER}/",
    }
    html = render_for(region.path, "establishment_report.html.j2", **context)  # its --region's own version first
    return Page(finess, ordre, name, status, start, end, visits, html, context)


# --- the weekly run: build, journal, deliver, e-mail -----------------------------------------------

def file_name(finess: str, ordre: int, start: date, end: date) -> str:
    return f"rapport_{finess}_{ordre}_{start:%Y%m%d}_{end:%Y%m%d}.html"


def reports_dir(region: Region) -> Path:
    return region.exports_base / "rapports_etablissements"


@dataclass
class Built:
    id: int
    finess: str
    ordre: int
    file_name: str
    visits: int


def build_all(conn: psycopg.Connection, region: Region, start: date, end: date, *, finess: str | None = None,
              force: bool = False, now: datetime | None = None) -> tuple[list[Built], list[str]]:
    """Build and journal the period's report of every establishment due (``finess``: only that
    one). A report already journaled for the period is not rebuilt unless ``force``. Returns the
    reports built and the establishments whose report failed (the others go on)."""
    built, failed = [], []
    out = reports_dir(region)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    targets = conn.execute(query("establishment_report_targets"), {"statuses": list(STATUSES), "finess": finess})
    for target_finess, target_ordre, _name, _status, _contacts in targets.fetchall():
        with conn.transaction():
            existing = conn.execute(
                "SELECT id FROM establishment_report WHERE finess = %s AND ordre = %s AND period_start = %s"
                " AND period_end = %s", (target_finess, target_ordre, start, end)).fetchone()
        if existing and not force:
            continue
        try:
            page = build(conn, region, target_finess, target_ordre, start, end, now=now)
            folder = out / target_finess
            folder.mkdir(exist_ok=True, mode=0o700)
            name = file_name(target_finess, target_ordre, start, end)
            with sends.private_file(folder / name, "wb") as stream:
                stream.write(page.html.encode("utf-8"))
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            with conn.transaction():
                row = conn.execute(
                    "INSERT INTO establishment_report (finess, ordre, period_start, period_end, file_name, local_path,"
                    " sha256, visits) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (finess, ordre, period_start, period_end) DO UPDATE SET file_name = EXCLUDED.file_name,"
                    " local_path = EXCLUDED.local_path, sha256 = EXCLUDED.sha256, visits = EXCLUDED.visits,"
                    " status = 'built', attempts = 0, error = NULL, delivered_at = NULL, emailed_at = NULL,"
                    " emailed_to = '{}', created_at = now() RETURNING id",
                    (target_finess, target_ordre, start, end, name, os.fspath(folder / name), digest, page.visits),
                ).fetchone()
            built.append(Built(row[0], target_finess, target_ordre, name, page.visits))
        except Exception:  # one establishment's failure must not stop the others
            log.exception("Rapport de %s/%s impossible", target_finess, target_ordre)
            failed.append(f"{target_finess}/{target_ordre}")
    return built, failed


@dataclass
class Delivery:
    id: int
    finess: str
    ordre: int
    file_name: str
    status: str
    remote_path: str | None = None
    error: str | None = None
    emailed_to: list[str] = field(default_factory=list)


Notify = Callable[[list[str], str, str, list[Path]], None]  # to, subject, body, attachments


def deliver_pending(conn: psycopg.Connection, region: Region, sftp, base: str = "", *,
                    notify: Notify | None = None) -> list[Delivery]:
    """Upload every report not yet delivered into its establishment's ``<FINESS>/rapports/``
    folder of the inbox SFTP server (temporary name, then rename), then e-mail its IT contacts
    once (attachment or link: ``[establishment_reports] email``). A failure is journaled and the
    others go on; the next run retries it."""
    conf = settings(region)
    with conn.transaction():
        rows = conn.execute(
            "SELECT r.id, r.finess::text, r.ordre, r.file_name, r.local_path, r.sha256, r.period_start, r.period_end,"
            " r.visits, r.status, e.name, e.it_contacts FROM establishment_report r"
            " JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre"
            " WHERE r.status IN ('built', 'failed') OR (r.status = 'delivered' AND r.emailed_at IS NULL)"
            " ORDER BY r.id").fetchall()
    out = []
    for (report_id, finess, ordre, name, local_path, digest, start, end, visits, status, estab_name,
         contacts) in rows:
        folder = posixpath.join(base, finess, FOLDER) if base else posixpath.join(finess, FOLDER)
        remote = posixpath.join(folder, name)
        delivery = Delivery(report_id, finess, ordre, name, status, remote)
        if status != "delivered":
            try:
                if hashlib.sha256(Path(local_path).read_bytes()).hexdigest() != digest:
                    raise sends.DeliveryError(f"Le rapport {local_path} a changé depuis sa construction.")
                sends.ensure_folder(sftp, folder)
                sends.SftpOutbox(sftp, folder)(_AsSend(local_path, name, Path(local_path).stat().st_size))
                delivery.status = "delivered"
            except Exception as error:
                delivery.status, delivery.error = "failed", f"{type(error).__name__}: {error}"
                log.warning("Rapport n°%s (%s/%s) non déposé : %s", report_id, finess, ordre, delivery.error)
            with conn.transaction():
                conn.execute(
                    "UPDATE establishment_report SET status = %s, attempts = attempts + 1, remote_path = %s,"
                    " error = %s, delivered_at = CASE WHEN %s = 'delivered' THEN now() END WHERE id = %s",
                    (delivery.status, remote if delivery.status == "delivered" else None, delivery.error,
                     delivery.status, report_id))
        if delivery.status == "delivered" and notify is not None and conf.email != "none":
            to = list(contacts or [])
            if to:
                subject, body = email_text(region, estab_name, finess, ordre, start, end, visits, remote, conf.email)
                notify(to, subject, body, [Path(local_path)] if conf.email == "attachment" else [])
                delivery.emailed_to = to
            with conn.transaction():
                conn.execute("UPDATE establishment_report SET emailed_at = now(), emailed_to = %s WHERE id = %s",
                             (to, report_id))
        out.append(delivery)
    return out


@dataclass(frozen=True)
class _AsSend:
    """What :class:`rpu.store.sends.SftpOutbox` needs of a send."""

    local_path: str
    file_name: str
    size_bytes: int


def email_text(region: Region, name: str, finess: str, ordre: int, start: date, end: date, visits: int,
               remote_path: str, mode: str) -> tuple[str, str]:
    subject = plain_text.subject("establishment_report_email_subject.txt.j2", region_code=region.code, start=start,
                                 end=end, name=name)
    body = plain_text.render("establishment_report_email.txt.j2", region_name=region.name, name=name, finess=finess,
                             ordre=ordre, start=start, end=end, visits=visits, remote_path=remote_path,
                             attached=mode == "attachment", operator_emails=list(region.operator_emails))
    return subject, body
