"""The compiled PATIENT reader (plugins/rpu/formats/patient_reader.pyx) reads exactly what the
Python reader reads, on every file style, every defect and fuzzed PATIENTs; it is built by
``make install`` and used."""

from __future__ import annotations

import os
from datetime import date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from rpu.formats import oscour
from rpu.formats.oscour import _NATIONAL_ORDER, _read_national_in_python
from rpu.formats.validation import inspect_file
from rpu.sandbox.defects import RECORD_DEFECTS
from rpu.sandbox.file_style import VARIANTS
from rpu.sandbox.generator import demo_establishments, write_oscour_file

FINESS = demo_establishments(1)[0]["finess"]


def test_the_compiled_reader_is_built_and_in_use():
    # make install builds it (setup.py); a build without a C compiler falls back to the Python
    # reader, which this suite's machine must not do silently.
    assert oscour.COMPILED_READER, "lecteur compilé absent : relancer `make install` (compilateur C requis)"


def test_the_compiled_reader_is_built_against_the_lxml_it_runs_with():
    import tomllib
    from pathlib import Path

    from rpu.formats.patient_reader import BUILT_WITH_LXML

    repo = Path(__file__).resolve().parent.parent
    build = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["build-system"]["requires"]
    pinned = [line for line in (repo / "requirements.txt").read_text(encoding="utf-8").splitlines()
              if line.startswith("lxml==")]
    assert pinned == [f"lxml=={etree.__version__}"] and f"lxml=={etree.__version__}" in build
    assert BUILT_WITH_LXML == etree.__version__


def _patients(path):
    for _event, patient in etree.iterparse(str(path), events=("end",), tag="PATIENT", resolve_entities=False,
                                           load_dtd=False, no_network=True, remove_comments=True, remove_pis=True):
        yield patient


@pytest.mark.parametrize("variant", VARIANTS)
def test_both_readers_agree_on_every_file_style_and_defect(tmp_path, variant):
    from rpu.formats.patient_reader import read_national

    path = tmp_path / f"{variant}.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 11, 1), date(2026, 11, 7), visits_per_day=15,
                      extract=datetime(2026, 11, 8, 3), seed=3, variant=variant, defects=RECORD_DEFECTS)
    read = 0
    for patient in _patients(path):
        assert read_national(patient) == _read_national_in_python(patient)
        read += 1
    assert read > 90


# Fuzzed PATIENTs: the national children or others, in order or not, with any kind of content.
_TEXTS = st.sampled_from(["", " ", "67000", "SÉLESTAT", "a&amp;b", "<![CDATA[x<y]]>", "&#233;&#9;", "x<b/>y",
                          "<!-- c -->", "<?pi x?>", "z<![CDATA[]]>", "\u00a0", "ligne\nligne", "<DA>J069</DA>"])
_NAMES = st.sampled_from([*_NATIONAL_ORDER, "HMED", "DA", "ACTE", "n:CP", "Patient"])


@st.composite
def _patient_xml(draw) -> str:
    national = draw(st.booleans())
    names = list(_NATIONAL_ORDER) if national else draw(st.lists(_NAMES, max_size=22))
    if national and draw(st.booleans()):  # one change to the national shape, or none
        names[draw(st.integers(0, len(names) - 1))] = draw(_NAMES)
    children = []
    for name in names:
        if name in ("LISTE_DA", "LISTE_ACTES"):
            item = "DA" if name == "LISTE_DA" else "ACTE"
            items = []
            for _ in range(draw(st.integers(0, 3))):
                tag = draw(st.sampled_from([item, item, "X"]))
                items.append(f"<{tag}>{draw(_TEXTS)}</{tag}>")
            children.append(f"<{name}>{''.join(items)}</{name}>")
        else:
            children.append(f"<{name}>{draw(_TEXTS)}</{name}>" if draw(st.booleans()) else f"<{name}/>")
        if draw(st.integers(0, 9)) == 0:
            children.append(draw(st.sampled_from(["<!-- entre -->", "<?pi?>", "\n  ", "texte"])))
    return f"<PATIENT xmlns:n='urn:n'>{''.join(children)}</PATIENT>"


@settings(max_examples=max(400, int(os.environ.get("RPU_FUZZ_EXAMPLES", "0"))), deadline=None)
@given(xml=_patient_xml(), keep_comments=st.booleans())
def test_both_readers_agree_on_fuzzed_patients(xml, keep_comments):
    from rpu.formats.patient_reader import read_national

    patient = etree.fromstring(xml, etree.XMLParser(remove_comments=not keep_comments, remove_pis=True))
    assert read_national(patient) == _read_national_in_python(patient)


def test_a_compiled_reader_that_reads_otherwise_is_not_used(monkeypatch):
    from rpu.formats import patient_reader

    assert oscour._compiled_reader() is patient_reader.read_national
    original = patient_reader.read_national
    monkeypatch.setattr(patient_reader, "NATIONAL_ORDER", patient_reader.NATIONAL_ORDER[::-1])
    assert oscour._compiled_reader() is _read_national_in_python
    monkeypatch.setattr(patient_reader, "NATIONAL_ORDER", _NATIONAL_ORDER)
    monkeypatch.setattr(patient_reader, "read_national", lambda patient: None)
    assert oscour._compiled_reader() is _read_national_in_python
    monkeypatch.setattr(patient_reader, "read_national", original)
    monkeypatch.setattr(patient_reader, "BUILT_WITH_LXML", "5.0.0")  # built for another lxml: not used
    assert oscour._compiled_reader() is _read_national_in_python


def test_a_file_reads_the_same_with_either_reader(tmp_path, monkeypatch):
    path = tmp_path / "night.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 11, 1), date(2026, 11, 7), visits_per_day=40,
                      extract=datetime(2026, 11, 8, 3), seed=4, variant="extensions+padding", defects=RECORD_DEFECTS)
    compiled = []
    report = inspect_file(path, on_visit=lambda visit, header: compiled.append(visit))
    monkeypatch.setattr(oscour, "_read_national", _read_national_in_python)
    python = []
    again = inspect_file(path, on_visit=lambda visit, header: python.append(visit))
    assert compiled == python and len(compiled) > 200
    assert [f.as_json() for f in report.findings] == [f.as_json() for f in again.findings]
