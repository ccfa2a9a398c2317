"""The compiled COPY row of a clean visit (plugins/rpu/store/clean_rows.pyx) writes exactly the
lines, and counts exactly what, the checker's path writes and counts (rpu validate's count too):
on every file style with every defect, with the checks' caches cold or warm, and on fuzzed
visits. It is built by ``make install`` and used."""

from __future__ import annotations

import io
import os
import re
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpu.formats import dates, validation
from rpu.sandbox.defects import RECORD_DEFECTS
from rpu.sandbox.file_style import VARIANTS
from rpu.sandbox.generator import demo_establishments, write_oscour_file
from rpu.store import copy_in
from rpu.store.copy_in import counted, lines_of

FINESS = demo_establishments(1)[0]["finess"]


def _cold_caches() -> None:
    """Forget every value the checks have seen valid: the next file's first visits take the checker's path."""
    for cache in (dates.SEEN_DAYS, dates.SEEN_CLOCKS, dates.SEEN_DATES, validation._CP_SEEN, validation._CIM10_SEEN,
                  validation._CCAM_SEEN, validation._COMMUNES, validation._MOTIFS):
        cache.clear()
    dates.parse_date.cache_clear()


def _same_lines_and_counts(source: bytes | os.PathLike, cold: bool) -> tuple[int, int]:
    """Both paths on one file (the compiled one first, on cold caches if ``cold``); returns
    (visits the compiled path took, visits kept)."""
    read = (lambda: io.BytesIO(source)) if isinstance(source, bytes) else (lambda: source)
    if cold:
        _cold_caches()
    compiled_text, compiled_report, taken = lines_of(read(), copy_in.CleanRows)
    if cold:
        _cold_caches()
    validated = copy_in.validate_file(read())  # rpu validate: the clean visits only counted in C
    text, report, none_taken = lines_of(read())
    assert none_taken == 0
    assert compiled_text.decode().splitlines() == text.decode().splitlines()
    for other in (compiled_report, validated):
        assert counted(other) == counted(report)
        assert [f.as_json() for f in other.findings] == [f.as_json() for f in report.findings]
    return taken, report.kept_records


def test_the_compiled_rows_are_built_and_in_use():
    # make install builds them (setup.py); a build without a C compiler falls back to the
    # checker's path, which this suite's machine must not do silently.
    assert copy_in.COMPILED_ROWS, "lignes COPY compilées absentes : relancer `make install` (compilateur C requis)"


@pytest.mark.parametrize("cold", [True, False], ids=["cold", "warm"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_both_paths_write_the_same_lines_on_every_file_style_and_defect(tmp_path, variant, cold):
    path = tmp_path / f"{variant}.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 11, 1), date(2026, 11, 7), visits_per_day=30,
                      extract=datetime(2026, 11, 8, 3), seed=5, variant=variant, defects=RECORD_DEFECTS)
    taken, kept = _same_lines_and_counts(path, cold)
    assert kept > 150 and taken < kept  # never those with a defect
    # Values to normalise (padded, lower case, dotted) and extension elements always take the
    # checker's path; in every other style the clean visits are taken.
    assert (taken > kept / 4) == (variant not in ("padding", "lowercase", "dotted", "extensions")), taken


def test_odd_values_take_the_checkers_path_and_come_out_the_same():
    odd = ["<COMMUNE>SAINT\\DIÉ</COMMUNE>", "<MOTIF>a\tb</MOTIF>", "<DP>J069&#10;</DP>", "<CP> 67000</CP>",
           "<NAISSANCE>01/01/2026</NAISSANCE>", "<NAISSANCE>02/11/1906</NAISSANCE>", "<SEXE>m</SEXE>",
           "<SORTIE>04/11/2026 09:59</SORTIE>", "<SORTIE>07/11/2026 10:01</SORTIE>", "<SORTIE>03/11/2026 23:00</SORTIE>",
           "<ENTREE>09/11/2026 10:00</ENTREE>", "<ENTREE> 04/11/2026 10:00</ENTREE>", "<HMED>x</HMED>",
           "<MODE_SORTIE>6</MODE_SORTIE><DESTINATION>7</DESTINATION>", "<LISTE_DA><DA>R51</DA><DA>r51</DA></LISTE_DA>"]
    data = _file(_each_changed(odd))
    taken, kept = _same_lines_and_counts(data, cold=True)
    assert kept == 2 * len(odd) - 2 and taken >= 4  # two ENTREE after EXTRACT rejected


def test_dates_read_from_their_digits_as_the_checker_reads_them():
    # The compiled path reads a date in the exact national spelling from its digits (anything
    # else through the checker's parsers): calendar edges, bounds of each part, spellings it must
    # leave to the checker, the EXTRACT and the 72-hour stay to the second.
    odd = [f"<NAISSANCE>{text}</NAISSANCE>" for text in (
        "29/02/2024", "29/02/2023", "29/02/2000", "29/02/1900", "31/04/1990", "30/04/1990", "00/01/1990",
        "01/13/1990", "01/00/1990", "01/01/0000", "+1/01/1990", "01/01/1990 ", "1/01/1990", "04/11/1906",
        "05/11/1906", "04/11/2026", "05/11/2026")]
    odd += [f"<ENTREE>{text}</ENTREE>" for text in (
        "04/11/2026 24:00", "04/11/2026 23:60", "04/11/2026 23:59:59", "04/11/2026 10:00:60", "04/11/2026 10:00:5",
        "+4/11/2026 10:00", "04/11/2026 10:0a", "04/11/2026T10:00", "04/11/2026 10:00 ", "04/11/2026 10:00:00",
        "08/11/2026 03:00:00", "08/11/2026 03:00:01", "01/11/2026 00:00", "31/10/2026 23:59:59")]
    odd += [f"<SORTIE>{text}</SORTIE>" for text in (
        "07/11/2026 10:00", "07/11/2026 10:00:01", "04/11/2026 09:59:59", "04/11/2026 10:00", "31/11/2026 10:00",
        "05/11/2026 00:00:00")]
    for cold in (True, False):
        taken, kept = _same_lines_and_counts(_file(_each_changed(odd)), cold)
        assert taken >= len(odd) // 2, taken  # the valid ones are taken by the compiled path
    # A century that is not a leap year (no clean visit before 2100 can show it).
    century = "".join(f"<PATIENT><SEXE>F</SEXE><ENTREE>{day} 10:00</ENTREE><MODE_ENTREE>8</MODE_ENTREE>"
                      f"<PROVENANCE>5</PROVENANCE><GRAVITE>2</GRAVITE></PATIENT>" * 2
                      for day in ("28/02/2100", "29/02/2100", "01/03/2100"))
    data = _file(century).replace(b"2026", b"2100").replace(b"01/11/2100", b"27/02/2100").replace(
        b"07/11/2100", b"02/03/2100").replace(b"08/11/2100", b"03/03/2100")
    taken, kept = _same_lines_and_counts(data, cold=False)
    assert (taken, kept) == (4, 4)  # 29/02/2100 does not exist: those two visits are rejected


def _each_changed(changes: list[str]) -> str:
    """Two copies of a clean visit per change, the change's element in place of the visit's own
    (the first copy fills the checks' caches, the second may be taken by the compiled path)."""
    base = {"CP": "67000", "COMMUNE": "STRASBOURG", "NAISSANCE": "11/03/1948", "SEXE": "F",
            "ENTREE": "04/11/2026 10:00", "MODE_ENTREE": "8", "PROVENANCE": "5", "GRAVITE": "2", "DP": "R51",
            "SORTIE": "04/11/2026 12:00:30", "MODE_SORTIE": "8"}
    patients = []
    for change in changes:
        names = set(re.findall(r"<([A-Z_]+)[>/ ]", change))
        fields = "".join(f"<{k}>{v}</{k}>" for k, v in base.items() if k not in names)
        patients.append(f"<PATIENT>{fields}{change}</PATIENT>" * 2)
    return "".join(patients)


def _file(patients: str) -> bytes:
    return ("<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE><EXTRACT>08/11/2026 03:00:00"
            "</EXTRACT><DATEDEBUT>01/11/2026</DATEDEBUT><DATEFIN>07/11/2026</DATEFIN></ETABLISSEMENT><PASSAGES>"
            + patients + "</PASSAGES></OSCOUR>").encode()


# Fuzzed visits: each field valid, odd, or absent; each visit twice in its file.
_VALUES = {
    "CP": ["67000", "67000", " 67000", "6700", ""],
    "COMMUNE": ["STRASBOURG", "Sélestat", "SAINT  DIÉ", "A\\B", "\u00a0X", ""],
    "NAISSANCE": ["11/03/1948", "01/01/2026", "31/12/1905", "1948-03-11", "29/02/2023", "29/02/2024", " 11/03/1948",
                  "31/04/1990", "1/03/1948", ""],
    "SEXE": ["F", "M", "I", "m", "X", ""],
    "ENTREE": ["04/11/2026 10:00", "04/11/2026 10:00:59", "31/10/2026 23:59", "08/11/2026 02:00", "08/11/2026 04:00",
               "4/11/2026 10:00", "04/11/2026  10:00", "04/11/2026 24:00", "08/11/2026 03:00:01", "+4/11/2026 10:00",
               ""],
    "MODE_ENTREE": ["8", "6", "7", "9", ""],
    "PROVENANCE": ["5", "1", "8", "", "0"],
    "TRANSPORT": ["PERSO", "SMUR", "perso", ""],
    "TRANSPORT_PEC": ["AUCUN", "MED", ""],
    "MOTIF": ["NEURO02", "R509", "a  b", "x\\y", ""],
    "GRAVITE": ["2", "5", "D", "X", ""],
    "DP": ["R51", "J06.9", "j069", "Z", "R53+1", ""],
    "SORTIE": ["04/11/2026 12:00", "04/11/2026 09:00", "07/11/2026 11:00", "05/11/2026 01:00:07", "07/11/2026 10:00:01",
               "31/11/2026 10:00", "x", ""],
    "MODE_SORTIE": ["8", "6", "7", "9", ""],
    "DESTINATION": ["1", "6", "", "9"],
    "ORIENT": ["MED", "REA", "FUGUE", "", "XX"],
}


@st.composite
def _patient(draw) -> str:
    fields = []
    for name, values in _VALUES.items():
        if draw(st.integers(0, 5)):  # mostly present
            value = draw(st.sampled_from(values))
            fields.append(f"<{name}>{value}</{name}>" if value else f"<{name}/>")
        if name == "DP" and draw(st.booleans()):
            da = draw(st.lists(st.sampled_from(["R51", "E119", "n18.9", "Q", ""]), max_size=3))
            fields.append("<LISTE_DA>" + "".join(f"<DA>{code}</DA>" for code in da) + "</LISTE_DA>")
            actes = draw(st.lists(st.sampled_from(["ZCQM001", "deqp003", "X1"]), max_size=2))
            fields.append("<LISTE_ACTES>" + "".join(f"<ACTE>{code}</ACTE>" for code in actes) + "</LISTE_ACTES>")
    return "<PATIENT>" + "".join(fields) + "</PATIENT>"


@settings(max_examples=max(200, int(os.environ.get("RPU_FUZZ_EXAMPLES", "0")) // 4), deadline=None)
@given(patients=st.lists(_patient(), min_size=1, max_size=6), cold=st.booleans())
def test_both_paths_agree_on_fuzzed_visits(patients, cold):
    _same_lines_and_counts(_file("".join(patient * 2 for patient in patients)), cold)


def _parts(usual, edges: list[int]) -> st.SearchStrategy[int]:
    """A usual value nine times in ten, else one at or past a bound."""
    return st.tuples(st.integers(0, 9), st.sampled_from(list(usual)), st.sampled_from(edges)).map(
        lambda drawn: drawn[2] if drawn[0] == 0 else drawn[1])


def _clock(draw) -> str:
    text = f" {draw(_parts(range(24), [24, 99])):02d}:{draw(_parts(range(60), [60])):02d}"
    return text + (f":{draw(_parts(range(60), [60])):02d}" if draw(st.booleans()) else "")


@st.composite
def _stay(draw) -> tuple[str, str]:
    """ENTREE mostly in the file's period (1-7 November 2026) and SORTIE mostly 0 to 2 days after
    it, every part now and then at or past its bound."""
    day, month = draw(_parts(range(1, 8), [0, 8, 29, 30, 31, 32])), draw(_parts([11], [10, 12, 2, 0, 13]))
    out = day + draw(_parts(range(0, 3), [-1, 3, 4, 25]))
    return f"{day:02d}/{month:02d}/2026" + _clock(draw), f"{out:02d}/{month:02d}/2026" + _clock(draw)


_BIRTHS = st.tuples(_parts(range(1, 29), [0, 29, 30, 31, 32]), _parts(range(1, 13), [0, 13]),
                    _parts([1948, 2000, 2024], [0, 1, 1900, 1904, 1906, 2026])).map(
    lambda parts: "{:02d}/{:02d}/{:04d}".format(*parts))


@settings(max_examples=max(200, int(os.environ.get("RPU_FUZZ_EXAMPLES", "0")) // 4), deadline=None)
@given(dates=st.lists(st.tuples(_stay(), _BIRTHS), min_size=1, max_size=6), cold=st.booleans())
def test_both_paths_agree_on_fuzzed_dates(dates, cold):
    # The compiled path's own reading of dates (from their digits) against the checker's.
    _same_lines_and_counts(_file(_each_changed(
        [f"<ENTREE>{entree}</ENTREE><SORTIE>{sortie}</SORTIE><NAISSANCE>{birth}</NAISSANCE>"
         for (entree, sortie), birth in dates])), cold)


def test_compiled_rows_that_write_otherwise_are_not_used(monkeypatch):
    from rpu.store import clean_rows

    assert copy_in._compiled_clean_rows() is clean_rows.CleanRows

    class WritesOtherwise(clean_rows.CleanRows):
        def take(self, raw):
            return raw.position == 1  # counts nothing, writes nothing: the lines and counts differ

    monkeypatch.setattr(clean_rows, "CleanRows", WritesOtherwise)
    assert copy_in._compiled_clean_rows() is None

    class TakesNothing(clean_rows.CleanRows):
        def take(self, raw):
            return False  # agrees, but proves nothing

    monkeypatch.setattr(clean_rows, "CleanRows", TakesNothing)
    assert copy_in._compiled_clean_rows() is None
