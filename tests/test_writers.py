"""The outbound writers: OSCOUR (to Santé publique France) and SYRIUS (to ATIH)."""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
from datetime import date, datetime

import pytest
from lxml import etree

from rpu.formats.model import OSCOUR_FIELDS, Header, Visit
from rpu.formats.oscour_writer import write_oscour, xml_escape
from rpu.formats.syrius import (
    CodegeoTable,
    age_at,
    syrius_entry_name,
    write_syrius,
    write_syrius_zip,
)

HEADER = Header(finess="670780691", ordre=0, extract=datetime(2024, 3, 2, 3, 4, 5),
                period_start=date(2024, 2, 24), period_end=date(2024, 3, 1))

SYRIUS_ORDER = (
    "CODEGEO", "AGE", "AGE_JOURS", "SEXE", "ENTREE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT",
    "TRANSPORT_PEC", "MOTIF", "GRAVITE", "DP", "LISTE_DA", "LISTE_ACTES", "SORTIE", "MODE_SORTIE",
    "DESTINATION", "ORIENT",
)


def full_visit(**changes) -> Visit:
    values = dict(
        position=1, entree=datetime(2024, 2, 29, 8, 5, 59), cp="67000", commune="STRASBOURG",
        naissance=date(1980, 7, 4), sexe="F", mode_entree="8", provenance="5", transport="PERSO",
        transport_pec="AUCUN", motif="TRAUMATO17", gravite="2", dp="S934", da=["R53+1", "Z880"],
        actes=["DEQP003"], sortie=datetime(2024, 2, 29, 11, 40, 12), mode_sortie="8",
        destination=None, orient=None,
    )
    values.update(changes)
    return Visit(**values)


def minimal_visit(**changes) -> Visit:
    values = dict(position=2, entree=datetime(2024, 3, 1, 23, 59))
    values.update(changes)
    return Visit(**values)


def oscour_bytes(visits, header: Header = HEADER) -> tuple[bytes, int]:
    buf = io.BytesIO()
    count = write_oscour(buf, header, visits)
    return buf.getvalue(), count


def patients(data: bytes) -> list[etree._Element]:
    return etree.fromstring(data).findall("PASSAGES/PATIENT")


def children(element) -> list[str]:
    return [child.tag for child in element]


# --- OSCOUR ---------------------------------------------------------------------------------


def test_oscour_layout_national_order_and_formats():
    data, count = oscour_bytes([full_visit(), minimal_visit()])
    assert count == 2
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(data)
    assert root.tag == "OSCOUR"
    assert children(root) == ["ETABLISSEMENT", "PASSAGES"]
    head = root.find("ETABLISSEMENT")
    assert [(c.tag, c.text) for c in head] == [
        ("FINESS", "670780691"), ("ORDRE", "0"), ("EXTRACT", "02/03/2024 03:04:05"),
        ("DATEDEBUT", "24/02/2024"), ("DATEFIN", "01/03/2024"),
    ]
    full, minimal = patients(data)
    # Every national element, in the national order, even the empty ones.
    assert children(full) == list(OSCOUR_FIELDS)
    assert children(minimal) == list(OSCOUR_FIELDS)
    value = {c.tag: c.text for c in full}
    assert value["NAISSANCE"] == "04/07/1980"
    assert value["ENTREE"] == "29/02/2024 08:05"  # seconds dropped: dd/mm/yyyy hh:mm
    assert value["SORTIE"] == "29/02/2024 11:40"
    assert value["DESTINATION"] is None and value["ORIENT"] is None
    assert [(c.tag, c.text) for c in full.find("LISTE_DA")] == [("DA", "R53+1"), ("DA", "Z880")]
    assert [(c.tag, c.text) for c in full.find("LISTE_ACTES")] == [("ACTE", "DEQP003")]
    empty = {c.tag: c.text for c in minimal}
    assert empty["ENTREE"] == "01/03/2024 23:59"
    assert all(empty[tag] is None for tag in OSCOUR_FIELDS if tag != "ENTREE")
    assert len(minimal.find("LISTE_DA")) == 0 and len(minimal.find("LISTE_ACTES")) == 0


def test_oscour_dates_in_national_formats_only():
    data, _ = oscour_bytes([full_visit(naissance=date(2001, 1, 9), entree=datetime(2024, 1, 2, 0, 0),
                                       sortie=datetime(2024, 1, 2, 9, 7))])
    (p,) = patients(data)
    assert re.fullmatch(r"\d\d/\d\d/\d{4}", p.findtext("NAISSANCE"))
    assert p.findtext("ENTREE") == "02/01/2024 00:00"
    assert p.findtext("SORTIE") == "02/01/2024 09:07"
    assert b"2024-01" not in data  # never ISO


def test_oscour_escaping():
    visit = full_visit(commune="SAINT-JEAN & <LES> \"BAINS\" 'X' SÉLESTAT", motif="douleur <thorax> & dyspnée >> 2h",
                       dp="A&B", da=["<R53>"], actes=["&"])
    data, _ = oscour_bytes([visit])
    data.decode("utf-8")  # valid UTF-8
    (p,) = patients(data)
    assert p.findtext("COMMUNE") == visit.commune
    assert p.findtext("MOTIF") == visit.motif
    assert p.findtext("DP") == "A&B"
    assert p.findtext("LISTE_DA/DA") == "<R53>"
    assert p.findtext("LISTE_ACTES/ACTE") == "&"
    assert b"&amp; &lt;LES&gt;" in data


def test_oscour_characters_invalid_in_xml_are_replaced():
    visit = full_visit(commune="A\x01B\x0bC\ud800D\uffffE", motif="ligne 1\r\nligne 2\tfin")
    data, _ = oscour_bytes([visit])
    (p,) = patients(data)
    assert p.findtext("COMMUNE") == "A\ufffdB\ufffdC\ufffdD\ufffdE"
    assert p.findtext("MOTIF") == "ligne 1\r\nligne 2\tfin"  # CR kept as &#13;


def test_xml_escape():
    assert xml_escape(None) == ""
    assert xml_escape(7) == "7"
    assert xml_escape("a&b<c>d") == "a&amp;b&lt;c&gt;d"
    assert xml_escape("SÉLESTAT\u00a0") == "SÉLESTAT\u00a0"


def test_oscour_extensions_in_producer_positions():
    visit = full_visit(extensions=[["ORIENT", "ENTREE_UHCD", "29/02/2024 12:00"], ["MOTIF", "HMED", "1"],
                                   ["MOTIF", "CIRCONSTANCE", "chute & co"], ["ORIENT", "ORIENT_UHCD", "MED"],
                                   ["ORIENT", "MODE_SORTIE_UHCD", "6"], ["ORIENT", "HMED2", "x"]])
    data, _ = oscour_bytes([visit])
    (p,) = patients(data)
    tags = children(p)
    assert tags == [
        *OSCOUR_FIELDS[:OSCOUR_FIELDS.index("MOTIF") + 1], "HMED", "CIRCONSTANCE",
        *OSCOUR_FIELDS[OSCOUR_FIELDS.index("GRAVITE"):], "ENTREE_UHCD", "ORIENT_UHCD", "MODE_SORTIE_UHCD", "HMED2",
    ]
    assert p.findtext("CIRCONSTANCE") == "chute & co"
    # HMED received after ORIENT is written back after ORIENT.
    data, _ = oscour_bytes([full_visit(extensions=[["ORIENT", "UHCD", "1"], ["ORIENT", "HMED", "1"]])])
    assert children(patients(data)[0])[-2:] == ["UHCD", "HMED"]
    # Any XML name a producer could send is written back, after ORIENT.
    data, _ = oscour_bytes([full_visit(extensions=[["ORIENT", "DATE_ÉVÉNEMENT", "x"]])])
    assert children(patients(data)[0])[-1] == "DATE_ÉVÉNEMENT"
    assert p.findtext("ENTREE_UHCD") == "29/02/2024 12:00"


@pytest.mark.parametrize("name", ["DP", "LISTE_DA", "BAD NAME", "1X", "a<b", "a:b", "{urn:x}FOO", ""])
def test_oscour_unwritable_extension_name(name):
    with pytest.raises(ValueError):
        oscour_bytes([full_visit(extensions=[["ORIENT", name, "x"]])])


def test_oscour_empty_list_items_left_out_and_none_fields():
    data, _ = oscour_bytes([full_visit(da=["", "R53+1"], actes=[""], orient=None)])
    (p,) = patients(data)
    assert [c.text for c in p.find("LISTE_DA")] == ["R53+1"]
    assert len(p.find("LISTE_ACTES")) == 0


def test_oscour_to_path_streamed_in_batches(tmp_path):
    path = tmp_path / "out.xml"

    def visits():
        for i in range(2500):  # more than one batch
            yield full_visit(position=i + 1, motif=f"M{i}")

    assert write_oscour(path, HEADER, visits()) == 2500
    ps = patients(path.read_bytes())
    assert len(ps) == 2500
    assert ps[-1].findtext("MOTIF") == "M2499"


def test_oscour_file_object_left_open_and_no_visit():
    buf = io.BytesIO()
    assert write_oscour(buf, Header(finess="670780691"), []) == 0
    assert not buf.closed
    root = etree.fromstring(buf.getvalue())
    assert root.find("PASSAGES") is not None and len(root.find("PASSAGES")) == 0
    # ORDRE None is written 0; missing dates as empty elements.
    assert root.findtext("ETABLISSEMENT/ORDRE") == "0"
    assert root.findtext("ETABLISSEMENT/DATEFIN") == ""


def test_oscour_round_trip_through_the_reader(tmp_path):
    validation = pytest.importorskip("rpu.formats.validation")
    if not hasattr(validation, "inspect_file"):
        pytest.skip("no rpu.formats.validation.inspect_file")
    sent = [
        full_visit(),
        full_visit(position=2, cp="20000", commune="AJACCIO & <CO>", sexe="M", mode_entree="7", provenance="1",
                   transport="SMUR", transport_pec="MED", gravite="4", dp="I219", da=[], actes=["DEQP003", "YYYY600"],
                   mode_sortie="6", destination="1", orient="REA", extensions=[["MOTIF", "HMED", "1"], ["ORIENT", "ORIENT_UHCD", "MED"]]),
        minimal_visit(position=3),
    ]
    path = tmp_path / "round.xml"
    write_oscour(path, HEADER, sent)
    received: list[Visit] = []
    report = validation.inspect_file(path, on_visit=lambda visit, header: received.append(visit))
    assert not report.rejected
    assert report.header.finess == HEADER.finess and report.header.ordre == HEADER.ordre
    assert (report.header.period_start, report.header.period_end) == (HEADER.period_start, HEADER.period_end)
    assert report.header.extract == HEADER.extract
    assert len(received) == len(sent)
    for a, b in zip(sent, received, strict=True):
        for name in ("cp", "commune", "naissance", "sexe", "mode_entree", "provenance", "transport", "transport_pec",
                     "motif", "gravite", "dp", "da", "actes", "mode_sortie", "destination", "orient", "extensions"):
            assert (getattr(b, name) or None) == (getattr(a, name) or None), name
        assert b.entree == a.entree.replace(second=0)
        assert b.sortie == (a.sortie.replace(second=0) if a.sortie else None)


# --- SYRIUS: age ----------------------------------------------------------------------------


@pytest.mark.parametrize(("naissance", "entree", "expected"), [
    (date(1980, 7, 4), date(2024, 7, 3), (43, 0)),  # the day before the birthday
    (date(1980, 7, 4), date(2024, 7, 4), (44, 0)),  # the birthday
    (date(1980, 12, 31), date(2024, 1, 1), (43, 0)),
    # Born on 29 February.
    (date(2000, 2, 29), date(2023, 2, 28), (22, 0)),  # non-leap year: not yet on 28 February
    (date(2000, 2, 29), date(2023, 3, 1), (23, 0)),  # ... reached on 1 March
    (date(2000, 2, 29), date(2024, 2, 28), (23, 0)),  # leap year: not yet on 28 February
    (date(2000, 2, 29), date(2024, 2, 29), (24, 0)),  # ... reached on 29 February
    (date(2023, 2, 28), date(2024, 2, 28), (1, 0)),
    (date(2024, 2, 29), date(2025, 2, 28), (0, 365)),
    (date(2024, 2, 29), date(2025, 3, 1), (1, 0)),
    # Newborns: age in days.
    (date(2024, 3, 1), date(2024, 3, 1), (0, 0)),
    (date(2024, 3, 1), date(2024, 3, 11), (0, 10)),
    (date(2023, 3, 2), date(2024, 3, 1), (0, 365)),  # across 29 February 2024
    # Unknown or impossible.
    (None, date(2024, 3, 1), (0, 0)),
    (date(2024, 3, 2), date(2024, 3, 1), (0, 0)),
])
def test_age_at(naissance, entree, expected):
    assert age_at(naissance, entree) == expected
    # A datetime ENTREE counts by its date.
    assert age_at(naissance, datetime.combine(entree, datetime.min.time()).replace(hour=23, minute=59)) == expected


# --- SYRIUS: CODEGEO ------------------------------------------------------------------------

TABLE_CSV = (
    "CP;CODE_GEO;LIBELLE\n"
    "67000 ; 67000 ;Strasbourg\n"
    "67100;67000;Strasbourg\n"
    "01000;01000;Bourg-en-Bresse\n"
    "20167;20167;Alata\n"
    "97100;97100;Basse-Terre\n"
    "99134;99134;Espagne\n"
    ";;\n"
)


@pytest.fixture
def codegeo(tmp_path) -> CodegeoTable:
    path = tmp_path / "codegeo.csv"
    path.write_bytes(b"\xef\xbb\xbf" + TABLE_CSV.encode("utf-8"))
    return CodegeoTable.load(path)


@pytest.mark.parametrize(("cp", "expected"), [
    ("67000", "67000"),  # in the table
    ("67100", "67000"),
    (" 67 100 ", "67000"),  # blanks ignored
    ("1000", "01000"),  # lost leading zero
    ("20167", "20167"),
    ("99134", "99134"),
    ("97100", "97100"),
    (None, "99999"),  # empty
    ("", "99999"),
    ("   ", "99999"),
    ("67999", "67999"),  # known département, not in the table
    ("67300", "67999"),
    ("01990", "01999"),
    ("95000", "95999"),
    ("20000", "2A999"),  # Corsica, by PMSI ranges
    ("20199", "2A999"),
    ("20200", "2B999"),
    ("20600", "2B999"),
    ("20699", "2B999"),
    ("2A004", "2A999"),
    ("2b033", "2B999"),
    ("20700", "99999"),  # no such Corsican postcode
    ("99999", "99999"),  # abroad
    ("99100", "99999"),
    ("97200", "99999"),  # overseas, not in the table
    ("98800", "99999"),
    ("00100", "99999"),
    ("96000", "99999"),
    ("ABCDE", "99999"),  # malformed
    ("670000", "99999"),
])
def test_codegeo(codegeo, cp, expected):
    assert codegeo.codegeo(cp) == expected
    assert codegeo.codegeo(cp) == expected  # memoised answer


def test_codegeo_table_load_variants(tmp_path, codegeo):
    assert len(codegeo) == 6 and "67100" in codegeo and "67300" not in codegeo
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("Code postal;Code géographique;Libellé\n68000;68000;Colmar é\n".encode("latin-1"))
    assert CodegeoTable.load(latin1).codegeo("68000") == "68000"
    no_header = tmp_path / "noheader.csv"
    no_header.write_text("68000;68000\n68100;68100\n", encoding="utf-8")
    assert len(CodegeoTable.load(no_header)) == 2
    empty = tmp_path / "empty.csv"
    empty.write_text("CP;CODE\n", encoding="utf-8")
    with pytest.raises(ValueError):
        CodegeoTable.load(empty)


# --- SYRIUS: the file -----------------------------------------------------------------------

SYRIUS_HEADER = Header(root="SYRIUS", finess="670780691", ordre=0, extract=datetime(2024, 3, 5, 2, 0, 0),
                       period_start=date(2024, 1, 1), period_end=date(2024, 2, 29))


def syrius_bytes(visits, codegeo) -> tuple[bytes, int]:
    buf = io.BytesIO()
    count = write_syrius(buf, SYRIUS_HEADER, visits, codegeo)
    return buf.getvalue(), count


def test_syrius_layout_and_anonymisation(codegeo):
    visits = [
        full_visit(extensions=[["MOTIF", "HMED", "1"], ["ORIENT", "ENTREE_UHCD", "29/02/2024 12:00"]], motif="a & <b>"),
        minimal_visit(mode_entree="x", provenance=" 05 ", mode_sortie="-1", destination="1.5"),
        full_visit(position=3, cp="20090", naissance=date(2024, 2, 19), mode_sortie="6", destination="1",
                   orient="REA"),
    ]
    data, count = syrius_bytes(visits, codegeo)
    assert count == 3
    root = etree.fromstring(data)
    assert root.tag == "SYRIUS"
    assert [(c.tag, c.text) for c in root.find("ETABLISSEMENT")] == [
        ("FINESS", "670780691"), ("ORDRE", "0"), ("EXTRACT", "05/03/2024 02:00:00"),
        ("DATEDEBUT", "01/01/2024"), ("DATEFIN", "29/02/2024"),
    ]
    # Anonymised: no CP, COMMUNE, NAISSANCE, nor any extension element, anywhere.
    tags = {element.tag for element in root.iter()}
    assert not tags & {"CP", "COMMUNE", "NAISSANCE", "HMED", "ENTREE_UHCD"}
    assert b"STRASBOURG" not in data and b"1980" not in data
    full, minimal, baby = root.findall("PASSAGES/PATIENT")
    assert children(full) == [t for t in SYRIUS_ORDER if t not in ("ORIENT",)]
    value = {c.tag: c.text for c in full}
    assert value["CODEGEO"] == "67000"
    assert (value["AGE"], value["AGE_JOURS"]) == ("43", "0")
    assert value["ENTREE"] == "29/02/2024 08:05" and value["SORTIE"] == "29/02/2024 11:40"
    assert value["MOTIF"] == "a & <b>"
    assert (value["MODE_ENTREE"], value["PROVENANCE"], value["MODE_SORTIE"], value["DESTINATION"]) == \
        ("8", "5", "8", "0")
    assert [c.text for c in full.find("LISTE_DA")] == ["R53+1", "Z880"]
    # Minimal: only the always-present elements; integers 0 when unknown or not an integer.
    assert children(minimal) == ["CODEGEO", "AGE", "AGE_JOURS", "ENTREE", "MODE_ENTREE", "PROVENANCE", "LISTE_DA",
                                 "LISTE_ACTES", "MODE_SORTIE", "DESTINATION"]
    value = {c.tag: c.text for c in minimal}
    assert value == {"CODEGEO": "99999", "AGE": "0", "AGE_JOURS": "0", "ENTREE": "01/03/2024 23:59",
                     "MODE_ENTREE": "0", "PROVENANCE": "5", "LISTE_DA": None, "LISTE_ACTES": None,
                     "MODE_SORTIE": "0", "DESTINATION": "0"}
    value = {c.tag: c.text for c in baby}
    assert (value["CODEGEO"], value["AGE"], value["AGE_JOURS"]) == ("2A999", "0", "10")
    assert (value["MODE_SORTIE"], value["DESTINATION"], value["ORIENT"]) == ("6", "1", "REA")
    assert children(baby) == list(SYRIUS_ORDER)


def test_syrius_escaping_and_empty_list_items(codegeo):
    data, _ = syrius_bytes([full_visit(dp="A&B", da=["", "<R53>"], actes=[""], transport="", gravite=None)], codegeo)
    (p,) = etree.fromstring(data).findall("PASSAGES/PATIENT")
    assert p.findtext("DP") == "A&B"
    assert [c.text for c in p.find("LISTE_DA")] == ["<R53>"]
    assert len(p.find("LISTE_ACTES")) == 0
    assert p.find("TRANSPORT") is None and p.find("GRAVITE") is None


def test_syrius_entry_name():
    when = datetime(2024, 3, 5, 2, 7, 9)
    assert syrius_entry_name("670780691", 0, when) == "670780691_020240305020709.rpu.xml"
    assert syrius_entry_name("2A0000012", 3, when) == "2A0000012_320240305020709.rpu.xml"
    assert syrius_entry_name("670780691", None, when) == "670780691_020240305020709.rpu.xml"


def test_syrius_zip(tmp_path, codegeo):
    zip_path = tmp_path / "syrius.zip"
    zip_path.write_bytes(b"old")
    os.chmod(zip_path, 0o644)
    when = datetime(2024, 3, 5, 2, 7, 9)
    visits = (full_visit(position=i + 1) for i in range(1200))
    name, count = write_syrius_zip(zip_path, SYRIUS_HEADER, visits, codegeo, when)
    assert (name, count) == ("670780691_020240305020709.rpu.xml", 1200)
    assert stat.S_IMODE(os.stat(zip_path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codegeo.csv", "syrius.zip"]  # no temporary left
    with zipfile.ZipFile(zip_path) as zf:
        (info,) = zf.infolist()
        assert info.filename == name
        assert info.compress_type == zipfile.ZIP_DEFLATED
        root = etree.fromstring(zf.read(name))
    assert root.tag == "SYRIUS"
    assert len(root.findall("PASSAGES/PATIENT")) == 1200


def test_syrius_zip_failure_leaves_nothing(tmp_path, codegeo):
    def visits():
        for i in range(3000):
            if i == 2100:
                raise RuntimeError("cursor lost")
            yield full_visit(position=i + 1)

    zip_path = tmp_path / "out" / "syrius.zip"
    zip_path.parent.mkdir()
    with pytest.raises(RuntimeError, match="cursor lost"):
        write_syrius_zip(zip_path, SYRIUS_HEADER, visits(), codegeo, datetime(2024, 3, 5))
    assert list(zip_path.parent.iterdir()) == []


def test_element_cache_past_its_bound(monkeypatch):
    from rpu.formats.oscour_writer import ElementCache

    monkeypatch.setattr(ElementCache, "MAX", 2)
    data, _ = oscour_bytes([full_visit(position=i, motif=f"motif {i} & co") for i in range(5)])
    assert [p.findtext("MOTIF") for p in patients(data)] == [f"motif {i} & co" for i in range(5)]
