"""Who comes to the emergency units of a synthetic region, and when: the establishments, the
visits per day (weekday and season), the hour of arrival, the age, the place of residence."""

from __future__ import annotations

import itertools
import math
import random
from datetime import date, timedelta

from rpu.formats.finess import with_check_digit

# --- seasonality -------------------------------------------------------------------------------

# Monday .. Sunday, relative to the mean.
WEEKDAY_FACTORS = (1.15, 1.03, 1.0, 0.99, 1.01, 0.91, 0.91)
# Arrivals per hour of the day (relative): few at night, a late-morning and an early-evening peak.
HOURLY_WEIGHTS = (
    1.3, 1.0, 0.8, 0.65, 0.55, 0.6, 0.9, 1.6, 3.0, 4.6, 5.6, 5.9,
    5.1, 4.9, 5.2, 5.3, 5.3, 5.6, 5.9, 5.6, 4.6, 3.7, 2.8, 1.9,
)
_MINUTE_CUM = list(itertools.accumulate(HOURLY_WEIGHTS[m // 60] for m in range(1440)))
_MINUTES = range(1440)


def _age_weight(age: int) -> float:
    if age == 0:
        return 4.0
    if age == 1:
        return 3.0
    if age <= 4:
        return 2.0
    if age <= 14:
        return 1.1
    if age <= 24:
        return 1.4
    if age <= 44:
        return 1.2
    if age <= 64:
        return 1.0
    if age <= 74:
        return 1.05
    if age <= 84:
        return 1.0
    if age <= 94:
        return 0.85
    if age <= 99:
        return 0.2
    return 0.02


_AGES = range(106)  # 0..105 years at ENTREE
_AGE_CUM = list(itertools.accumulate(_age_weight(a) for a in _AGES))
# Age bands the clinical pools are drawn for: 0-2, 3-14, 15-49, 50-74, 75+.
BAND_OF_AGE = [0 if a <= 2 else 1 if a <= 14 else 2 if a <= 49 else 3 if a <= 74 else 4 for a in _AGES]


# --- residences --------------------------------------------------------------------------------

# Bas-Rhin (67): postcode, commune, relative population.
RESIDENCES_67 = (
    ("67000", "STRASBOURG", 85), ("67100", "STRASBOURG", 95), ("67200", "STRASBOURG", 100),
    ("67300", "SCHILTIGHEIM", 34), ("67400", "ILLKIRCH-GRAFFENSTADEN", 27), ("67500", "HAGUENAU", 35),
    ("67380", "LINGOLSHEIM", 19), ("67800", "BISCHHEIM", 17), ("67800", "HOENHEIM", 11),
    ("67600", "SÉLESTAT", 19), ("67240", "BISCHWILLER", 12.7), ("67210", "OBERNAI", 11.5),
    ("67700", "SAVERNE", 11.3), ("67540", "OSTWALD", 12.8), ("67118", "GEISPOLSHEIM", 7.5),
    ("67150", "ERSTEIN", 10.9), ("67120", "MOLSHEIM", 9.7), ("67170", "BRUMATH", 10.2),
    ("67160", "WISSEMBOURG", 7.5), ("67201", "ECKBOLSHEIM", 6.8), ("67460", "SOUFFELWEYERSHEIM", 8),
    ("67140", "BARR", 7.2), ("67230", "BENFELD", 5.8), ("67190", "MUTZIG", 5.9), ("67560", "ROSHEIM", 5),
    ("67310", "WASSELONNE", 5.7), ("67520", "MARLENHEIM", 4.4), ("67370", "TRUCHTERSHEIM", 3.8),
    ("67450", "MUNDOLSHEIM", 4.8), ("67550", "VENDENHEIM", 5.7), ("67116", "REICHSTETT", 4.6),
    ("67960", "ENTZHEIM", 2), ("67330", "BOUXWILLER", 4), ("67340", "INGWILLER", 4),
    ("67110", "NIEDERBRONN-LES-BAINS", 4.3), ("67110", "REICHSHOFFEN", 5.4), ("67260", "SARRE-UNION", 3),
    ("67320", "DRULINGEN", 1.5), ("67390", "MARCKOLSHEIM", 4.3), ("67220", "VILLÉ", 1.7),
    ("67730", "CHÂTENOIS", 4.1), ("67130", "SCHIRMECK", 2.3), ("67130", "LA BROQUE", 2.6),
    ("67650", "DAMBACH-LA-VILLE", 2), ("67870", "GRIESHEIM-PRÈS-MOLSHEIM", 2.3),
    ("67220", "SAINT-PIERRE-BOIS", 0.7), ("67140", "ANDLAU", 1.7), ("67120", "DORLISHEIM", 2.7),
    ("67250", "SOULTZ-SOUS-FORÊTS", 3), ("67470", "SELTZ", 3.3), ("67630", "LAUTERBOURG", 2.3),
    ("67850", "HERRLISHEIM", 4.8), ("67760", "GAMBSHEIM", 4.8), ("67410", "DRUSENHEIM", 5.1),
    ("67350", "VAL-DE-MODER", 5), ("67270", "HOCHFELDEN", 3.4), ("67490", "DETTWILLER", 2.7),
    ("67440", "MARMOUTIER", 2.7), ("67120", "ERNOLSHEIM-BRUCHE", 1.7), ("67880", "KRAUTERGERSHEIM", 1.7),
)
# Visitors: other départements and abroad (PMSI convention 99 + INSEE country code).
_VISITORS = (
    ("68000", "COLMAR", 3), ("68100", "MULHOUSE", 2), ("57400", "SARREBOURG", 1.5),
    ("57200", "SARREGUEMINES", 1), ("88100", "SAINT-DIÉ-DES-VOSGES", 0.8), ("75011", "PARIS", 1),
    ("69003", "LYON", 0.5), ("13008", "MARSEILLE", 0.3), ("99109", "KEHL (ALLEMAGNE)", 1.2),
    ("99109", "OFFENBURG (ALLEMAGNE)", 0.6), ("99140", "BÂLE (SUISSE)", 0.3), ("99131", "BRUXELLES (BELGIQUE)", 0.2),
)
_VISITOR_SHARE = 0.04
_UNKNOWN_RESIDENCE_SHARE = 0.003
_TOWN_STEMS = (
    "SAINT-MARTIN", "BEAUMONT", "VILLENEUVE", "MONTAIGU", "SAINTE-MARIE", "CHÂTEAUNEUF", "LA CHAPELLE",
    "FONTAINE", "BELLEVUE", "SAINT-ÉTIENNE", "MAISONNEUVE", "ROCHEFORT", "MONTFORT", "LES ESSARTS",
    "SAINT-GERMAIN", "BOURG", "CHAMPAGNE", "VAL-D'ARC", "NOTRE-DAME", "BEAUREGARD", "PRÉMONT", "LONGUEVILLE",
)
_TOWN_SUFFIXES = ("", "", "", "-SUR-MER", "-LÈS-BAINS", "-EN-VAL", "-LE-CHÂTEAU", "-DES-PRÉS", "-SUR-LOIRE")
_TOWNS_67 = (
    "Strasbourg", "Haguenau", "Sélestat", "Saverne", "Wissembourg", "Obernai", "Molsheim", "Schirmeck",
    "Bischwiller", "Erstein", "Brumath", "Sarre-Union", "Ingwiller", "Benfeld",
)


def _departement_ok(dep: str) -> bool:
    return (len(dep) == 2 and (dep in ("2A", "2B") or (dep.isdigit() and 1 <= int(dep) <= 95 and dep != "20"))) or (
        len(dep) == 3 and dep.isdigit() and dep.startswith("97"))


def _local_residences(departement: str) -> tuple[tuple[str, str, float], ...]:
    if departement == "67":
        return RESIDENCES_67
    rng = random.Random(f"residences:{departement}")
    prefix = {"2A": "20", "2B": "20"}.get(departement, departement)
    names: set[str] = set()
    out = []
    while len(out) < 40:
        name = rng.choice(_TOWN_STEMS) + rng.choice(_TOWN_SUFFIXES)
        if name in names:
            continue
        names.add(name)
        if departement == "2A":
            cp = f"20{rng.randrange(0, 200):03d}"
        elif departement == "2B":
            cp = f"20{rng.randrange(200, 700):03d}"
        else:
            cp = f"{prefix}{rng.randrange(0, 10 ** (5 - len(prefix))):0{5 - len(prefix)}d}"
        out.append((cp, name, 40.0 / (len(out) + 1)))
    return tuple(out)


# --- establishments ----------------------------------------------------------------------------

def demo_establishments(n: int, departement: str = "67", seed: int = 0) -> list[dict]:
    """``n`` fictitious emergency units of a département, with valid (Luhn) FINESS numbers.

    Each is ``{"finess", "ordre", "name", "legal_finess", "daily_visits"}``; the first is a
    university hospital (the busiest); when n >= 3 it has two sites (two geographic FINESS
    sharing one legal FINESS)."""
    if not _departement_ok(departement):
        raise ValueError(f"département {departement!r}")
    rng = random.Random(f"establishments:{departement}:{seed}")
    towns = list(_TOWNS_67) if departement == "67" else sorted(
        {r[1].title() for r in _local_residences(departement)})
    used: set[str] = set()

    def new_finess() -> str:
        while True:
            body = departement + "".join(str(rng.randrange(10)) for _ in range(8 - len(departement)))
            if departement in ("2A", "2B"):  # the key of Corsican numbers is not verified (rpu-format.md §3)
                number = body + with_check_digit("20" + body[2:])[-1]
            else:
                number = with_check_digit(body)
            if number not in used:
                used.add(number)
                return number

    out = []
    legal = ""
    for i in range(n):
        rank = i - 1 if n >= 3 and i >= 1 else i  # the CHU has two sites
        town = towns[rank % len(towns)]
        site = "" if rank < len(towns) else f" (site {rank // len(towns) + 1})"
        if i <= 1 and n >= 3:
            name, visits = f"CHU de {towns[0]} – site {i + 1}", rng.randint(150, 250)
        elif i == 0:
            name, visits = f"CHU de {town}", rng.randint(200, 250)
        elif i % 5 == 4:
            name, visits = f"Clinique de {town}{site}", rng.randint(40, 60)
        else:
            name, visits = f"CH de {town}{site}", rng.randint(60, 160)
        geo = new_finess()
        if not (i == 1 and n >= 3):
            legal = new_finess()
        out.append({"finess": geo, "ordre": 0, "name": name, "legal_finess": legal, "daily_visits": visits})
    return out


def daily_counts(rng: random.Random, start: date, n_days: int, mean: float) -> list[int]:
    counts = []
    for i in range(n_days):
        day = start + timedelta(days=i)
        yearly = 1 + 0.05 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 15) / 365.25)
        expected = mean * WEEKDAY_FACTORS[day.weekday()] * yearly
        counts.append(max(0, round(rng.gauss(expected, math.sqrt(expected) * 1.1))) if expected > 0 else 0)
    return counts


def arrival_minutes(rng: random.Random, n: int) -> list[int]:
    """``n`` minutes of the day (0..1439), as the arrivals of one day fall."""
    return rng.choices(_MINUTES, cum_weights=_MINUTE_CUM, k=n)


def draw_ages(rng: random.Random, n: int) -> list[int]:
    """``n`` ages at ENTREE, in years."""
    return rng.choices(_AGES, cum_weights=_AGE_CUM, k=n)


def residences_for(finess: str) -> list[tuple[str, str, float]]:
    """(CP, COMMUNE, weight) of the patients of an establishment: its département's residents,
    a few visitors, and some with no known residence (weights summing to 1)."""
    departement = finess[:3] if finess[:2] == "97" else finess[:2]
    local = _local_residences(departement) if _departement_ok(departement) else RESIDENCES_67
    residences = [(cp, name, w * (1 - _VISITOR_SHARE - _UNKNOWN_RESIDENCE_SHARE) / sum(r[2] for r in local))
                  for cp, name, w in local]
    residences += [(cp, name, w * _VISITOR_SHARE / sum(r[2] for r in _VISITORS)) for cp, name, w in _VISITORS]
    residences.append(("", "", _UNKNOWN_RESIDENCE_SHARE))
    return residences
