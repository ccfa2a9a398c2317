"""Quality and activity indicators of the regional database (rpu-format.md §3), for the ARS
report and the establishments' reports: FEDORU exhaustivité and exploitabilité per field and
establishment, CCMU, age pyramid, length of stay; ``frame`` reads any of the ``ars_*`` queries
as a DataFrame (the ARS report pivots them, ``rpu.flows.ars_report``).

Everything is aggregated by PostgreSQL (``include/sql/queries/ars_*.sql``); Python only gets a
few rows per establishment, never the visits themselves. The value sets come from
``rpu.formats.nomenclature``, so the indicators and the file validation share one definition.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date

import pandas as pd
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


def params(name: str, start: date, end: date, statuses=DEFAULT_STATUSES) -> dict:
    """The parameters of the ``ars_*`` query ``name`` over the ENTREE days [start, end)."""
    base = {"start": start, "end": end, "statuses": list(statuses)}
    if name == "ars_quality":
        return base | value_set_params()
    if name == "ars_ccmu":
        return base | {"gravite": sorted(nom.VALUE_SETS["GRAVITE"])}
    if name == "ars_length_of_stay":
        return base | {"bounds": list(map(float, STAY_BOUNDS))}
    return base


def _key(finess: str | None, ordre: int | None) -> Key | None:
    return None if finess is None else (finess, int(ordre))


def indicators(conn: psycopg.Connection, start: date, end: date,
               statuses=DEFAULT_STATUSES) -> tuple[dict[Key | None, int], dict[Key | None, dict[str, Indicator]]]:
    """Visits and FEDORU indicators per establishment and for the region (key None)."""
    visits: dict[Key | None, int] = {}
    result: dict[Key | None, dict[str, Indicator]] = {}
    with conn.cursor() as cursor:
        cursor.execute(query("ars_quality"), params("ars_quality", start, end, statuses))
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


def ccmu(conn: psycopg.Connection, start: date, end: date, statuses=DEFAULT_STATUSES) -> dict[Key | None, dict[str, int]]:
    """RPU per CCMU class ('' not filled, '?' outside the value set), per establishment and region."""
    out: dict[Key | None, dict[str, int]] = defaultdict(dict)
    for finess, ordre, gravite, count in conn.execute(query("ars_ccmu"), params("ars_ccmu", start, end, statuses)):
        out[_key(finess, ordre)][gravite] = count
    return dict(out)


def age_pyramid(conn: psycopg.Connection, start: date, end: date,
                statuses=DEFAULT_STATUSES) -> dict[tuple[str, int | None], int]:
    """RPU per (sex M/F/I, 10-year band of the age at ENTREE, None when unknown)."""
    rows = conn.execute(query("ars_age_pyramid"), params("ars_age_pyramid", start, end, statuses))
    return {(sexe, band): count for sexe, band, count in rows}


def length_of_stay(conn: psycopg.Connection, start: date, end: date,
                   statuses=DEFAULT_STATUSES) -> dict[Key | None, StaySummary]:
    out: dict[Key | None, StaySummary] = {}
    rows = conn.execute(query("ars_length_of_stay"), params("ars_length_of_stay", start, end, statuses))
    for finess, ordre, visits, with_sortie, kept, median, p90, bins in rows:
        counts = tuple(int(bins.get(str(i), 0)) for i in range(len(STAY_CLASSES)))
        out[_key(finess, ordre)] = StaySummary(visits, with_sortie, kept, median, p90, counts)
    return out


def establishments(conn: psycopg.Connection) -> list[Establishment]:
    return [Establishment(finess, ordre, name, status)
            for finess, ordre, name, status in conn.execute(query("ars_establishments"))]


def frame(conn: psycopg.Connection, name: str, arguments: dict) -> pd.DataFrame:
    """The rows of query ``name`` as a DataFrame, its columns named as in the SQL. Read with a
    cursor and ``DataFrame.from_records`` (psycopg binds the parameters as everywhere else):
    ``pandas.read_sql`` warns on a connection that is not SQLAlchemy's."""
    with conn.cursor() as cursor:
        cursor.execute(query(name), arguments)
        columns = [column.name for column in cursor.description]
        return pd.DataFrame.from_records(cursor.fetchall(), columns=columns)


def first_days(conn: psycopg.Connection, statuses=DEFAULT_STATUSES) -> dict[Key, date | None]:
    """The first day each establishment sent (its first file), None when it never sent."""
    return {(finess, ordre): first for finess, ordre, first in
            conn.execute(query("ars_first_days"), {"statuses": list(statuses)})}
