"""COPY's text format, as the store writes it: one line per row, cells joined by tabs, a missing
value as an empty cell (the COPY's NULL). Shared by the COPY of a file (copy_in) and by the
compiled row of a visit that needs no finding (clean_rows.pyx)."""

from __future__ import annotations

from datetime import date, datetime, time

ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def line(cells: tuple[str, ...]) -> str:
    """One row's line (with its line end), escaped only if a value holds a tab, a line end, a
    carriage return or a backslash (values are received text: nearly never)."""
    text = "\t".join(cells) + "\n"
    if text.count("\t") == len(cells) - 1 and text.count("\n") == 1 and "\\" not in text and "\r" not in text:
        return text
    return "\t".join(cell.translate(ESCAPES) for cell in cells) + "\n"


# Days and times of day as COPY text, remembered: str() of a datetime costs as much as checking
# a code, and a file's days and times of day repeat (bounded: 1,440 minutes, a few years of days).
DAY_TEXT: dict[date, str] = {}
CLOCK_TEXT: dict[time, str] = {}
TEXTS_KEPT = 1 << 16


def day_text(day: date) -> str:
    text = DAY_TEXT.get(day)
    if text is None:
        text = day.isoformat()
        if len(DAY_TEXT) < TEXTS_KEPT:
            DAY_TEXT[day] = text
    return text


def clock_text(clock: time) -> str:
    """The time of day, with the space that separates it from its day."""
    text = CLOCK_TEXT.get(clock)
    if text is None:
        text = " " + clock.isoformat()
        if len(CLOCK_TEXT) < TEXTS_KEPT:
            CLOCK_TEXT[clock] = text
    return text


def timestamp(value: datetime) -> str:
    return day_text(value.date()) + clock_text(value.time())


def array(items: list[str]) -> str:
    """A text[] literal. psycopg's generic list adaptation costs a third of a load; codes are
    quoted and escaped here, so any value received stays intact."""
    if not items:
        return "{}"
    joined = '","'.join(items)
    if "\\" in joined or '"' in joined:  # rare: each item escaped
        joined = '","'.join(item.replace("\\", "\\\\").replace('"', '\\"') for item in items)
    return '{"' + joined + '"}'
