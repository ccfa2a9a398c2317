"""Synthetic OSCOUR files: realistic emergency visits, never real patient data.

Used for demos, tests and benchmarks. Everything is drawn from ``random.Random(seed)``: the same
arguments always give the same bytes, and the *variant* of a file (encoding, layout, padding...)
never changes the records it holds, only how they are written (see ``VARIANTS``).

Writing is streamed: each PATIENT is one f-string built from fragments rendered once per file
(a pool of clinical cases, a pool of residences), so memory stays flat and a file of a million
visits is written in a few seconds.

Public API: ``DEFECTS``, ``VARIANTS``, ``demo_establishments``, ``write_oscour_file``,
``generate_region``.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import unicodedata
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

from rpu.formats.finess import with_check_digit

# --- what can be asked for -----------------------------------------------------------------------

# Rule codes (rpu.formats.rules) the generator can inject. Record-level and flag defects are each put on
# exactly one record; file-level ones change the whole file.
RECORD_DEFECTS = (
    "ENTREE_MISSING", "ENTREE_INVALID", "VALUE_NOT_IN_SET", "FORMAT_INVALID", "DATE_INVALID",
    "SORTIE_BEFORE_ENTREE", "STAY_TOO_LONG", "AGE_OUT_OF_RANGE", "ENTREE_OUTSIDE_PERIOD",
    "PROVENANCE_INCOHERENT", "DESTINATION_INCOHERENT", "ORIENT_INCOHERENT",
)
FILE_DEFECTS = (
    "FINESS_CHECK_DIGIT", "FINESS_MISSING", "PERIOD_REVERSED", "DATEDEBUT_INVALID", "WRONG_ROOT",
    "TRUNCATED", "NOT_XML", "EMPTY_FILE", "DTD_FORBIDDEN",
)
DEFECTS = RECORD_DEFECTS + FILE_DEFECTS

# Ways real producers write the same records (rpu-format.md §2). Several can be combined with "+",
# e.g. "latin1+crlf" (at most one of latin1/cp1252/bom/nodecl, one of the passages layouts).
VARIANTS = (
    "standard", "latin1", "cp1252", "bom", "nodecl", "crlf", "seconds", "padding", "selfclosing",
    "extensions", "lowercase", "dotted", "passages_per_patient", "no_passages", "empty_datefin",
    "liste_actes_space",
)

# 1-based PATIENT position of the i-th requested record defect (in RECORD_DEFECTS order).
def defect_position(index: int) -> int:
    return 3 + 2 * index


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
_HM = [f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)]


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
_BAND_OF_AGE = [0 if a <= 2 else 1 if a <= 14 else 2 if a <= 49 else 3 if a <= 74 else 4 for a in _AGES]


# --- clinical cases ------------------------------------------------------------------------------

# (DP, SFMU-like MOTIF, CIM-10 MOTIF, free-text MOTIF, kind, weights for the five age bands)
_CASES = (
    # paediatrics
    ("J069", "PEDIATRIE03", "R509", "FIEVRE > 39 DEPUIS 48H", "medical_light", (9, 5, 1, 0.3, 0.2)),
    ("J210", "RESPI05", "R060", "GENE RESPIRATOIRE", "medical_mid", (7, 0, 0, 0, 0)),
    ("A099", "GASTRO04", "R11", "VOMISSEMENTS & DIARRHEE", "medical_light", (7, 5, 1.5, 0.6, 0.6)),
    ("R509", "PEDIATRIE03", "R509", "FIEVRE", "medical_light", (8, 3, 0.5, 0.3, 0.3)),
    ("H669", "ORL02", "H920", "OTALGIE", "medical_light", (4, 4, 0.5, 0.2, 0.1)),
    ("J040", "RESPI06", "R062", "TOUX RAUQUE", "medical_light", (2.5, 1.5, 0, 0, 0)),
    ("R560", "NEURO06", "R568", "CONVULSION", "medical_mid", (1.2, 0.4, 0, 0, 0)),
    ("S0600", "TRAUMATO02", "S060", "CHUTE DE LA TABLE A LANGER", "trauma_light", (2.5, 2, 0.5, 0.3, 0.8)),
    ("S5250", "TRAUMATO11", "S525", "CHUTE TROTTINETTE", "trauma_light", (0.2, 3, 0.8, 0.5, 0.8)),
    ("T179", "ORL05", "T179", "CORPS ETRANGER", "medical_light", (1.2, 0.8, 0.1, 0.1, 0.1)),
    ("K590", "GASTRO07", "R104", "DOULEUR ABDO", "medical_light", (1.5, 2.5, 0.5, 0.5, 0.8)),
    # traumatology
    ("S934", "TRAUMATO17", "S934", "ENTORSE CHEVILLE", "trauma_light", (0.1, 4, 5, 1.5, 0.3)),
    ("S610", "TRAUMATO14", "S610", "PLAIE DOIGT < 2 CM", "trauma_light", (0.2, 1.5, 3.5, 2, 0.5)),
    ("S0100", "TRAUMATO01", "S010", "PLAIE DU CUIR CHEVELU", "trauma_light", (1.5, 2, 1.2, 1, 2.5)),
    ("S628", "TRAUMATO12", "S628", "TRAUMATISME POIGNET", "trauma_light", (0.2, 2.5, 1.8, 1.5, 1.2)),
    ("S800", "TRAUMATO16", "S800", "CONTUSION GENOU", "trauma_light", (0.1, 1.5, 2, 1.3, 0.8)),
    ("S202", "TRAUMATO07", "S202", "CONTUSION THORAX", "trauma_light", (0, 0.3, 1.2, 1.2, 1.5)),
    ("S4220", "TRAUMATO09", "S422", "CHUTE SUR L'EPAULE", "trauma_light", (0, 0.5, 0.6, 0.8, 1.5)),
    ("M545", "RHUMATO02", "M545", "LOMBALGIE", "medical_light", (0, 0.2, 3, 2, 0.8)),
    ("S720", "TRAUMATO15", "S720", "CHUTE, IMPOTENCE MEMBRE INFERIEUR", "trauma_severe", (0, 0, 0.05, 0.4, 4)),
    ("S0650", "TRAUMATO02", "S065", "TC AVEC PC < 5 MIN", "trauma_severe", (0.05, 0.1, 0.3, 0.3, 0.8)),
    ("S3200", "TRAUMATO08", "S320", "AVP MOTO", "trauma_severe", (0, 0.05, 0.3, 0.2, 0.3)),
    # medicine
    ("R074", "CARDIO01", "R074", "DOULEUR THORACIQUE A L'EFFORT", "medical_mid", (0, 0.2, 3, 4, 2)),
    ("R101", "GASTRO01", "R101", "DOULEUR EPIGASTRIQUE", "medical_mid", (0, 0.5, 2.5, 2, 1.5)),
    ("R103", "GASTRO02", "R103", "DOULEUR FID", "medical_mid", (0, 0.8, 2, 0.8, 0.5)),
    ("N23", "URO01", "R10", "COLIQUE NEPHRETIQUE", "medical_mid", (0, 0.1, 2, 1.5, 0.3)),
    ("N390", "URO03", "R300", "BRULURES MICTIONNELLES", "medical_light", (0.3, 0.5, 1.5, 1, 2)),
    ("R51", "NEURO01", "R51", "CEPHALEES", "medical_light", (0, 0.8, 2, 1, 0.5)),
    ("R42", "NEURO04", "R42", "VERTIGES", "medical_light", (0, 0.1, 1, 1.5, 1.5)),
    ("H109", "OPHTALMO02", "H579", "OEIL ROUGE", "medical_light", (0.3, 0.4, 1.2, 0.8, 0.4)),
    ("L031", "DERMATO03", "L031", "DOIGT GONFLE", "medical_light", (0, 0.2, 0.8, 0.8, 0.5)),
    ("J189", "RESPI02", "R060", "DYSPNEE & FIEVRE", "medical_mid", (0.3, 0.3, 0.6, 1.5, 4)),
    ("R55", "NEURO03", "R55", "MALAISE", "medical_mid", (0, 0.5, 1.5, 1.5, 2.5)),
    ("R410", "NEURO05", "R410", "CONFUSION", "medical_mid", (0, 0, 0.05, 0.3, 2.5)),
    ("E86", "GENERAL02", "R530", "ALTERATION ETAT GENERAL", "medical_mid", (0.2, 0, 0.1, 0.4, 2.5)),
    ("R296", "TRAUMATO05", "R296", "CHUTE DANS L'ESCALIER", "medical_mid", (0, 0, 0, 0.3, 4)),
    ("I10", "CARDIO04", "I10", "TA > 18", "medical_light", (0, 0, 0.4, 1.2, 1)),
    ("K358", "GASTRO02", "R103", "DOULEUR FID & FIEVRE", "surgical", (0, 0.5, 0.8, 0.2, 0.1)),
    ("K810", "GASTRO01", "R101", "DOULEUR HYPOCONDRE DROIT", "surgical", (0, 0, 0.3, 0.5, 0.5)),
    ("K566", "GASTRO06", "R14", "ARRET DES MATIERES", "surgical", (0, 0, 0.1, 0.4, 1)),
    ("I214", "CARDIO01", "R074", "DOULEUR THORACIQUE", "medical_severe", (0, 0, 0.2, 0.8, 0.8)),
    ("I639", "NEURO02", "R470", "DEFICIT BRUTAL", "medical_severe", (0, 0, 0.1, 0.6, 1.2)),
    ("I509", "CARDIO03", "R060", "DYSPNEE & OEDEMES", "medical_severe", (0, 0, 0.05, 0.5, 2.5)),
    ("J441", "RESPI03", "R060", "DYSPNEE", "medical_severe", (0, 0, 0.05, 0.8, 1.2)),
    ("I269", "RESPI04", "R060", "DYSPNEE & DOULEUR THORACIQUE", "medical_severe", (0, 0, 0.1, 0.3, 0.3)),
    ("A419", "GENERAL03", "R509", "FIEVRE & HYPOTENSION", "medical_severe", (0.05, 0.02, 0.1, 0.3, 1)),
    ("I469", "CARDIO05", "I469", "ARRET CARDIAQUE", "dead", (0, 0, 0.005, 0.03, 0.06)),
    # psychiatry, intoxication
    ("F100", "INTOX02", "F100", "ALCOOLISATION AIGUE", "psy", (0, 0.2, 2, 0.8, 0.1)),
    ("F419", "PSY01", "F419", "ANGOISSE", "psy", (0, 0.4, 1.5, 0.5, 0.2)),
    ("F329", "PSY03", "F329", "IDEES NOIRES", "psy", (0, 0.3, 0.8, 0.4, 0.1)),
    ("T424", "INTOX01", "T424", "IMV BENZODIAZEPINES", "psy", (0, 0.3, 0.5, 0.2, 0.05)),
    ("F209", "PSY02", "F209", "AGITATION", "psy", (0, 0, 0.4, 0.1, 0)),
    # obstetrics
    ("O200", "GYNECO02", "O209", "METRORRAGIES", "obst", (0, 0, 1, 0, 0)),
    ("O470", "GYNECO04", "O479", "CONTRACTIONS", "obst", (0, 0, 0.6, 0, 0)),
    ("O210", "GYNECO03", "R11", "VOMISSEMENTS GROSSESSE", "obst", (0, 0, 0.3, 0, 0)),
)

_GRAVITY = {  # CCMU weights: 1, P, 2, 3, 4, 5, D
    "trauma_light": (42, 0, 55, 3, 0, 0, 0),
    "medical_light": (38, 0.3, 58, 3.7, 0, 0, 0),
    "medical_mid": (6, 0.5, 64, 27, 2.5, 0, 0),
    "trauma_severe": (0, 0, 38, 50, 9, 3, 0),
    "medical_severe": (0, 0, 8, 55, 28, 9, 0),
    "surgical": (0, 0, 45, 50, 5, 0, 0),
    "psy": (3, 60, 30, 7, 0, 0, 0),
    "obst": (10, 0, 70, 20, 0, 0, 0),
    "dead": (0, 0, 0, 0, 0, 0, 100),
}
_GRAVITY_CODES = ("1", "P", "2", "3", "4", "5", "D")

# Probability of a hospitalisation (MODE_SORTIE 6/7) by kind and CCMU.
_HOSP = {"1": 0.01, "P": 0.3, "2": 0.1, "3": 0.6, "4": 0.92, "5": 0.95}
_HOSP_KIND = {"surgical": 0.85, "trauma_severe": 0.8, "medical_severe": 0.85}
_ORIENT_HOSP = {  # ORIENT after 6/7, by kind (the first ORIENT list)
    "trauma_light": (("CHIR", 6), ("UHCD", 4)),
    "medical_light": (("UHCD", 5), ("MED", 5)),
    "medical_mid": (("UHCD", 5), ("MED", 6), ("SC", 0.5), ("CHIR", 0.5)),
    "trauma_severe": (("CHIR", 7), ("UHCD", 2), ("SC", 1), ("REA", 0.5)),
    "medical_severe": (("MED", 6), ("SC", 2.5), ("SI", 2.5), ("UHCD", 2), ("REA", 1)),
    "surgical": (("CHIR", 9), ("UHCD", 1)),
    "psy": (("UHCD", 4), ("MED", 1), ("HO", 1), ("HDT", 3)),
    "obst": (("OBST", 9), ("UHCD", 1)),
}
_ORIENT_CRITICAL = (("REA", 5), ("SI", 3), ("SC", 2))

_TRANSPORT = {  # PERSO, AMBU, VSAB, SMUR, HELI, FO
    "1": (88, 4, 5, 0, 0, 3), "2": (70, 14, 13, 1, 0.2, 1.8), "3": (35, 30, 25, 8, 1, 1),
    "4": (5, 15, 30, 45, 5, 0), "5": (2, 8, 30, 52, 8, 0), "P": (45, 15, 15, 1, 0, 24),
    "D": (0, 5, 35, 60, 0, 0),
}
_TRANSPORT_CODES = ("PERSO", "AMBU", "VSAB", "SMUR", "HELI", "FO")

_DA = {
    "common": ("I10", "E119", "Z880", "F171", "E660", "Z921", "J449", "N189", "I259"),
    "old": ("I10", "E119", "F03", "G309", "Z921", "I509", "N189", "R296", "Z741", "E440"),
    "child": ("R509", "J069", "R11", "Z290", "J303"),
    "trauma": ("W19", "W010", "X59", "V234", "W220", "Z040"),
    "psy": ("F102", "Z915", "F329", "X619", "Z630"),
    "obst": ("Z3490", "O998", "Z3491"),
}
_ACTES = {
    "trauma": ("MZQK002", "NDQK001", "MGQK003", "LAQK013", "QZJA002", "QAJA013", "MZMP007", "NJMP001"),
    "medical": ("DEQP003", "ZBQK002", "ZCQM001", "ACQK001", "DEQP005", "EQQP008", "GLLD015", "HEQE002"),
    "psy": ("ACQK001", "DEQP003"),
    "obst": ("JQQM010", "JKQE001", "ZCQM004"),
}
_CIRCONSTANCE = ("CHUTE", "SPORT", "DOMESTIQUE", "AVP", "TRAVAIL", "RIXE", "SCOLAIRE")


# --- residences --------------------------------------------------------------------------------

# Bas-Rhin (67): postcode, commune, relative population.
_RESIDENCES_67 = (
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
        return _RESIDENCES_67
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


# --- file styles -------------------------------------------------------------------------------

_PAD_PATTERNS = (" {} ", "\n        {}\n      ", "{}  ", "\t{}", "  {}\n")
_LOWER_FIELDS = frozenset({"SEXE", "TRANSPORT", "TRANSPORT_PEC", "GRAVITE", "DP", "DA", "ACTE", "ORIENT",
                           "ORIENT_UHCD"})
_DOTTED_FIELDS = frozenset({"DP", "DA"})
_ENCODINGS = {"standard": ("UTF-8", "utf-8"), "latin1": ("ISO-8859-1", "latin-1"),
              "cp1252": ("windows-1252", "cp1252"), "bom": ("UTF-8", "utf-8-sig"), "nodecl": (None, "ascii")}


class _Style:
    """How one file is written; renders elements (tag + text) accordingly."""

    def __init__(self, variant: str):
        parts = [p.strip() for p in variant.split("+") if p.strip()] or ["standard"]
        unknown = [p for p in parts if p not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; expected some of {VARIANTS}")
        names = set(parts)
        encodings = names & {"latin1", "cp1252", "bom", "nodecl"}
        if len(encodings) > 1 or {"passages_per_patient", "no_passages"} <= names:
            raise ValueError(f"incompatible variants: {variant}")
        self.names = names
        self.declared_encoding, self.codec = _ENCODINGS[encodings.pop() if encodings else "standard"]
        self.ascii = "nodecl" in names
        self.typographic = "cp1252" in names
        self.pretty = "crlf" in names
        self.newline = "\r\n" if self.pretty else "\n"
        self.seconds = "seconds" in names
        self.padding = "padding" in names
        self.selfclosing = "selfclosing" in names
        self.extensions = "extensions" in names
        self.lowercase = "lowercase" in names
        self.dotted = "dotted" in names
        self.empty_datefin = "empty_datefin" in names
        self.actes_space = "liste_actes_space" in names
        self.passages = "per" if "passages_per_patient" in names else "none" if "no_passages" in names else "one"
        depth = 1 if self.passages == "none" else 2  # depth of PATIENT
        self.patient_indent = "  " * depth if self.pretty else ""
        self.child_prefix = "\n" + "  " * (depth + 1) if self.pretty else ""
        self.item_prefix = "\n" + "  " * (depth + 2) if self.pretty else ""

    # free text ------------------------------------------------------------------------------
    def text(self, value: str) -> str:
        if self.ascii:
            value = "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))
        if self.typographic:
            value = value.replace("'", "\u2019")
        return escape(value)

    def code(self, tag: str, value: str) -> str:
        if self.dotted and tag in _DOTTED_FIELDS and len(value) > 3 and value[0].isalpha():
            value = f"{value[:3]}.{value[3:]}"
        if self.lowercase and tag in _LOWER_FIELDS:
            value = value.lower()
        return value

    # elements -------------------------------------------------------------------------------
    def pad(self, tag: str, value: str) -> str:
        if not self.padding:
            return value
        pattern = _PAD_PATTERNS[sum(map(ord, tag)) % len(_PAD_PATTERNS)]
        return pattern.format(value)

    def tags(self, tag: str, prefix: str | None = None) -> tuple[str, str]:
        """Opening and closing strings around a non-empty value (padding included)."""
        prefix = self.child_prefix if prefix is None else prefix
        before, after = self.pad(tag, "\0").split("\0")
        return f"{prefix}<{tag}>{before}", f"{after}</{tag}>"

    def el(self, tag: str, value: str, prefix: str | None = None) -> str:
        prefix = self.child_prefix if prefix is None else prefix
        if value == "":
            if self.selfclosing:
                return f"{prefix}<{tag}/>"
            if self.padding:
                return f"{prefix}<{tag}> </{tag}>"
            return f"{prefix}<{tag}></{tag}>"
        opening, closing = self.tags(tag, prefix)
        return f"{opening}{value}{closing}"

    def liste(self, tag: str, item: str, values: Iterable[str]) -> str:
        items = "".join(self.el(item, self.code(item, v), self.item_prefix) for v in values)
        opening = f"<{tag} >" if tag == "LISTE_ACTES" and self.actes_space else f"<{tag}>"
        if not items:
            if self.selfclosing:
                return f"{self.child_prefix}<{tag}/>"
            return f"{self.child_prefix}{opening}</{tag}>"
        return f"{self.child_prefix}{opening}{items}{self.child_prefix}</{tag}>"


class _Block:
    """One clinical situation (everything but who, where and when), rendered once per file."""

    __slots__ = ("sexe", "mode_entree", "provenance", "transport", "transport_pec", "motif", "gravite", "dp",
                 "da", "actes", "circonstance", "mode_sortie", "destination", "orient", "uhcd", "stay",
                 "sexe_f", "a_f", "a1_f", "a2_f", "exit_f", "uhcd_f")

    def __init__(self, **values):
        for name, value in values.items():
            setattr(self, name, value)

    def copy(self, **changes) -> _Block:
        values = {name: getattr(self, name) for name in self.__slots__[:16]}
        values.update(changes)
        return _Block(**values)

    def render(self, style: _Style) -> _Block:
        el, code = style.el, style.code
        self.sexe_f = el("SEXE", code("SEXE", self.sexe))
        self.a1_f = (
            el("MODE_ENTREE", self.mode_entree) + el("PROVENANCE", self.provenance)
            + el("TRANSPORT", code("TRANSPORT", self.transport))
            + el("TRANSPORT_PEC", code("TRANSPORT_PEC", self.transport_pec))
            + el("MOTIF", style.text(self.motif))
        )
        self.a2_f = (
            el("GRAVITE", code("GRAVITE", self.gravite)) + el("DP", code("DP", self.dp))
            + style.liste("LISTE_DA", "DA", self.da) + style.liste("LISTE_ACTES", "ACTE", self.actes)
        )
        self.a_f = self.a1_f + self.a2_f
        if style.extensions:
            self.a2_f = el("CIRCONSTANCE", self.circonstance) + self.a2_f
        self.exit_f = (el("MODE_SORTIE", self.mode_sortie) + el("DESTINATION", self.destination)
                       + el("ORIENT", code("ORIENT", self.orient)))
        if self.uhcd:
            mode, dest, orient = self.uhcd
            self.uhcd_f = (el("MODE_SORTIE_UHCD", mode) + el("DESTINATION_UHCD", dest)
                           + el("ORIENT_UHCD", code("ORIENT_UHCD", orient)))
        else:
            self.uhcd_f = ""
        return self


def _pick(rng: random.Random, pairs) -> str:
    values, weights = zip(*pairs, strict=True)
    return rng.choices(values, weights)[0]


_BAND_CASES = [([c for c in _CASES if c[5][band] > 0], [c[5][band] for c in _CASES if c[5][band] > 0])
               for band in range(5)]


def _draw_block(rng: random.Random, band: int) -> _Block:
    cases, weights = _BAND_CASES[band]
    dp, sfmu, cim_motif, free_motif, kind, _ = rng.choices(cases, weights)[0]
    gravite = rng.choices(_GRAVITY_CODES, _GRAVITY[kind])[0]
    old, child = band == 4, band <= 1
    # who, how they came
    if kind == "obst":
        sexe = "F"
    else:
        sexe = rng.choices(("M", "F", "I"), (50.5, 49.3, 0.2))[0]
    r = rng.random()
    if r < (0.91 if old else 0.955):
        mode_entree, provenance = "8", ("5" if rng.random() < 0.88 else "8")
    elif r < (0.985 if old else 0.99):
        mode_entree, provenance = "7", rng.choices("1234", (80, 10 if old else 4, 6 if old else 1, 4))[0]
    else:
        mode_entree, provenance = "6", ("4" if kind == "psy" else "1")
    weights = list(_TRANSPORT[gravite])
    if old:
        weights[0] *= 0.5
        weights[1] *= 2.5
    if child:
        weights[5] = 0  # no police escort for children
    transport = rng.choices(_TRANSPORT_CODES, weights)[0]
    if mode_entree != "8" and transport in ("PERSO", "FO"):
        transport = "AMBU"  # a transfer between facilities
    if rng.random() < 0.02:
        transport_pec = ""
    elif transport in ("SMUR", "HELI"):
        transport_pec = "MED"
    elif transport == "VSAB":
        transport_pec = "PARAMED" if rng.random() < 0.8 else "AUCUN"
    elif transport == "AMBU":
        transport_pec = "PARAMED" if rng.random() < 0.4 else "AUCUN"
    else:
        transport_pec = "AUCUN"
    r = rng.random()
    motif = sfmu if r < 0.74 else cim_motif if r < 0.94 else free_motif if r < 0.98 else ""
    # what was found and done
    da_pool = _DA["old" if old else "child" if child else "common"]
    if kind.startswith("trauma"):
        da_pool += _DA["trauma"]
    elif kind in ("psy", "obst"):
        da_pool += _DA[kind]
    n_da = rng.choices((0, 1, 2, 3), (35, 30, 20, 15) if old else (60, 25, 10, 5))[0]
    da = tuple(rng.sample([c for c in da_pool if c != dp], n_da))
    actes_pool = _ACTES["trauma" if kind.startswith("trauma") else kind if kind in _ACTES else "medical"]
    n_actes = rng.choices((0, 1, 2, 3), (45, 30, 15, 10))[0]
    actes = tuple(rng.sample(actes_pool, min(n_actes, len(actes_pool))))
    circonstance = rng.choice(_CIRCONSTANCE) if kind.startswith("trauma") and rng.random() < 0.8 else ""
    # how they left
    uhcd = None
    if kind == "dead":
        mode_sortie, destination, orient, stay = "9", "", "", "short"
    else:
        p_hosp = max(_HOSP[gravite], _HOSP_KIND.get(kind, 0))
        if old:
            p_hosp = min(0.97, p_hosp * 1.6)
        elif child:
            p_hosp *= 0.7
        if rng.random() < p_hosp:
            mode_sortie = "7" if rng.random() < 0.13 else "6"
            if gravite in ("4", "5") and rng.random() < 0.6:
                orient = _pick(rng, _ORIENT_CRITICAL)
            else:
                orient = _pick(rng, _ORIENT_HOSP[kind])
            if orient in ("HDT", "HO"):
                destination = "4"
            elif kind == "psy" and mode_sortie == "7" and orient == "MED":
                destination = "4"
            elif old and orient == "MED" and rng.random() < 0.15:
                destination = rng.choice("23")
            else:
                destination = "1"
            stay = "hosp"
            if orient == "UHCD":
                uhcd = rng.choices((("8", "", ""), ("6", "1", "MED"), ("6", "1", "CHIR"), ("7", "1", "MED")),
                                   (60, 28, 8, 4))[0]
        elif gravite == "5" and rng.random() < 0.5:
            mode_sortie, destination, orient, stay = "9", "", "", "hosp"
        else:
            mode_sortie, destination, stay = "8", "", "light"
            r = rng.random()
            if kind == "psy":
                orient = "SCAM" if r < 0.06 else "FUGUE" if r < 0.11 else "PSA" if r < 0.14 else ""
            else:
                orient = "PSA" if r < 0.025 else "REO" if r < 0.035 else "SCAM" if r < 0.042 else (
                    "FUGUE" if r < 0.045 else "")
            if orient in ("PSA", "REO", "FUGUE"):
                stay = "short"
            if old and not orient and rng.random() < 0.03:
                destination = "7"  # back to a nursing home (médico-social)
    if orient in ("PSA", "REO", "FUGUE") and rng.random() < 0.6:
        dp, da, actes = "", (), ()  # never seen by a doctor: no diagnosis
    elif rng.random() < 0.025:
        dp = ""  # not coded (exhaustivité below 100 %)
    return _Block(sexe=sexe, mode_entree=mode_entree, provenance=provenance, transport=transport,
                  transport_pec=transport_pec, motif=motif, gravite=gravite, dp=dp, da=da, actes=actes,
                  circonstance=circonstance, mode_sortie=mode_sortie, destination=destination, orient=orient,
                  uhcd=uhcd, stay=stay)


_STAYS = {  # median minutes, sigma of the log, bounds
    "short": (55, 0.5, 30, 180),
    "light": (150, 0.55, 30, 720),
    "hosp": (300, 0.5, 60, 840),
}
_STAY_POOL = 1024


def _stay_pools(rng: random.Random) -> dict[str, list[int]]:
    pools = {}
    for name, (median, sigma, low, high) in _STAYS.items():
        mu = math.log(median)
        pools[name] = [min(high, max(low, round(rng.lognormvariate(mu, sigma)))) for _ in range(_STAY_POOL)]
    return pools


# --- dates -------------------------------------------------------------------------------------

def _d(day: date) -> str:
    return f"{day.day:02d}/{day.month:02d}/{day.year:04d}"


def _dt(moment: datetime) -> str:
    return f"{_d(moment)} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"


def _minus_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _daily_counts(rng: random.Random, start: date, n_days: int, mean: float) -> list[int]:
    counts = []
    for i in range(n_days):
        day = start + timedelta(days=i)
        yearly = 1 + 0.05 * math.cos(2 * math.pi * (day.timetuple().tm_yday - 15) / 365.25)
        expected = mean * WEEKDAY_FACTORS[day.weekday()] * yearly
        counts.append(max(0, round(rng.gauss(expected, math.sqrt(expected) * 1.1))) if expected > 0 else 0)
    return counts


# --- writing -----------------------------------------------------------------------------------

_DAY_MARGIN = 10  # day strings are prepared from start-10 to end+10 (defects, late exits)
_FLUSH = 2000


def write_oscour_file(path, finess: str, ordre: int, start: date, end: date, *, visits_per_day: float = 100,
                      seed: int = 0, extract: datetime | None = None, defects: Iterable[str] = (),
                      variant: str = "standard", open_visits: bool = True) -> int:
    """Write one synthetic OSCOUR file covering ``start``..``end`` (inclusive); return the number
    of complete PATIENT elements written (0 for NOT_XML and EMPTY_FILE).

    ``defects``: codes of ``DEFECTS``. The i-th requested record-level defect (taken in
    ``RECORD_DEFECTS`` order) is put on PATIENT number ``defect_position(i)`` = 3, 5, 7...
    ``variant``: one of ``VARIANTS`` or several joined by "+"; never changes the records.
    ``open_visits``: visits not yet left at the extraction time have an empty SORTIE,
    MODE_SORTIE, DESTINATION and ORIENT."""
    defects = set(defects)
    unknown = defects - set(DEFECTS)
    if unknown:
        raise ValueError(f"unknown defect(s) {sorted(unknown)}; expected some of {DEFECTS}")
    if end < start:
        raise ValueError("end before start")
    style = _Style(variant)
    path = Path(path)
    extract = extract or datetime.combine(end + timedelta(days=1), time(2, 30))
    tmp = path.with_name(f".{path.name}.part")
    try:
        if "EMPTY_FILE" in defects:
            tmp.write_bytes(b"")
            written = 0
        elif "NOT_XML" in defects:
            junk = random.Random(f"junk:{seed}")
            tmp.write_bytes(b"\x1f\x8b\x08\x00" + bytes(junk.randrange(256) for _ in range(4096)))
            written = 0
        else:
            with open(tmp, "w", encoding=style.codec, newline=style.newline, buffering=1 << 20) as out:
                written = _write(out, style, finess, ordre, start, end, visits_per_day, seed, extract, defects,
                                 open_visits)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written


def _header(style: _Style, finess: str, ordre: int, start: date, end: date, extract: datetime,
            defects: set[str]) -> str:
    root = "RPU" if "WRONG_ROOT" in defects else "OSCOUR"
    if "FINESS_MISSING" in defects:
        finess = ""
    elif "FINESS_CHECK_DIGIT" in defects and finess[-1:].isdigit():
        finess = finess[:-1] + str((int(finess[-1]) + 1) % 10)
    debut, fin = _d(start), _d(end)
    if "PERIOD_REVERSED" in defects:
        debut, fin = _d(end), _d(start - timedelta(days=1))
    if "DATEDEBUT_INVALID" in defects:
        debut = f"32/13/{start.year}"
    if style.empty_datefin and "PERIOD_REVERSED" not in defects:
        fin = ""
    lines = []
    if style.declared_encoding:
        lines.append(f'<?xml version="1.0" encoding="{style.declared_encoding}"?>\n')
    if "DTD_FORBIDDEN" in defects:
        lines.append(f'<!DOCTYPE {root} [\n  <!ENTITY rpu "OSCOUR">\n]>\n')
    p1 = "\n    " if style.pretty else ""
    close = "\n  " if style.pretty else ""
    lines.append(f"<{root}>\n")
    lines.append(
        ("  " if style.pretty else "") + "<ETABLISSEMENT>"
        + style.el("FINESS", finess, p1) + style.el("ORDRE", str(ordre), p1)
        + style.el("EXTRACT", _dt(extract), p1) + style.el("DATEDEBUT", debut, p1)
        + style.el("DATEFIN", fin, p1) + f"{close}</ETABLISSEMENT>\n"
    )
    if style.passages == "one":
        lines.append(("  " if style.pretty else "") + "<PASSAGES>\n")
    return "".join(lines)


def _footer(style: _Style, defects: set[str]) -> str:
    root = "RPU" if "WRONG_ROOT" in defects else "OSCOUR"
    if style.passages == "one":
        return ("  " if style.pretty else "") + f"</PASSAGES>\n</{root}>\n"
    return f"</{root}>\n"


def _write(out, style: _Style, finess: str, ordre: int, start: date, end: date, visits_per_day: float, seed: int,
           extract: datetime, defects: set[str], open_visits: bool) -> int:
    rng = random.Random(seed)
    n_days = (end - start).days + 1
    counts = _daily_counts(rng, start, n_days, visits_per_day)
    record_defects = [d for d in RECORD_DEFECTS if d in defects]
    needed = defect_position(len(record_defects) - 1) if record_defects else 0
    if "TRUNCATED" in defects:
        needed = max(needed, 2)
    if sum(counts) < needed:  # too small a file to carry the defects: add visits on the first day
        counts[0] += needed - sum(counts)
    total = sum(counts)
    defect_at = {defect_position(i): d for i, d in enumerate(record_defects)}
    cut_at = max(1, (total + 1) // 2) if "TRUNCATED" in defects else 0

    # Pools drawn once per file; their size grows with the file (diversity) but stays small.
    pool_size = min(2048, max(64, total // 16))
    blocks = [[_draw_block(rng, band).render(style) for _ in range(pool_size)] for band in range(5)]
    stays = _stay_pools(rng)
    departement = finess[:3] if finess[:2] == "97" else finess[:2]
    local = _local_residences(departement) if _departement_ok(departement) else _RESIDENCES_67
    residences = [(cp, name, w * (1 - _VISITOR_SHARE - _UNKNOWN_RESIDENCE_SHARE) / sum(r[2] for r in local))
                  for cp, name, w in local]
    residences += [(cp, name, w * _VISITOR_SHARE / sum(r[2] for r in _VISITORS)) for cp, name, w in _VISITORS]
    residences.append(("", "", _UNKNOWN_RESIDENCE_SHARE))
    res_frags = [style.el("CP", cp) + style.el("COMMUNE", style.text(name)) for cp, name, _ in residences]
    res_cum = list(itertools.accumulate(r[2] for r in residences))
    res_range = range(len(residences))

    # Prepared strings: days, open tags.
    first = start - timedelta(days=_DAY_MARGIN)
    day_s = [_d(first + timedelta(days=i)) for i in range(n_days + 2 * _DAY_MARGIN)]
    moments: dict[int, list[str]] = {}  # day index -> the 1440 "dd/mm/yyyy hh:mm" of that day

    def moment(day: int, minute: int) -> str:
        day += minute // 1440
        texts = moments.get(day)
        if texts is None:
            prefix = day_s[day + _DAY_MARGIN]
            texts = moments[day] = [f"{prefix} {text}" for text in _HM]
        return texts[minute % 1440]

    start_ord = start.toordinal()
    birth_cache: dict[int, str] = {}
    el = style.el
    o_n, c_n = style.tags("NAISSANCE")
    o_e, c_e = style.tags("ENTREE")
    o_s, c_s = style.tags("SORTIE")
    o_h, c_h = style.tags("HMED")
    o_u, c_u = style.tags("ENTREE_UHCD")
    empty_hmed = el("HMED", "")
    empty_uhcd = el("ENTREE_UHCD", "") + el("MODE_SORTIE_UHCD", "") + el("DESTINATION_UHCD", "") + el(
        "ORIENT_UHCD", "")
    open_tail = el("SORTIE", "") + el("MODE_SORTIE", "") + el("DESTINATION", "") + el("ORIENT", "")
    if style.extensions:
        open_tail += empty_uhcd
    ind = style.patient_indent
    close_prefix = ("\n" + ind) if style.pretty else ""
    if style.passages == "per":
        outer = ("\n" + ind[:-2]) if style.pretty else ""
        p_open = f"{ind[:-2]}<PASSAGES>{outer}  <PATIENT>" if style.pretty else "<PASSAGES><PATIENT>"
        p_close = f"{close_prefix}</PATIENT>{outer}</PASSAGES>\n"
    else:
        p_open = f"{ind}<PATIENT>"
        p_close = f"{close_prefix}</PATIENT>\n"
    extract_minute = math.floor((extract - datetime.combine(start, time())).total_seconds() / 60)
    seconds, extensions = style.seconds, style.extensions

    out.write(_header(style, finess, ordre, start, end, extract, defects))
    rnd = rng.random
    choices = rng.choices
    buf: list[str] = []
    pos = 0
    for day_index, n in enumerate(counts):
        if not n:
            continue
        for old in [d for d in moments if d < day_index - 1]:
            del moments[old]  # memory stays flat over long periods
        moment(day_index, 0)
        today = moments[day_index]
        minutes = choices(_MINUTES, cum_weights=_MINUTE_CUM, k=n)
        minutes.sort()
        if day_index * 1440 + minutes[-1] > extract_minute:  # extracted during the day: no later arrival
            minutes = [m for m in minutes if day_index * 1440 + m <= extract_minute]
            n = len(minutes)
        ages = choices(_AGES, cum_weights=_AGE_CUM, k=n)
        homes = choices(res_range, cum_weights=res_cum, k=n)
        for minute, age, home in zip(minutes, ages, homes, strict=True):
            pos += 1
            block = blocks[_BAND_OF_AGE[age]][int(rnd() * pool_size)]
            age_days = int((age + rnd()) * 365.2425)
            stay = stays[block.stay][int(rnd() * _STAY_POOL)]
            day = day_index
            entree_s = naiss_s = None
            closed = False
            if pos in defect_at:
                day, minute, stay, block, entree_s, naiss_s, closed = _defect(
                    defect_at[pos], style, day, minute, stay, block, age_days, start_ord, start)
            # who
            if naiss_s is None:
                ordinal = start_ord + day - age_days
                naiss_s = birth_cache.get(ordinal)
                if naiss_s is None:
                    naiss_s = birth_cache[ordinal] = _d(date.fromordinal(ordinal))
            # when
            if entree_s is None:
                entree_s = today[minute] if day == day_index else moment(day, minute)
                if seconds:
                    entree_s += f":{pos * 37 % 60:02d}"
            entree_f = f"{o_e}{entree_s}{c_e}" if entree_s else el("ENTREE", "")
            end_minute = minute + stay
            if open_visits and not closed and day * 1440 + end_minute > extract_minute:
                tail = open_tail
            else:
                sortie_s = today[end_minute] if 0 <= end_minute < 1440 and day == day_index else moment(
                    day, end_minute)
                if seconds:
                    sortie_s += f":{(pos * 53 + 11) % 60:02d}"
                tail = f"{o_s}{sortie_s}{c_s}{block.exit_f}"
                if extensions:
                    tail += f"{o_u}{sortie_s}{c_u}{block.uhcd_f}" if block.uhcd else empty_uhcd
            if extensions:
                seen = minute + 5 + pos * 13 % max(1, stay // 2)
                if day * 1440 + seen <= extract_minute:
                    a_f = (f"{block.a1_f}{o_h}{moment(day, seen)}{c_h}"
                           f"{block.a2_f}")
                else:
                    a_f = f"{block.a1_f}{empty_hmed}{block.a2_f}"
            else:
                a_f = block.a_f
            record = (f"{p_open}{res_frags[home]}{o_n}{naiss_s}{c_n}{block.sexe_f}{entree_f}{a_f}{tail}"
                      f"{p_close}")
            if pos == cut_at:  # cut mid-PATIENT, just after a tag (a cut after "<" reads as not XML)
                buf.append(record[: record.index(">", len(record) // 2) + 1])
                out.write("".join(buf))
                return pos - 1
            buf.append(record)
            if len(buf) >= _FLUSH:
                out.write("".join(buf))
                buf.clear()
    if cut_at:  # fewer visits than planned (an early extraction): cut the next PATIENT short
        buf.append(f"{p_open}{res_frags[0][:8]}")
        out.write("".join(buf))
        return pos
    out.write("".join(buf))
    out.write(_footer(style, defects))
    return pos


def _defect(rule: str, style: _Style, day: int, minute: int, stay: int, block: _Block, age_days: int,
            start_ord: int, start: date):
    """Change one record so that it raises ``rule`` and nothing else. Returns the new
    (day, minute, stay, block, entree text or None, naissance text or None, forced closed)."""
    entree_s = naiss_s = None
    closed = False
    if rule == "ENTREE_MISSING":
        entree_s = ""
    elif rule == "ENTREE_INVALID":
        entree_s = f"32/13/{start.year} 25:99"
    elif rule == "VALUE_NOT_IN_SET":
        block = block.copy(gravite="7").render(style)
    elif rule == "FORMAT_INVALID":
        block = block.copy(actes=("XXX",)).render(style)
    elif rule == "DATE_INVALID":
        naiss_s = f"31/02/{date.fromordinal(start_ord + day - age_days).year}"
    elif rule == "SORTIE_BEFORE_ENTREE":
        stay, closed = -90, True
    elif rule == "STAY_TOO_LONG":
        stay, closed = 80 * 60, True
    elif rule == "AGE_OUT_OF_RANGE":
        naiss_s = _d(_minus_years(date.fromordinal(start_ord + day), 130))
    elif rule == "ENTREE_OUTSIDE_PERIOD":
        day, closed = -3, True
    elif rule == "PROVENANCE_INCOHERENT":
        block = block.copy(mode_entree="8", provenance="1").render(style)
    elif rule == "DESTINATION_INCOHERENT":
        block = block.copy(mode_sortie="8", destination="1", orient="", uhcd=None).render(style)
        closed = True
    elif rule == "ORIENT_INCOHERENT":
        block = block.copy(mode_sortie="6", destination="1", orient="FUGUE", uhcd=None).render(style)
        closed = True
    if closed and not block.mode_sortie:
        block = block.copy(mode_sortie="8", destination="", orient="", uhcd=None).render(style)
    return day, minute, stay, block, entree_s, naiss_s, closed


# --- a region ----------------------------------------------------------------------------------

def generate_region(outdir, n_establishments: int, days: int, end: date, *, seed: int = 0,
                    visits_per_day: float | None = None) -> list[Path]:
    """One daily file per establishment of ``demo_establishments(n_establishments, "67", seed)``,
    covering the ``days`` days ending at ``end`` (the rolling window is 7), named
    ``O<FINESS>_<ORDRE>_<yyyymmddhhmmss>.xml`` after its extraction time (end + 1 day, 02:30).
    ``visits_per_day`` overrides each establishment's own mean."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    start = end - timedelta(days=days - 1)
    extract = datetime.combine(end + timedelta(days=1), time(2, 30))
    paths = []
    for i, establishment in enumerate(demo_establishments(n_establishments, "67", seed)):
        path = outdir / f"O{establishment['finess']}_{establishment['ordre']}_{extract:%Y%m%d%H%M%S}.xml"
        write_oscour_file(path, establishment["finess"], establishment["ordre"], start, end,
                          visits_per_day=visits_per_day if visits_per_day is not None else establishment[
                              "daily_visits"],
                          seed=seed * 1_000_003 + i, extract=extract)
        paths.append(path)
    return paths
