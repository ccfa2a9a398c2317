"""Quality and activity indicators of the regional database (rpu-format.md §3), for the ARS
report: FEDORU exhaustivité and exploitabilité per field and establishment, daily visits, CCMU,
age pyramid, length of stay, files received.

Everything is aggregated by PostgreSQL (``include/sql/queries/ars_*.sql``); Python only gets a
few rows per establishment, never the visits themselves. The value sets come from
``rpu.formats.nomenclature``, so the indicators and the file validation share one definition.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime

import psycopg

from rpu.formats import nomenclature as nom
from rpu.store.db import query

Key = tuple[str, int]  # (FINESS, ORDRE); None stands for the whole region

# Statuses whose data is exported by default: an establishment in onboarding sends test data, one
# in parallel is still forwarded by the older concentrator (design.md, establishment lifecycle).
DEFAULT_STATUSES = ("live", "inactive")


@dataclass(frozen=True)
class FieldRule:
    """One field of the FEDORU indicators: what counts in its denominator, what makes it valid."""

    name: str  # OSCOUR element name
    column: str  # prefix of the columns of ars_quality.sql
    denominator: str  # French
    validity: str  # French


ALL_RPU = "tous les RPU"
FIELDS: tuple[FieldRule, ...] = (
    FieldRule("CP", "cp", ALL_RPU, "5 chiffres"),
    FieldRule("COMMUNE", "commune", ALL_RPU, "renseignée (texte libre)"),
    FieldRule("NAISSANCE", "naissance", ALL_RPU, "date lisible, âge de 0 à 120 ans à l'entrée"),
    FieldRule("SEXE", "sexe", ALL_RPU, "M, F ou I"),
    FieldRule("MODE_ENTREE", "mode_entree", ALL_RPU, "6, 7 ou 8"),
    FieldRule("PROVENANCE", "provenance", ALL_RPU,
              "dans la nomenclature et cohérente avec MODE_ENTREE (6/7 : 1 à 4 ; 8 : 5, 6, 7 ou 8)"),
    FieldRule("TRANSPORT", "transport", ALL_RPU, "PERSO, AMBU, VSAB, SMUR, HELI ou FO"),
    FieldRule("TRANSPORT_PEC", "transport_pec", ALL_RPU, "MED, PARAMED ou AUCUN"),
    FieldRule("MOTIF", "motif", ALL_RPU, "renseigné (thésaurus SFMU, CIM-10 ou texte libre)"),
    FieldRule("GRAVITE", "gravite", ALL_RPU, "CCMU : 1, P, 2, 3, 4, 5 ou D"),
    FieldRule("DP", "dp", "RPU dont ORIENT n'est pas FUGUE, PSA, SCAM ni REO", "code CIM-10"),
    FieldRule("SORTIE", "sortie", ALL_RPU, "durée de passage de 0 à 72 h (0 exclu)"),
    FieldRule("MODE_SORTIE", "mode_sortie", ALL_RPU, "6, 7, 8 ou 9"),
    FieldRule("DESTINATION", "destination", "RPU avec MODE_SORTIE 6 ou 7", "1 à 4"),
    FieldRule("ORIENT", "orient", "RPU avec MODE_SORTIE 6 ou 7", "HDT, HO, SC, SI, REA, UHCD, MED, CHIR ou OBST"),
)
TARGET = 0.80  # FEDORU target for every field

CCMU_CLASSES = ("1", "P", "2", "3", "4", "5", "D")
AGE_BANDS = tuple(f"{10 * i}–{10 * i + 9} ans" for i in range(10)) + ("100 ans et +",)
# Length-of-stay classes (minutes): < 1 h, 1–2 h, 2–4 h, 4–6 h, 6–8 h, 8–12 h, 12–24 h, 24–48 h, 48–72 h.
STAY_BOUNDS = (60, 120, 240, 360, 480, 720, 1440, 2880)
STAY_CLASSES = ("< 1 h", "1–2 h", "2–4 h", "4–6 h", "6–8 h", "8–12 h", "12–24 h", "24–48 h", "48–72 h")
FILE_STATUSES = ("loaded", "duplicate", "superseded", "held", "rejected", "revoked", "loading")


@dataclass(frozen=True)
class Indicator:
    field: str
    denominator: int
    filled: int
    valid: int

    @property
    def exhaustivite(self) -> float | None:
        return self.filled / self.denominator if self.denominator else None

    @property
    def exploitabilite(self) -> float | None:
        return self.valid / self.denominator if self.denominator else None


@dataclass(frozen=True)
class Establishment:
    finess: str
    ordre: int
    name: str
    status: str

    @property
    def key(self) -> Key:
        return (self.finess, self.ordre)


@dataclass(frozen=True)
class StaySummary:
    visits: int
    with_sortie: int
    kept: int  # 0 < d <= 72 h
    median_minutes: float | None
    p90_minutes: float | None
    bins: tuple[int, ...]  # RPU per STAY_CLASSES


@dataclass
class FileCounts:
    by_status: dict[str, int] = field(default_factory=dict)
    records_rejected: int = 0
    last_received_at: datetime | None = None

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


@dataclass
class ReportData:
    """Everything the ARS report shows, already aggregated."""

    start: date  # first ENTREE day of the period
    end: date  # exclusive
    window_start: date  # first day of the activity window (8 weeks)
    establishments: list[Establishment]  # in the export scope
    excluded: list[Establishment]  # registered, but out of the export scope (their status)
    visits: dict[Key | None, int]
    quality: dict[Key | None, dict[str, Indicator]]
    daily: dict[Key, dict[date, int]]
    ccmu: dict[Key | None, dict[str, int]]
    ages: dict[tuple[str, int | None], int]
    stays: dict[Key | None, StaySummary]
    files: dict[Key, FileCounts]


def value_set_params() -> dict:
    """The value sets and patterns of rpu.formats.nomenclature, as ars_quality.sql expects them."""
    sets = nom.VALUE_SETS
    return {
        "cp_format": nom.CP_FORMAT.pattern,
        "cim10_format": nom.CIM10_FORMAT.pattern,
        "sexe": sorted(sets["SEXE"]),
        "mode_entree": sorted(sets["MODE_ENTREE"]),
        "provenance": sorted(sets["PROVENANCE"]),
        "provenance_after_transfer": sorted(nom.PROVENANCE_BY_MODE_ENTREE["6"]),
        "provenance_after_home": sorted(nom.PROVENANCE_BY_MODE_ENTREE["8"]),
        "transport": sorted(sets["TRANSPORT"]),
        "transport_pec": sorted(sets["TRANSPORT_PEC"]),
        "gravite": sorted(sets["GRAVITE"]),
        "mode_sortie": sorted(sets["MODE_SORTIE"]),
        "destination_after_transfer": sorted(nom.DESTINATION_BY_MODE_SORTIE["6"]),
        "orient_after_transfer": sorted(nom.ORIENT_AFTER_TRANSFER),
        "orient_after_home": sorted(nom.ORIENT_AFTER_HOME),
    }


def _key(finess: str | None, ordre: int | None) -> Key | None:
    return None if finess is None else (finess, int(ordre))


def indicators(conn: psycopg.Connection, start: date, end: date,
               statuses=DEFAULT_STATUSES) -> tuple[dict[Key | None, int], dict[Key | None, dict[str, Indicator]]]:
    """Visits and FEDORU indicators per establishment and for the region (key None)."""
    params = {"start": start, "end": end, "statuses": list(statuses)} | value_set_params()
    visits: dict[Key | None, int] = {}
    result: dict[Key | None, dict[str, Indicator]] = {}
    with conn.cursor() as cursor:
        cursor.execute(query("ars_quality"), params)
        names = [column.name for column in cursor.description]
        for row in cursor:
            values = dict(zip(names, row, strict=True))
            key = _key(values["finess"], values["ordre"])
            visits[key] = values["visits"]
            result[key] = {
                rule.name: Indicator(rule.name, values[f"{rule.column}_den"], values[f"{rule.column}_filled"],
                                     values[f"{rule.column}_valid"])
                for rule in FIELDS
            }
    return visits, result


def daily_visits(conn: psycopg.Connection, start: date, end: date,
                 statuses=DEFAULT_STATUSES) -> dict[Key, dict[date, int]]:
    out: dict[Key, dict[date, int]] = defaultdict(dict)
    rows = conn.execute(query("ars_daily_visits"), {"start": start, "end": end, "statuses": list(statuses)})
    for finess, ordre, day, count in rows:
        out[(finess, ordre)][day] = count
    return dict(out)


def ccmu(conn: psycopg.Connection, start: date, end: date, statuses=DEFAULT_STATUSES) -> dict[Key | None, dict[str, int]]:
    """RPU per CCMU class ('' not filled, '?' outside the value set), per establishment and region."""
    out: dict[Key | None, dict[str, int]] = defaultdict(dict)
    params = {"start": start, "end": end, "statuses": list(statuses), "gravite": sorted(nom.VALUE_SETS["GRAVITE"])}
    for finess, ordre, gravite, count in conn.execute(query("ars_ccmu"), params):
        out[_key(finess, ordre)][gravite] = count
    return dict(out)


def age_pyramid(conn: psycopg.Connection, start: date, end: date,
                statuses=DEFAULT_STATUSES) -> dict[tuple[str, int | None], int]:
    """RPU per (sex M/F/I, 10-year band of the age at ENTREE, None when unknown)."""
    rows = conn.execute(query("ars_age_pyramid"), {"start": start, "end": end, "statuses": list(statuses)})
    return {(sexe, band): count for sexe, band, count in rows}


def length_of_stay(conn: psycopg.Connection, start: date, end: date,
                   statuses=DEFAULT_STATUSES) -> dict[Key | None, StaySummary]:
    params = {"start": start, "end": end, "statuses": list(statuses), "bounds": list(map(float, STAY_BOUNDS))}
    out: dict[Key | None, StaySummary] = {}
    for finess, ordre, visits, with_sortie, kept, median, p90, bins in conn.execute(query("ars_length_of_stay"), params):
        counts = tuple(int(bins.get(str(i), 0)) for i in range(len(STAY_CLASSES)))
        out[_key(finess, ordre)] = StaySummary(visits, with_sortie, kept, median, p90, counts)
    return out


def received_files(conn: psycopg.Connection, since: datetime, until: datetime,
                   statuses=DEFAULT_STATUSES) -> dict[Key, FileCounts]:
    out: dict[Key, FileCounts] = defaultdict(FileCounts)
    params = {"since": since, "until": until, "statuses": list(statuses)}
    for finess, ordre, status, files, rejected, last in conn.execute(query("ars_received_files"), params):
        counts = out[(finess, ordre)]
        counts.by_status[status] = files
        counts.records_rejected += rejected
        if counts.last_received_at is None or last > counts.last_received_at:
            counts.last_received_at = last
    return dict(out)


def establishments(conn: psycopg.Connection) -> list[Establishment]:
    return [Establishment(finess, ordre, name, status)
            for finess, ordre, name, status in conn.execute(query("ars_establishments"))]


def collect(conn: psycopg.Connection, *, start: date, end: date, window_start: date, files_since: datetime,
            files_until: datetime, statuses=DEFAULT_STATUSES) -> ReportData:
    """All the report's aggregates. Run it in the export's snapshot so that the report and the
    data files describe the same database state."""
    statuses = tuple(statuses)
    registered = establishments(conn)
    visits, quality = indicators(conn, start, end, statuses)
    in_scope = [e for e in registered if e.status in statuses]
    known = {e.key for e in in_scope}
    # Visits of an establishment missing from the registry cannot be in scope (the join drops them).
    return ReportData(
        start=start, end=end, window_start=window_start,
        establishments=in_scope,
        excluded=[e for e in registered if e.key not in known],
        visits=visits, quality=quality,
        daily=daily_visits(conn, window_start, end, statuses),
        ccmu=ccmu(conn, start, end, statuses),
        ages=age_pyramid(conn, start, end, statuses),
        stays=length_of_stay(conn, start, end, statuses),
        files=received_files(conn, files_since, files_until, statuses),
    )
