"""Synthetic OSCOUR files: realistic emergency visits, never real patient data.

Used for demos, tests and benchmarks. Everything is drawn from ``random.Random(seed)``: the same
arguments always give the same bytes, and the *variant* of a file (encoding, layout, padding...)
never changes the records it holds, only how they are written (see ``VARIANTS``).

Writing is streamed: each PATIENT is one f-string built from fragments rendered once per file
(a pool of clinical cases, a pool of residences), so memory stays flat and a file of a million
visits is written in a few seconds.

Public API: ``DEFECTS``, ``VARIANTS``, ``demo_establishments``, ``write_oscour_file``,
``generate_region``. What is drawn lives in :mod:`rpu.sandbox.population` (who, when, where from)
and :mod:`rpu.sandbox.clinical` (what for, what was done); how it is written in
:mod:`rpu.sandbox.file_style`; the defects in :mod:`rpu.sandbox.defects`.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from pathlib import Path

from rpu.sandbox.clinical import STAY_POOL, draw_block, stay_pools
from rpu.sandbox.defects import DEFECTS, FILE_DEFECTS, RECORD_DEFECTS, apply_defect, defect_position
from rpu.sandbox.file_style import VARIANTS, FileStyle, date_text, datetime_text
from rpu.sandbox.population import (
    BAND_OF_AGE,
    arrival_minutes,
    daily_counts,
    demo_establishments,
    draw_ages,
    residences_for,
)

# The public API (the modules below hold the rest).
__all__ = ["DEFECTS", "FILE_DEFECTS", "RECORD_DEFECTS", "VARIANTS", "defect_position", "demo_establishments",
           "generate_region", "write_oscour_file"]

# "hh:mm" of each minute of a day.
_HM = [f"{m // 60:02d}:{m % 60:02d}" for m in range(1440)]

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
    style = FileStyle(variant)
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


def _header(style: FileStyle, finess: str, ordre: int, start: date, end: date, extract: datetime,
            defects: set[str]) -> str:
    root = "RPU" if "WRONG_ROOT" in defects else "OSCOUR"
    if "FINESS_MISSING" in defects:
        finess = ""
    elif "FINESS_CHECK_DIGIT" in defects and finess[-1:].isdigit():
        finess = finess[:-1] + str((int(finess[-1]) + 1) % 10)
    debut, fin = date_text(start), date_text(end)
    if "PERIOD_REVERSED" in defects:
        debut, fin = date_text(end), date_text(start - timedelta(days=1))
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
        + style.el("EXTRACT", datetime_text(extract), p1) + style.el("DATEDEBUT", debut, p1)
        + style.el("DATEFIN", fin, p1) + f"{close}</ETABLISSEMENT>\n"
    )
    if style.passages == "one":
        lines.append(("  " if style.pretty else "") + "<PASSAGES>\n")
    return "".join(lines)


def _footer(style: FileStyle, defects: set[str]) -> str:
    root = "RPU" if "WRONG_ROOT" in defects else "OSCOUR"
    if style.passages == "one":
        return ("  " if style.pretty else "") + f"</PASSAGES>\n</{root}>\n"
    return f"</{root}>\n"


def _write(out, style: FileStyle, finess: str, ordre: int, start: date, end: date, visits_per_day: float, seed: int,
           extract: datetime, defects: set[str], open_visits: bool) -> int:
    rng = random.Random(seed)
    n_days = (end - start).days + 1
    counts = daily_counts(rng, start, n_days, visits_per_day)
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
    blocks = [[draw_block(rng, band).render(style) for _ in range(pool_size)] for band in range(5)]
    stays = stay_pools(rng)
    residences = residences_for(finess)
    res_frags = [style.el("CP", cp) + style.el("COMMUNE", style.text(name)) for cp, name, _ in residences]
    res_cum = list(itertools.accumulate(r[2] for r in residences))
    res_range = range(len(residences))

    # Prepared strings: days, open tags.
    first = start - timedelta(days=_DAY_MARGIN)
    day_s = [date_text(first + timedelta(days=i)) for i in range(n_days + 2 * _DAY_MARGIN)]
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
        minutes = arrival_minutes(rng, n)
        minutes.sort()
        if day_index * 1440 + minutes[-1] > extract_minute:  # extracted during the day: no later arrival
            minutes = [m for m in minutes if day_index * 1440 + m <= extract_minute]
            n = len(minutes)
        ages = draw_ages(rng, n)
        homes = choices(res_range, cum_weights=res_cum, k=n)
        for minute, age, home in zip(minutes, ages, homes, strict=True):
            pos += 1
            block = blocks[BAND_OF_AGE[age]][int(rnd() * pool_size)]
            age_days = int((age + rnd()) * 365.2425)
            stay = stays[block.stay][int(rnd() * STAY_POOL)]
            day = day_index
            entree_s = naiss_s = None
            closed = False
            if pos in defect_at:
                day, minute, stay, block, entree_s, naiss_s, closed = apply_defect(
                    defect_at[pos], style, day, minute, stay, block, age_days, start_ord, start)
            # who
            if naiss_s is None:
                ordinal = start_ord + day - age_days
                naiss_s = birth_cache.get(ordinal)
                if naiss_s is None:
                    naiss_s = birth_cache[ordinal] = date_text(date.fromordinal(ordinal))
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
