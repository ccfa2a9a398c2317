"""The synthetic OSCOUR generator: deterministic, well-formed, coherent, realistic enough."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from datetime import date, datetime, timedelta

import pytest
from lxml import etree

from rpu.formats.finess import check_digit_ok, is_well_formed
from rpu.sandbox import generator
from rpu.sandbox.generator import (
    DEFECTS,
    FILE_DEFECTS,
    RECORD_DEFECTS,
    VARIANTS,
    defect_position,
    demo_establishments,
    generate_region,
    write_oscour_file,
)

FINESS = demo_establishments(1)[0]["finess"]
START, END = date(2026, 3, 2), date(2026, 3, 4)
FIELDS = ("CP", "COMMUNE", "NAISSANCE", "SEXE", "ENTREE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT",
          "TRANSPORT_PEC", "MOTIF", "GRAVITE", "DP", "LISTE_DA", "LISTE_ACTES", "SORTIE", "MODE_SORTIE",
          "DESTINATION", "ORIENT")
CODES = {"SEXE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT", "TRANSPORT_PEC", "GRAVITE", "DP", "MODE_SORTIE",
         "DESTINATION", "ORIENT"}
NOT_XML = {"TRUNCATED", "NOT_XML", "EMPTY_FILE"}


def write(tmp_path, name="f.xml", **kwargs):
    options = {"visits_per_day": 60, "seed": 1} | kwargs
    path = tmp_path / name
    count = write_oscour_file(path, FINESS, 0, options.pop("start", START), options.pop("end", END), **options)
    return path, count


def patients(path):
    return etree.parse(str(path)).getroot().iter("PATIENT")


def text(element, tag):
    child = element.find(tag)
    return "" if child is None or child.text is None else child.text


def records(path):
    """A tolerant reading: trimmed, upper-case codes without dots, minutes only, ASCII-folded text."""
    out = []
    for patient in patients(path):
        record = {}
        for tag in FIELDS:
            if tag == "LISTE_DA":
                record[tag] = [(d.text or "").strip().upper().replace(".", "") for d in patient.iter("DA")]
            elif tag == "LISTE_ACTES":
                record[tag] = [(a.text or "").strip().upper() for a in patient.iter("ACTE")]
            else:
                value = " ".join(text(patient, tag).split())
                if tag in CODES:
                    value = value.upper().replace(".", "")
                if tag in ("ENTREE", "SORTIE"):
                    value = value[:16]
                if tag in ("COMMUNE", "MOTIF"):
                    value = "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))
                    value = value.replace("\u2019", "'")
                record[tag] = value
        out.append(record)
    return out


def parse_dt(value):
    return datetime.strptime(value[:16], "%d/%m/%Y %H:%M")


# --- determinism, counts --------------------------------------------------------------------------

def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, _ = write(tmp_path, "a.xml")
    b, _ = write(tmp_path, "b.xml")
    c, _ = write(tmp_path, "c.xml", seed=2)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_returned_count_is_the_patient_count(tmp_path):
    path, count = write(tmp_path)
    assert count > 100
    assert count == sum(1 for _ in patients(path))


def test_header_and_layout(tmp_path):
    path, _ = write(tmp_path)
    raw = path.read_bytes()
    assert raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<OSCOUR>')
    root = etree.fromstring(raw)
    assert [child.tag for child in root] == ["ETABLISSEMENT", "PASSAGES"]
    header = {child.tag: child.text for child in root.find("ETABLISSEMENT")}
    assert header == {"FINESS": FINESS, "ORDRE": "0", "EXTRACT": "05/03/2026 02:30:00",
                      "DATEDEBUT": "02/03/2026", "DATEFIN": "04/03/2026"}
    for patient in patients(path):
        assert [child.tag for child in patient] == list(FIELDS)
    assert not list(tmp_path.glob(".*.part"))


# --- content ------------------------------------------------------------------------------------

def test_default_file_obeys_the_coherence_tables(tmp_path):
    path, _ = write(tmp_path, visits_per_day=300, end=START + timedelta(days=6))
    sets = {
        "SEXE": {"M", "F", "I"}, "MODE_ENTREE": {"6", "7", "8"}, "TRANSPORT": {"PERSO", "AMBU", "VSAB", "SMUR", "HELI", "FO", ""},
        "TRANSPORT_PEC": {"MED", "PARAMED", "AUCUN", ""}, "GRAVITE": {"1", "P", "2", "3", "4", "5", "D"},
    }
    after_transfer = {"HDT", "HO", "SC", "SI", "REA", "UHCD", "MED", "CHIR", "OBST"}
    end_of_period = START + timedelta(days=6)
    seen = Counter()
    for r in records(path):
        for name, allowed in sets.items():
            assert r[name] in allowed, (name, r)
        assert r["PROVENANCE"] in ({"1", "2", "3", "4"} if r["MODE_ENTREE"] in "67" else {"5", "8"}), r
        mode, dest, orient = r["MODE_SORTIE"], r["DESTINATION"], r["ORIENT"]
        if mode in ("6", "7"):
            assert dest in {"1", "2", "3", "4"} and orient in after_transfer, r
        elif mode == "8":
            assert dest in {"", "6", "7"} and orient in {"", "FUGUE", "SCAM", "PSA", "REO"}, r
        elif mode == "9":
            assert dest == orient == "", r
        else:  # still open
            assert r["SORTIE"] == dest == orient == "", r
        assert re.fullmatch(r"[0-9]{5}", r["CP"]) or r["CP"] == r["COMMUNE"] == ""
        assert r["COMMUNE"] == r["COMMUNE"].upper()
        assert r["DP"] == "" or re.fullmatch(r"[A-Z][0-9]{2}[0-9A-Z]{0,3}", r["DP"])
        assert len(r["LISTE_DA"]) <= 3 and len(r["LISTE_ACTES"]) <= 3
        assert all(re.fullmatch(r"[A-Z]{4}[0-9]{3}", acte) for acte in r["LISTE_ACTES"])
        entree = parse_dt(r["ENTREE"])
        assert START <= entree.date() <= end_of_period
        birth = datetime.strptime(r["NAISSANCE"], "%d/%m/%Y").date()
        age = entree.year - birth.year - ((entree.month, entree.day) < (birth.month, birth.day))
        assert 0 <= age <= 106
        if r["SORTIE"]:
            stay = parse_dt(r["SORTIE"]) - entree
            assert timedelta(minutes=30) <= stay <= timedelta(hours=14)
        seen["child"] += age < 18
        seen["old"] += age >= 75
        seen["hospitalised"] += mode in ("6", "7")
        seen["open"] += mode == ""
        seen["ccmu12"] += r["GRAVITE"] in ("1", "2")
        seen["home"] += r["MODE_ENTREE"] == "8"
        seen["all"] += 1
    share = {k: v / seen["all"] for k, v in seen.items()}
    assert 0.12 < share["child"] < 0.35 and 0.08 < share["old"] < 0.3
    assert 0.12 < share["hospitalised"] < 0.3
    assert share["ccmu12"] > 0.7 and share["home"] > 0.9
    assert 0 < share["open"] < 0.02


def test_open_visits_only_at_the_end(tmp_path):
    path, _ = write(tmp_path, visits_per_day=400)
    rows = records(path)
    opened = [r for r in rows if not r["SORTIE"]]
    assert opened
    assert all(parse_dt(r["ENTREE"]) >= datetime(2026, 3, 4, 12) for r in opened)
    assert all(r["MODE_SORTIE"] == r["DESTINATION"] == r["ORIENT"] == "" for r in opened)
    closed_path, _ = write(tmp_path, "closed.xml", visits_per_day=400, open_visits=False)
    assert all(r["SORTIE"] and r["MODE_SORTIE"] for r in records(closed_path))


def test_weekly_and_hourly_seasonality(tmp_path):
    path, count = write(tmp_path, visits_per_day=150, start=date(2026, 1, 5), end=date(2026, 3, 1))  # 8 weeks
    by_day, by_hour = Counter(), Counter()
    for patient in patients(path):
        entree = parse_dt(text(patient, "ENTREE"))
        by_day[entree.weekday()] += 1
        by_hour[entree.hour] += 1
    assert by_day[0] > 1.08 * by_day[2]  # Monday
    assert by_day[5] < 0.96 * by_day[2] and by_day[6] < 0.96 * by_day[2]  # the weekend
    assert by_hour[11] > 4 * by_hour[4] and by_hour[18] > 4 * by_hour[3]
    assert count == sum(by_day.values())


def test_free_text_is_escaped_and_accents_kept(tmp_path):
    path, _ = write(tmp_path, visits_per_day=600, end=START + timedelta(days=6))
    raw = path.read_text(encoding="utf-8")
    assert "&amp;" in raw and "&gt;" in raw
    motifs = {text(p, "MOTIF") for p in patients(path)}
    assert any("&" in m or ">" in m for m in motifs)
    assert any(c in raw for c in "ÉÈÂÊÎÔÛ")


# --- variants -------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_well_formed_with_the_same_records(tmp_path, variant):
    reference, count = write(tmp_path, "standard.xml", visits_per_day=40, defects=("DATE_INVALID",))
    path, variant_count = write(tmp_path, f"{variant}.xml", visits_per_day=40, variant=variant,
                                defects=("DATE_INVALID",))
    assert variant_count == count
    assert records(path) == records(reference)


def test_variant_specifics(tmp_path):
    def raw(variant):
        return write(tmp_path, f"{variant}.xml", visits_per_day=200, variant=variant)[0].read_bytes()

    assert raw("latin1").startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>') and "É".encode("latin-1") in raw(
        "latin1")
    assert raw("cp1252").startswith(b'<?xml version="1.0" encoding="windows-1252"?>')
    assert raw("bom").startswith(b"\xef\xbb\xbf<?xml")
    nodecl = raw("nodecl")
    assert nodecl.startswith(b"<OSCOUR>") and nodecl.isascii()
    crlf = raw("crlf")
    assert b"\r\n" in crlf and b"\n" not in crlf.replace(b"\r\n", b"") and b"\r\n      <SEXE>" in crlf
    assert re.search(rb"<ENTREE>\d\d/\d\d/\d{4} \d\d:\d\d:\d\d</ENTREE>", raw("seconds"))
    assert re.search(rb"<[A-Z_]+>\s+\S", raw("padding"))
    assert b"<LISTE_DA/>" in raw("selfclosing") and b"<DESTINATION/>" in raw("selfclosing")
    extensions = etree.fromstring(raw("extensions"))
    first = extensions.find(".//PATIENT")
    tags = [child.tag for child in first]
    assert tags[tags.index("MOTIF") + 1:tags.index("GRAVITE")] == ["HMED", "CIRCONSTANCE"]
    assert tags[tags.index("ORIENT") + 1:] == ["ENTREE_UHCD", "MODE_SORTIE_UHCD", "DESTINATION_UHCD", "ORIENT_UHCD"]
    assert any(text(p, "ENTREE_UHCD") for p in extensions.iter("PATIENT"))
    assert re.search(rb"<SEXE>[mfi]</SEXE>", raw("lowercase")) and re.search(rb"<DP>[a-z]\d", raw("lowercase"))
    assert re.search(rb"<DP>[A-Z]\d\d\.\d", raw("dotted"))
    per = etree.fromstring(raw("passages_per_patient"))
    assert len(per.findall("PASSAGES")) == len(per.findall("PASSAGES/PATIENT")) > 1
    none = etree.fromstring(raw("no_passages"))
    assert none.find("PASSAGES") is None and len(none.findall("PATIENT")) > 1
    assert b"<DATEFIN></DATEFIN>" in raw("empty_datefin")
    assert b"<LISTE_ACTES >" in raw("liste_actes_space")


def test_variants_combine_and_unknown_ones_are_refused(tmp_path):
    reference, _ = write(tmp_path, "standard.xml", visits_per_day=30)
    path, _ = write(tmp_path, "mix.xml", visits_per_day=30, variant="latin1+crlf+padding+lowercase+no_passages")
    assert records(path) == records(reference)
    with pytest.raises(ValueError):
        write(tmp_path, variant="utf16")
    with pytest.raises(ValueError):
        write(tmp_path, variant="latin1+bom")


# --- defects ------------------------------------------------------------------------------------

@pytest.mark.parametrize("defect", DEFECTS)
def test_every_defect_file_is_well_formed_unless_meant_not_to_be(tmp_path, defect):
    path, count = write(tmp_path, visits_per_day=5, end=START, defects=(defect,))
    raw = path.read_bytes()
    if defect == "EMPTY_FILE":
        assert raw == b"" and count == 0
    elif defect == "NOT_XML":
        assert count == 0 and raw and not raw.lstrip().startswith(b"<")
    elif defect == "TRUNCATED":
        with pytest.raises(etree.XMLSyntaxError):
            etree.fromstring(raw)
        assert raw.count(b"</PATIENT>") == count and raw.count(b"<PATIENT>") == count + 1
    else:
        root = etree.fromstring(raw)
        assert count == len(list(root.iter("PATIENT"))) >= defect_position(0)


def test_record_defects_land_on_their_records(tmp_path):
    path, _ = write(tmp_path, defects=RECORD_DEFECTS)
    rows = records(path)
    at = {rule: rows[defect_position(i) - 1] for i, rule in enumerate(RECORD_DEFECTS)}
    assert at["ENTREE_MISSING"]["ENTREE"] == ""
    assert at["ENTREE_INVALID"]["ENTREE"].startswith("32/13/")
    assert at["VALUE_NOT_IN_SET"]["GRAVITE"] == "7"
    assert at["FORMAT_INVALID"]["LISTE_ACTES"] == ["XXX"]
    assert at["DATE_INVALID"]["NAISSANCE"].startswith("31/02/")
    sbe = at["SORTIE_BEFORE_ENTREE"]
    assert parse_dt(sbe["SORTIE"]) < parse_dt(sbe["ENTREE"])
    stl = at["STAY_TOO_LONG"]
    assert parse_dt(stl["SORTIE"]) - parse_dt(stl["ENTREE"]) > timedelta(hours=72)
    aor = at["AGE_OUT_OF_RANGE"]
    assert parse_dt(aor["ENTREE"]).year - int(aor["NAISSANCE"][-4:]) == 130
    assert parse_dt(at["ENTREE_OUTSIDE_PERIOD"]["ENTREE"]).date() < START
    assert (at["PROVENANCE_INCOHERENT"]["MODE_ENTREE"], at["PROVENANCE_INCOHERENT"]["PROVENANCE"]) == ("8", "1")
    dest = at["DESTINATION_INCOHERENT"]
    assert (dest["MODE_SORTIE"], dest["DESTINATION"], dest["ORIENT"]) == ("8", "1", "")
    orient = at["ORIENT_INCOHERENT"]
    assert (orient["MODE_SORTIE"], orient["DESTINATION"], orient["ORIENT"]) == ("6", "1", "FUGUE")
    # every other record is untouched: identical to the file written without defects
    clean, _ = write(tmp_path, "clean.xml")
    positions = {defect_position(i) - 1 for i in range(len(RECORD_DEFECTS))}
    assert [r for i, r in enumerate(records(clean)) if i not in positions] == [
        r for i, r in enumerate(rows) if i not in positions]


def test_file_defects_change_the_header(tmp_path):
    def header(defect):
        path, _ = write(tmp_path, f"{defect}.xml", visits_per_day=5, defects=(defect,))
        root = etree.parse(str(path)).getroot()
        return root.tag, {child.tag: child.text or "" for child in root.find("ETABLISSEMENT")}

    tag, fields = header("FINESS_CHECK_DIGIT")
    assert fields["FINESS"][:-1] == FINESS[:-1] and not check_digit_ok(fields["FINESS"])
    assert header("FINESS_MISSING")[1]["FINESS"] == ""
    fields = header("PERIOD_REVERSED")[1]
    debut, fin = (datetime.strptime(fields[k], "%d/%m/%Y") for k in ("DATEDEBUT", "DATEFIN"))
    assert fin < debut
    assert header("DATEDEBUT_INVALID")[1]["DATEDEBUT"].startswith("32/13/")
    assert header("WRONG_ROOT")[0] == "RPU"
    path, _ = write(tmp_path, "dtd.xml", defects=("DTD_FORBIDDEN",))
    assert b"<!DOCTYPE OSCOUR [" in path.read_bytes() and b"<!ENTITY" in path.read_bytes()


def test_unknown_defect_is_refused(tmp_path):
    with pytest.raises(ValueError):
        write(tmp_path, defects=("NO_SUCH_RULE",))


def test_defects_raise_only_their_own_rule(tmp_path):
    """Cross-check with the concentrator's validation, when it is there."""
    validation = pytest.importorskip("rpu.formats.validation")
    for defect in DEFECTS:
        path, _ = write(tmp_path, f"{defect}.xml", visits_per_day=10, end=START, defects=(defect,),
                        variant="selfclosing+padding")
        report = validation.inspect_file(path)
        assert dict(report.rule_counts) == {defect: 1}, defect
        assert report.rejected == (defect in FILE_DEFECTS)
    path, _ = write(tmp_path, "clean.xml", visits_per_day=200)
    assert validation.inspect_file(path).rule_counts == Counter()


# --- establishments, region -----------------------------------------------------------------------

def test_demo_establishments():
    establishments = demo_establishments(12, seed=3)
    assert establishments == demo_establishments(12, seed=3)
    assert len({e["finess"] for e in establishments}) == 12
    for e in establishments:
        assert set(e) == {"finess", "ordre", "name", "legal_finess", "daily_visits"}
        assert e["finess"].startswith("67") and is_well_formed(e["finess"]) and check_digit_ok(e["finess"])
        assert check_digit_ok(e["legal_finess"]) and e["ordre"] == 0
        assert 40 <= e["daily_visits"] <= 250
    assert len({e["name"] for e in establishments}) == 12
    for departement in ("2A", "75", "971"):
        for e in demo_establishments(3, departement):
            assert e["finess"].startswith(departement) and is_well_formed(e["finess"])
            assert check_digit_ok(e["finess"])
    with pytest.raises(ValueError):
        demo_establishments(2, "00")


def test_other_departements_get_their_own_postcodes(tmp_path):
    finess = demo_establishments(1, "2B")[0]["finess"]
    path = tmp_path / "corse.xml"
    write_oscour_file(path, finess, 0, START, START, visits_per_day=50)
    cps = Counter(text(p, "CP")[:2] for p in patients(path))
    assert cps.most_common(1)[0][0] == "20"


def test_generate_region(tmp_path):
    end = date(2026, 3, 8)
    paths = generate_region(tmp_path / "out", 3, 7, end, seed=4, visits_per_day=20)
    assert len(paths) == 3 and all(p.exists() for p in paths)
    finesses = {e["finess"] for e in demo_establishments(3, "67", 4)}
    for path in paths:
        match = re.fullmatch(r"O(\w{9})_0_20260309023000\.xml", path.name)
        assert match and match.group(1) in finesses
        root = etree.parse(str(path)).getroot()
        header = {child.tag: child.text for child in root.find("ETABLISSEMENT")}
        assert header["FINESS"] == match.group(1)
        assert (header["DATEDEBUT"], header["DATEFIN"]) == ("02/03/2026", "08/03/2026")
    assert len({p.read_bytes() for p in paths}) == 3
    assert [p.read_bytes() for p in paths] == [
        p.read_bytes() for p in generate_region(tmp_path / "again", 3, 7, end, seed=4, visits_per_day=20)]


def test_module_exports():
    assert set(DEFECTS) == set(RECORD_DEFECTS) | set(FILE_DEFECTS) and len(DEFECTS) == 21
    assert VARIANTS[0] == "standard" and len(VARIANTS) == len(set(VARIANTS)) == 16
    assert generator.write_oscour_file is write_oscour_file
