"""The national date formats of OSCOUR (``dd/mm/yyyy``, ``dd/mm/yyyy hh:mm[:ss]``), parsed by
slicing: the reader's hot path reads two per visit. Bounded caches of the day and the time of
day halves let a text already seen skip the parse (the visit checks use them inline)."""

from __future__ import annotations

from datetime import date, datetime, time
from functools import lru_cache


@lru_cache(maxsize=1 << 16)
def parse_date(text: str) -> date:
    """``dd/mm/yyyy`` (national format). Raises ValueError."""
    text = text.strip()
    if len(text) != 10 or text[2] != "/" or text[5] != "/":
        raise ValueError(text)
    value = date(int(text[6:10]), int(text[3:5]), int(text[0:2]))
    if len(SEEN_DATES) < DATES_KEPT:
        SEEN_DATES[text] = value
    return value


def parse_datetime(text: str) -> datetime:
    """``dd/mm/yyyy hh:mm`` with optional ``:ss`` (some producers). Raises ValueError."""
    # Nearly every ENTREE and SORTIE is a different minute, so caching whole values misses;
    # their day (a few hundred per file) and their time of day (1,440 minutes) repeat. A text
    # whose two halves were each seen in a value already read (whitespace already normalised)
    # is the same datetime as the full parse would give; anything else takes the full parse.
    day = SEEN_DAYS.get(text[:10])
    if day is not None:
        clock = SEEN_CLOCKS.get(text[10:])
        if clock is not None:
            return datetime.combine(day, clock)
    value = _parse_datetime(text)
    if len(text) in (16, 19) and len(SEEN_DAYS) < HALVES_KEPT and len(SEEN_CLOCKS) < HALVES_KEPT \
            and text == " ".join(text.split()):
        SEEN_DAYS[text[:10]] = value.date()
        SEEN_CLOCKS[text[10:]] = value.time()
    return value


# The halves already read (the visit checks look them up inline too). Bounded: a hostile file
# of distinct odd spellings cannot grow them.
SEEN_DAYS: dict[str, date] = {}
SEEN_CLOCKS: dict[str, time] = {}
HALVES_KEPT = 1 << 14
# The dates parse_date has read (trimmed): a birth date already seen is one look-up for the visit
# checks (a century of birth dates: more than the halves above).
SEEN_DATES: dict[str, date] = {}
DATES_KEPT = 1 << 16
combine = datetime.combine  # one global look-up instead of an attribute look-up per visit


def _parse_datetime(text: str) -> datetime:
    text = " ".join(text.split())
    if len(text) not in (16, 19) or text[2] != "/" or text[5] != "/" or text[10] != " " or text[13] != ":":
        raise ValueError(text)
    second = 0
    if len(text) == 19:
        if text[16] != ":":
            raise ValueError(text)
        second = int(text[17:19])
    return datetime(int(text[6:10]), int(text[3:5]), int(text[0:2]),
                    int(text[11:13]), int(text[14:16]), second)


def age_in_years(birth: date, on: date) -> int:
    years = on.year - birth.year
    if (on.month, on.day) < (birth.month, birth.day):
        years -= 1
    return years
