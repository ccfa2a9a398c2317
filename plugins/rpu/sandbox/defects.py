"""The defects the generator can inject, each the code of the rule (:mod:`rpu.formats.rules`)
it makes the reader raise: record-level ones on one PATIENT each, file-level ones on the whole file."""

from __future__ import annotations

from datetime import date

from rpu.sandbox.clinical import ClinicalBlock
from rpu.sandbox.file_style import FileStyle, date_text

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


# 1-based PATIENT position of the i-th requested record defect (in RECORD_DEFECTS order).
def defect_position(index: int) -> int:
    return 3 + 2 * index


def minus_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def apply_defect(rule: str, style: FileStyle, day: int, minute: int, stay: int, block: ClinicalBlock,
                 age_days: int, start_ord: int, start: date):
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
        naiss_s = date_text(minus_years(date.fromordinal(start_ord + day), 130))
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
