"""The OSCOUR reader and the three validation layers, on generated and hand-made files."""

from __future__ import annotations

import io
import tracemalloc
from datetime import date, datetime

import pytest

from rpu.formats import finess
from rpu.formats.oscour import OscourReader
from rpu.formats.rules import RULES
from rpu.formats.validation import inspect_file, parse_datetime
from rpu.sandbox.generator import DEFECTS, FILE_DEFECTS, VARIANTS, demo_establishments, write_oscour_file

FINESS = demo_establishments(1)[0]["finess"]
START, END = date(2026, 11, 16), date(2026, 11, 22)


def _visits(path):
    visits = []
    report = inspect_file(path, on_visit=lambda visit, header: visits.append(visit))
    return report, visits


def _comparable(visit):
    # What every variant must agree on (seconds and accents differ by design in two variants).
    return (visit.entree.replace(second=0), visit.sexe, visit.mode_entree, visit.provenance, visit.transport,
            visit.gravite, visit.dp, tuple(visit.da), tuple(visit.actes), visit.mode_sortie, visit.destination,
            visit.orient, visit.cp)


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    path = tmp_path_factory.mktemp("standard") / "standard.xml"
    write_oscour_file(path, FINESS, 0, START, END, visits_per_day=30, seed=7)
    return _visits(path)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_producer_variant_is_accepted_with_the_same_visits(variant, standard, tmp_path):
    path = tmp_path / f"{variant}.xml"
    count = write_oscour_file(path, FINESS, 0, START, END, visits_per_day=30, seed=7, variant=variant)
    report, visits = _visits(path)
    assert report.status == "accepted", report.findings[:3]
    assert report.records == count == len(visits)
    assert report.rejected_records == report.flagged_records == 0, dict(report.rule_counts)
    assert [_comparable(v) for v in visits] == [_comparable(v) for v in standard[1]]
    assert report.header.finess == FINESS and report.header.period_start == START
    if variant == "extensions":
        assert any(["MOTIF", "HMED"] == e[:2] for v in visits for e in v.extensions)
    if variant in ("lowercase", "dotted", "padding"):
        assert report.normalised_values > 0


def test_empty_datefin_ends_the_period_on_the_extraction_date(tmp_path):
    path = tmp_path / "open.xml"
    write_oscour_file(path, FINESS, 0, START, END, visits_per_day=30, seed=7, variant="empty_datefin")
    report, visits = _visits(path)
    assert report.header.period_end == report.header.extract.date()
    assert max(v.entree for v in visits) <= report.header.extract


@pytest.mark.parametrize("rule", DEFECTS)
def test_each_injected_defect_raises_its_own_rule(rule, tmp_path):
    path = tmp_path / f"{rule}.xml"
    write_oscour_file(path, FINESS, 0, START, END, visits_per_day=30, seed=3, defects=[rule])
    report = inspect_file(path)
    assert set(report.rule_counts) == {rule}
    assert report.status == ("rejected" if rule in FILE_DEFECTS else "accepted")
    finding = next(f for f in report.findings if f.rule == rule)
    assert RULES[rule].title in finding.message
    if RULES[rule].level != "file":
        assert finding.record is not None and f"assage n°{finding.record}" in finding.message
        assert finding.field
    if RULES[rule].level == "record":
        assert report.rejected_records == 1 and report.kept_records == report.records - 1


def test_findings_name_the_visit_its_entree_and_the_field_in_french():
    data = (b'<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE>'
            b'<EXTRACT>02/11/2026 02:30:00</EXTRACT><DATEDEBUT>26/10/2026</DATEDEBUT><DATEFIN>01/11/2026</DATEFIN>'
            b'</ETABLISSEMENT><PASSAGES><PATIENT><SEXE>X</SEXE><ENTREE>27/10/2026 10:05</ENTREE></PATIENT>'
            b'</PASSAGES></OSCOUR>')
    report = inspect_file(io.BytesIO(data), name="f.xml")
    (finding,) = report.findings
    assert finding.message == ("Passage n°1 (entrée 27/10/2026 10:05), champ SEXE, valeur « X » : "
                               "La valeur n'appartient pas à la nomenclature du champ.")
    assert report.as_json()["issues"] == [{"rule": "VALUE_NOT_IN_SET", "record": 1, "field": "SEXE",
                                           "message": finding.message}]


def test_a_value_seen_before_is_checked_as_the_first_time():
    # Values already seen valid are remembered, and PATIENTs in the national order are read by
    # position: the same visit, in the national order or not, seen once or many times, gives
    # the same findings, values and counts.
    national = ("<PATIENT><CP> 67000</CP><COMMUNE> saint  dié </COMMUNE><NAISSANCE>01/01/1850</NAISSANCE>"
                "<SEXE>m</SEXE><ENTREE>27/10/2026 10:05</ENTREE><MODE_ENTREE>8</MODE_ENTREE>"
                "<PROVENANCE>1</PROVENANCE><TRANSPORT>PERSO</TRANSPORT><TRANSPORT_PEC>AUCUN</TRANSPORT_PEC>"
                "<MOTIF>A  B</MOTIF><GRAVITE>X</GRAVITE><DP>j06.9</DP><LISTE_DA><DA>J069</DA><DA>XX</DA>"
                "<DA/></LISTE_DA><LISTE_ACTES><ACTE>deqp003</ACTE></LISTE_ACTES>"
                "<SORTIE>27/10/2026 09:00</SORTIE><MODE_SORTIE>8</MODE_SORTIE><DESTINATION>1</DESTINATION>"
                "<ORIENT>REA</ORIENT></PATIENT>")
    reordered = national.replace("<PATIENT><CP> 67000</CP>", "<PATIENT>").replace("</ORIENT>", "</ORIENT><CP> 67000</CP>")
    data = ('<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE><EXTRACT>02/11/2026 02:30:00</EXTRACT>'
            '<DATEDEBUT>26/10/2026</DATEDEBUT><DATEFIN>01/11/2026</DATEFIN></ETABLISSEMENT><PASSAGES>'
            + national * 3 + reordered + national + "</PASSAGES></OSCOUR>").encode()
    visits = []
    report = inspect_file(io.BytesIO(data), on_visit=lambda visit, header: visits.append(visit))
    by_visit = [[(f.rule, f.field, f.value, f.detail) for f in report.findings if f.record == n] for n in range(1, 6)]
    assert by_visit[0] == [("VALUE_NOT_IN_SET", "GRAVITE", "X", None), ("FORMAT_INVALID", "DA", "XX", None),
                           ("AGE_OUT_OF_RANGE", "NAISSANCE", "01/01/1850", "Âge calculé : 176 ans."),
                           ("SORTIE_BEFORE_ENTREE", "SORTIE", "27/10/2026 09:00", None),
                           ("PROVENANCE_INCOHERENT", "PROVENANCE", "1", "MODE_ENTREE : 8."),
                           ("DESTINATION_INCOHERENT", "DESTINATION", "1", "MODE_SORTIE : 8."),
                           ("ORIENT_INCOHERENT", "ORIENT", "REA", "MODE_SORTIE : 8.")]
    assert all(findings == by_visit[0] for findings in by_visit)
    first = visits[0]
    assert (first.cp, first.commune, first.motif, first.sexe, first.dp, first.da, first.actes) == (
        "67000", "SAINT DIÉ", "A B", "M", "J069", ["J069", "XX"], ["DEQP003"])
    assert all(visit.cp == first.cp and visit.commune == first.commune and visit.motif == first.motif
               and visit.sexe == first.sexe and visit.dp == first.dp and visit.da == first.da
               and visit.actes == first.actes and visit.flags == first.flags for visit in visits)
    assert report.normalised_values == 5 * 4  # SEXE, DP (case and dot), ACTE: each visit counted alike
    assert report.flagged_records == 5



def test_a_code_ending_in_a_line_end_is_kept_without_it():
    # A pattern ending in $ also matched "J069\n": the code was kept with its line end, unnormalised.
    patient = ("<PATIENT><CP>67000&#10;</CP><NAISSANCE>01/01/1980</NAISSANCE><SEXE>M</SEXE>"
               "<ENTREE>27/10/2026 10:00</ENTREE><DP>J069&#10;</DP><LISTE_DA><DA>R51&#10;</DA></LISTE_DA>"
               "<LISTE_ACTES><ACTE>DEQP003&#10;</ACTE></LISTE_ACTES></PATIENT>")
    data = ('<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE><EXTRACT>02/11/2026 02:30:00</EXTRACT>'
            '<DATEDEBUT>26/10/2026</DATEDEBUT><DATEFIN>01/11/2026</DATEFIN></ETABLISSEMENT><PASSAGES>'
            + patient * 2 + "</PASSAGES></OSCOUR>").encode()
    visits = []
    report = inspect_file(io.BytesIO(data), on_visit=lambda visit, header: visits.append(visit))
    assert report.flagged_records == 0, report.findings
    assert [(v.cp, v.dp, v.da, v.actes) for v in visits] == [("67000", "J069", ["R51"], ["DEQP003"])] * 2
    assert report.normalised_values == 2 * 3  # DP, DA, ACTE trimmed (a CP is trimmed silently)

def test_long_values_are_not_remembered():
    # What is remembered across visits is bounded in count and in length: a file of long,
    # distinct communes cannot make the worker's memory grow with it.
    from rpu.formats import validation

    patients = "".join(f"<PATIENT><COMMUNE>{n:05d}{'x' * 5000}</COMMUNE><ENTREE>27/10/2026 10:05</ENTREE></PATIENT>"
                       for n in range(50))
    data = ('<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE><EXTRACT>02/11/2026 02:30:00</EXTRACT>'
            '<DATEDEBUT>26/10/2026</DATEDEBUT><DATEFIN>01/11/2026</DATEFIN></ETABLISSEMENT><PASSAGES>'
            + patients + "</PASSAGES></OSCOUR>").encode()
    visits = []
    inspect_file(io.BytesIO(data), on_visit=lambda visit, header: visits.append(visit))
    assert len(visits) == 50 and visits[7].commune == "00007" + "X" * 5000
    assert all(len(text) <= validation._LONGEST_KEPT for text in validation._COMMUNES)


@pytest.mark.parametrize("number,ok", [("670000397", True), ("670780691", True), ("910001973", True),
                                       ("670000398", False), ("2A0000001", True), ("2B1234567", True)])
def test_finess_check_digit(number, ok):
    assert finess.is_well_formed(number)
    assert finess.check_digit_ok(number) is ok


def test_finess_format():
    assert not finess.is_well_formed("67000039")
    assert not finess.is_well_formed("000000000")
    assert finess.is_well_formed("971234567")


def test_dates_in_national_formats():
    assert parse_datetime("05/11/2026 07:08") == datetime(2026, 11, 5, 7, 8)
    assert parse_datetime(" 05/11/2026  07:08:09 ") == datetime(2026, 11, 5, 7, 8, 9)
    for bad in ("2026-11-05 07:08", "32/11/2026 07:08", "05/11/2026", "05/11/2026 25:00"):
        with pytest.raises(ValueError):
            parse_datetime(bad)


# --- hostile input ------------------------------------------------------------------------------

_HEADER = (b"<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><EXTRACT>01/11/2026 02:00</EXTRACT>"
           b"<DATEDEBUT>01/11/2026</DATEDEBUT><DATEFIN>01/11/2026</DATEFIN></ETABLISSEMENT>")

HOSTILE = {
    "xxe": (b'<?xml version="1.0"?><!DOCTYPE OSCOUR [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b'<OSCOUR><ETABLISSEMENT><FINESS>&xxe;</FINESS></ETABLISSEMENT></OSCOUR>', "DTD_FORBIDDEN"),
    "xxe_network": (b'<!DOCTYPE OSCOUR SYSTEM "http://127.0.0.1:9/evil.dtd"><OSCOUR/>', "DTD_FORBIDDEN"),
    "billion_laughs": (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + b"".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'.encode()
                   for i in range(1, 10))
        + b']><OSCOUR><ETABLISSEMENT><FINESS>&lol9;</FINESS></ETABLISSEMENT></OSCOUR>', "DTD_FORBIDDEN"),
    "deep": (b"<OSCOUR>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</OSCOUR>", "NOT_XML"),
    "truncated": (b'<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><EXTRACT>01/11/2026 02:00</EXTRACT>'
                  b'<DATEDEBUT>01/11/2026</DATEDEBUT></ETABLISSEMENT><PASSAGES><PATIENT><ENTREE>01/11/20',
                  "TRUNCATED"),
    "junk": (bytes(range(256)) * 64, "NOT_XML"),
    "empty": (b"", "EMPTY_FILE"),
    "blank": (b"  \n\n ", "EMPTY_FILE"),
    "wrong_root": (b"<html><body>404</body></html>", "WRONG_ROOT"),
    "syrius_sent_as_oscour": (b"<SYRIUS><ETABLISSEMENT><FINESS>670780691</FINESS></ETABLISSEMENT></SYRIUS>",
                              "WRONG_ROOT"),
    # Records under another name would be an empty period (erasing it); thousands would pile up.
    "records_misnamed": (_HEADER + b"<PASSAGES><Patient><ENTREE>01/11/2026 10:00</ENTREE></Patient></PASSAGES></OSCOUR>",
                         "UNKNOWN_ELEMENT"),
    "unknown_flood": (_HEADER + b"<PASSAGES>" + b"<PASSAGE><ENTREE>01/11/2026 10:00</ENTREE></PASSAGE>" * 200_000
                      + b"</PASSAGES></OSCOUR>", "UNKNOWN_ELEMENT"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_files_are_refused_with_a_clear_rule_and_no_memory_blow_up(name):
    data, rule = HOSTILE[name]
    tracemalloc.start()
    report = inspect_file(io.BytesIO(data), name=name)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.status == "rejected"
    assert [f.rule for f in report.file_findings][-1] == rule
    assert peak < 20 * 1024 * 1024
    assert "lol" not in " ".join(f.message for f in report.findings)  # nothing was expanded


def test_a_patient_before_the_header_is_refused():
    data = b"<OSCOUR><PATIENT><ENTREE>01/11/2026 10:00</ENTREE></PATIENT><ETABLISSEMENT/></OSCOUR>"
    assert inspect_file(io.BytesIO(data)).file_findings[0].rule == "HEADER_MISSING"


def test_reading_is_streamed_in_constant_memory(tmp_path):
    small, large = tmp_path / "small.xml", tmp_path / "large.xml"
    write_oscour_file(small, FINESS, 0, START, START, visits_per_day=2_000, seed=1)
    write_oscour_file(large, FINESS, 0, START, date(2026, 11, 28), visits_per_day=4_000, seed=1)
    peaks = []
    for path in (small, large):
        tracemalloc.start()
        count = sum(1 for _ in OscourReader(path))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert count > 0
    # 25 times more visits, no more memory (a few MB of parser buffers at most).
    assert peaks[1] < peaks[0] * 2 + 2 * 1024 * 1024
