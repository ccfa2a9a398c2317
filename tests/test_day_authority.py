"""Authority per day, period bounds, the volume guard, extensions kept in order, valid outbound
files: against a real PostgreSQL, with files written visit by visit so that every case is exact."""

from __future__ import annotations

import io
import random
import zipfile
from datetime import date, datetime, time, timedelta
from pathlib import Path

import psycopg
import pytest
from conftest import timeliness_drift
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from rpu.cli import main as cli
from rpu.flows.atih import build_syrius
from rpu.flows.invs import build_oscour
from rpu.formats import schemas
from rpu.formats.model import Header, Visit, VolumeGuard
from rpu.formats.oscour_writer import header_xml, write_oscour
from rpu.formats.syrius import CodegeoTable, write_syrius_zip
from rpu.formats.validation import inspect_file
from rpu.store import db as store
from rpu.store.loader import apply_held, load_file, revoke_file

FINESS = "670780691"
DAY0 = date(2026, 3, 1)


@pytest.fixture(scope="module")
def module_db(pg_admin_url):
    from rpu.sandbox.local_services import create_database, drop_database

    name = "rpu_test_days_" + random.Random().randbytes(4).hex()
    url = create_database(pg_admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        store.migrate(conn)
    yield url
    drop_database(pg_admin_url, name)


@pytest.fixture
def conn(module_db):
    with psycopg.connect(module_db) as connection:
        connection.execute("TRUNCATE rpu, rpu_superseded, record_issue, file_day, held_file, received_file,"
                           " visit_timeliness RESTART IDENTITY CASCADE")
        connection.commit()
        connection.url = module_db
        yield connection


def visit(day: date, hh: int, mm: int, **fields) -> Visit:
    values = dict(position=0, entree=datetime.combine(day, time(hh, mm)), cp="67000", commune="STRASBOURG",
                  naissance=date(1980, 7, 4), sexe="F", mode_entree="8", provenance="5", transport="PERSO",
                  transport_pec="AUCUN", motif="TRAUMATO17", gravite="2", dp="S934",
                  sortie=datetime.combine(day, time(hh, mm)) + timedelta(hours=2), mode_sortie="8")
    values.update(fields)
    return Visit(**values)


def oscour_file(path: Path, start: date, end: date | None, extract: datetime, visits: list[Visit]) -> Path:
    """An establishment's file; ``end`` None writes an empty DATEFIN."""
    write_oscour(path, Header("OSCOUR", FINESS, 0, extract, start, end), visits)
    return path


def day_file(tmp_path, name, start, end, extract, per_day: int | dict, *, datefin=True, seed=0, extra=()) -> Path:
    """A file with ``per_day`` visits on each day of [start, end] (or a {day: n} mapping)."""
    rng = random.Random(seed)
    counts = per_day if isinstance(per_day, dict) else {
        start + timedelta(days=i): per_day for i in range((end - start).days + 1)}
    visits = [visit(day, rng.randrange(0, 12), rng.randrange(60), motif=f"{name}-{day:%d}-{i}")
              for day, n in sorted(counts.items()) for i in range(n)]
    return oscour_file(tmp_path / name, start, end if datefin else None, extract, [*visits, *extra])


def held_per_day(conn) -> dict[date, int]:
    rows = conn.execute("SELECT entree::date, count(*) FROM rpu GROUP BY 1 ORDER BY 1").fetchall()
    conn.commit()
    return dict(rows)


def motifs_per_day(conn) -> dict[date, list[str]]:
    out: dict[date, list[str]] = {}
    for day, motif in conn.execute("SELECT entree::date, motif FROM rpu ORDER BY 1, 2"):
        out.setdefault(day, []).append(motif)
    conn.commit()
    return out


# --- the order of arrival does not matter ---------------------------------------------------


def _random_night(rng: random.Random, tmp: Path, index: int, extract_hour: int) -> tuple[Path, dict]:
    """One file of a random shape: a period inside 20 days, an extraction after it (distinct
    per file), DATEFIN given or empty, a few visits dated outside the period, and for an empty
    DATEFIN a visit after midnight of the extraction day."""
    start = DAY0 + timedelta(days=rng.randrange(0, 12))
    end = start + timedelta(days=rng.randrange(0, 7))
    extract = datetime.combine(end + timedelta(days=1), time(extract_hour % 24, index))
    datefin = rng.random() < 0.6
    name = f"f{index}.xml"
    visits = []
    for offset in range((end - start).days + 1):
        day = start + timedelta(days=offset)
        visits += [visit(day, rng.randrange(0, 24), rng.randrange(60), motif=f"{name}/{day:%d}/{i}")
                   for i in range(rng.randrange(1, 4))]
    if not datefin:  # the extraction day belongs to the period: a visit just after midnight
        visits.append(visit(extract.date(), 0, 0, motif=f"{name}/{extract:%d}/late"))
    for i in range(rng.randrange(0, 2)):  # a visit dated before DATEDEBUT (selected on its exit)
        early = start - timedelta(days=rng.randrange(1, 3))
        visits.append(visit(early, 23, 10 + i, motif=f"{name}/{early:%d}/out{i}"))
    path = oscour_file(tmp / name, start, end if datefin else None, extract, visits)
    period_end = end if datefin else extract.date()
    by_day: dict[date, list[str]] = {}
    for v in visits:
        by_day.setdefault(v.entree.date(), []).append(v.motif)
    return path, {"start": start, "end": period_end, "extract": extract, "by_day": by_day}


def _reference(files: list[dict]) -> dict[date, list[str]]:
    """What the database must hold, computed day by day: for each day, the file with the latest
    EXTRACT among those whose period covers it; on a day no period covers, the latest EXTRACT
    among the files with visits that day."""
    days = {d for f in files for d in f["by_day"]} | {
        f["start"] + timedelta(days=i) for f in files for i in range((f["end"] - f["start"]).days + 1)}
    held: dict[date, list[str]] = {}
    for day in days:
        covering = [f for f in files if f["start"] <= day <= f["end"]]
        candidates = covering or [f for f in files if day in f["by_day"]]
        best = max(candidates, key=lambda f: f["extract"])
        if best["by_day"].get(day):
            held[day] = sorted(best["by_day"][day])
    return held


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**9), order=st.permutations(range(7)))
def test_any_order_of_arrival_gives_the_same_database(conn, tmp_path_factory, seed, order):
    conn.execute("TRUNCATE rpu, rpu_superseded, record_issue, file_day, held_file, received_file,"
                 " visit_timeliness RESTART IDENTITY CASCADE")
    conn.commit()
    rng = random.Random(seed)
    tmp = tmp_path_factory.mktemp("nights")
    hours = rng.sample(range(24), 7)  # distinct extraction times: no tie to break
    files = [_random_night(rng, tmp, i, hours[i]) for i in range(7)]
    for index in order:
        result = load_file(conn, files[index][0], guard=None)
        conn.commit()
        assert result.status in ("loaded", "superseded"), result.reason
        # The timeliness holds the visits rpu holds, after each file (see timeliness_forget_gone.sql).
        assert timeliness_drift(conn) == (0, 0, 0)
    assert motifs_per_day(conn) == _reference([meta for _path, meta in files])
    # The day journal agrees: one authority per day, whose count is what is held that day.
    authorities = dict(conn.execute("SELECT day, visits FROM file_day WHERE superseded_by IS NULL AND visits > 0"))
    assert authorities == held_per_day(conn)
    # A file revoked (one that rules days, or one ruled everywhere): the timeliness follows too.
    revoke_file(conn, rng.randrange(1, 8), by="oru", reason="test")
    conn.commit()
    assert timeliness_drift(conn) == (0, 0, 0)


def test_an_older_open_file_after_the_next_nights_file_keeps_its_day(conn, tmp_path):
    """The real 2009 case: 91 visits of 09/05, empty DATEFIN, extracted after midnight with 2
    visits of 10/05; the next night's file (10/05 onwards, extracted later) arrives first."""
    day, next_day = date(2009, 5, 9), date(2009, 5, 10)
    older = day_file(tmp_path, "older.xml", day, day, datetime(2009, 5, 10, 1, 30), 91, datefin=False,
                     extra=[visit(next_day, 0, 10, motif="late-1"), visit(next_day, 0, 40, motif="late-2")])
    newer = day_file(tmp_path, "newer.xml", next_day, date(2009, 5, 16), datetime(2009, 5, 17, 1, 30), 40)
    assert load_file(conn, newer).status == "loaded"
    result = load_file(conn, older)
    conn.commit()
    assert result.report.header.period_end == next_day  # DATEFIN empty: the extraction date
    assert result.status == "loaded" and result.days_applied == [day]
    assert result.loaded_records == 91 and result.not_applied_records == 2
    assert "Appliqué pour 09/05 ; le 10/05 provient du fichier « newer.xml »" in result.reason
    per_day = held_per_day(conn)
    assert per_day[day] == 91 and per_day[next_day] == 40


def test_a_week_loaded_after_the_next_week_extracted_later(conn, tmp_path):
    """01-07/03 (no DATEFIN, a visit on 08/03 at 00:20) after 08-14/03 extracted later."""
    first = day_file(tmp_path, "w1.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2, 0), 20,
                     datefin=False, extra=[visit(date(2026, 3, 8), 0, 20, motif="after-midnight")])
    second = day_file(tmp_path, "w2.xml", date(2026, 3, 8), date(2026, 3, 14), datetime(2026, 3, 15, 2, 0), 25)
    load_file(conn, second)
    result = load_file(conn, first)
    conn.commit()
    assert result.days_applied == [date(2026, 3, 1) + timedelta(days=i) for i in range(7)]
    assert held_per_day(conn) == {**{date(2026, 3, 1) + timedelta(days=i): 20 for i in range(7)},
                                  **{date(2026, 3, 8) + timedelta(days=i): 25 for i in range(7)}}


def test_period_bounds(conn, tmp_path):
    # A visit entering after the extraction: rejected (it cannot be in the extract).
    path = day_file(tmp_path, "late.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2, 0), 3,
                    datefin=False, extra=[visit(date(2026, 3, 8), 9, 0, motif="future")])
    report = inspect_file(path)
    assert report.header.period_end == date(2026, 3, 8)
    assert report.rule_counts["ENTREE_AFTER_EXTRACT"] == 1 and report.rejected_records == 1
    assert "postérieure à l'extraction" in next(f for f in report.findings if f.rule == "ENTREE_AFTER_EXTRACT").message
    # A mistyped ENTREE no longer stretches the period: it is after the extraction.
    path = day_file(tmp_path, "2062.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2, 0), 3,
                    datefin=False, extra=[visit(date(2062, 3, 8), 9, 0, motif="typo")])
    report = inspect_file(path)
    assert report.header.period_end == date(2026, 3, 8) and report.rule_counts["ENTREE_AFTER_EXTRACT"] == 1
    # A period longer than a year is refused whole (a mistyped DATEDEBUT); a year before 1990 too.
    path = day_file(tmp_path, "1909.xml", date(1909, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2, 0), {})
    assert inspect_file(path).file_findings[0].rule == "DATEDEBUT_INVALID"
    path = day_file(tmp_path, "2001.xml", date(2001, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2, 0), {})
    report = inspect_file(path)
    assert report.rejected and report.file_findings[0].rule == "PERIOD_TOO_LONG"
    result = load_file(conn, path)
    assert result.status == "rejected" and "366 jours" in result.reason


# --- the volume guard -----------------------------------------------------------------------


def test_a_zero_patient_file_is_held_then_applied_by_the_oru(conn, tmp_path, capsys):
    week = day_file(tmp_path, "week.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2, 0), 3)
    load_file(conn, week)
    conn.commit()
    empty = day_file(tmp_path, "empty.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 9, 2, 0), {})
    result = load_file(conn, empty)
    conn.commit()
    assert result.status == "held" and len(result.held_days) == 7
    assert "01/03 : 3 passages détenus, 0 dans ce fichier" in result.reason
    assert held_per_day(conn) == {date(2026, 3, 1) + timedelta(days=i): 3 for i in range(7)}  # nothing wiped
    row = conn.execute("SELECT status, reason FROM received_file WHERE id = %s", (result.received_file_id,)).fetchone()
    assert row[0] == "held" and "mis en attente" in row[1]
    conn.commit()

    # The same bytes again: a duplicate of the held file, still nothing applied.
    assert load_file(conn, empty).status == "duplicate"
    conn.commit()

    # Listed, then applied deliberately (a unit really closed), journaled with who and why.
    assert cli.main(["files", "list", "--status", "held", "--database", conn.url]) == 0
    assert f"n°{result.received_file_id}" in capsys.readouterr().out
    code = cli.main(["files", "apply", str(result.received_file_id), "--reason", "Service fermé pour travaux",
                     "--author", "oru.martin", "--database", conn.url])
    out = capsys.readouterr().out
    assert code == 0 and "chargé" in out
    assert held_per_day(conn) == {}
    row = conn.execute("SELECT status, decided_by, decided_reason, (SELECT count(*) FROM held_file) FROM received_file"
                       " WHERE id = %s", (result.received_file_id,)).fetchone()
    assert row == ("loaded", "oru.martin", "Service fermé pour travaux", 0)
    conn.commit()
    # Applying twice is refused clearly.
    assert cli.main(["files", "apply", str(result.received_file_id), "--reason", "x", "--database", conn.url]) == 1
    assert "n'est pas en attente" in capsys.readouterr().err


def test_a_sixty_percent_drop_is_held_and_thresholds_come_from_the_region(conn, tmp_path):
    load_file(conn, day_file(tmp_path, "a.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2), 10))
    drop = day_file(tmp_path, "b.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 9, 2), 4, seed=1)
    assert load_file(conn, drop).status == "held"
    # A region that accepts drops up to 70 % applies such a file.
    again = day_file(tmp_path, "b2.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 9, 3), 4, seed=5)
    result = load_file(conn, again, guard=VolumeGuard(hold_when_drop_over=0.7))
    assert result.status == "loaded" and sum(held_per_day(conn).values()) == 28
    # A smaller drop is the ordinary life of a 7-day window.
    ok = day_file(tmp_path, "c.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 10, 2), 3, seed=2)
    assert load_file(conn, ok).status == "loaded"
    from rpu.config.region import parse

    region = parse({"region": {"code": "T", "name": "T", "operator_emails": ["a@b.c"]},
                    "intake": {"hold_when_drop_over": 0.7, "hold_when_day_emptied": False}})
    assert region.volume_guard == VolumeGuard(hold_when_day_emptied=False, hold_when_drop_over=0.7)


def test_apply_held_respects_a_newer_extract_received_since(conn, tmp_path):
    load_file(conn, day_file(tmp_path, "a.xml", date(2026, 3, 1), date(2026, 3, 7), datetime(2026, 3, 8, 2), 5))
    held = load_file(conn, day_file(tmp_path, "b.xml", date(2026, 3, 1), date(2026, 3, 7),
                                    datetime(2026, 3, 9, 2), {date(2026, 3, 1): 5}))
    assert held.status == "held"
    newer = load_file(conn, day_file(tmp_path, "c.xml", date(2026, 3, 5), date(2026, 3, 7),
                                     datetime(2026, 3, 10, 2), 6))
    conn.commit()
    assert newer.status == "loaded"
    result = apply_held(conn, held.received_file_id, by="oru", reason="vérifié")
    conn.commit()
    assert result.days_applied == [date(2026, 3, 1) + timedelta(days=i) for i in range(4)]
    assert held_per_day(conn) == {date(2026, 3, 1): 5, date(2026, 3, 5): 6, date(2026, 3, 6): 6, date(2026, 3, 7): 6}


# --- extensions, outbound files -------------------------------------------------------------


EXTENDED = """<?xml version="1.0" encoding="UTF-8"?>
<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE><EXTRACT>08/03/2026 02:00:00</EXTRACT>
<DATEDEBUT>01/03/2026</DATEDEBUT><DATEFIN>07/03/2026</DATEFIN></ETABLISSEMENT><PASSAGES>
{patients}</PASSAGES></OSCOUR>
"""
PATIENT = ("<PATIENT><CP>67000</CP><COMMUNE>STRASBOURG</COMMUNE><NAISSANCE>04/07/1980</NAISSANCE><SEXE>F</SEXE>"
           "<ENTREE>0{d}/03/2026 10:00</ENTREE><MODE_ENTREE>8</MODE_ENTREE><PROVENANCE>5</PROVENANCE>"
           "<TRANSPORT>PERSO</TRANSPORT><TRANSPORT_PEC>AUCUN</TRANSPORT_PEC><MOTIF>M{d}</MOTIF>{mid}"
           "<GRAVITE>2</GRAVITE><DP>S934</DP><LISTE_DA></LISTE_DA><LISTE_ACTES></LISTE_ACTES>"
           "<SORTIE>0{d}/03/2026 12:00</SORTIE><MODE_SORTIE>{mode_sortie}</MODE_SORTIE><DESTINATION></DESTINATION>"
           "<ORIENT></ORIENT>{end}</PATIENT>\n")


def _children(data: bytes) -> list[list[str]]:
    return [[child.tag for child in patient] for patient in etree.fromstring(data).iter("PATIENT")]


def test_extensions_come_out_in_the_order_received(conn, tmp_path, capsys):
    shapes = [
        ("<HMED>01/03/2026 10:05</HMED><CIRCONSTANCE>chute</CIRCONSTANCE>", "<ORIENT_UHCD>MED</ORIENT_UHCD>"
         "<ENTREE_UHCD>01/03/2026 13:00</ENTREE_UHCD><MODE_SORTIE_UHCD>8</MODE_SORTIE_UHCD>"),
        ("<CIRCONSTANCE>rixe</CIRCONSTANCE><HMED>02/03/2026 10:01</HMED>", "<Z_LOCAL>b</Z_LOCAL><A_LOCAL>a</A_LOCAL>"),
        ("", "<HMED>03/03/2026 10:02</HMED><DESTINATION_UHCD>1</DESTINATION_UHCD>"),
    ]
    patients = "".join(PATIENT.format(d=i + 1, mid=mid, end=end, mode_sortie="8") for i, (mid, end) in enumerate(shapes))
    sent = tmp_path / "ext.xml"
    sent.write_text(EXTENDED.format(patients=patients))
    assert load_file(conn, sent).status == "loaded"
    conn.commit()
    out = tmp_path / "out.xml"
    assert cli.main(["build", "oscour", "--finess", FINESS, "--start", "2026-03-01", "--end", "2026-03-07",
                     "--database", conn.url, "--output", str(out)]) == 0
    assert _children(out.read_bytes()) == _children(sent.read_bytes())
    for got, want in zip(etree.parse(str(out)).iter("PATIENT"), etree.parse(str(sent)).iter("PATIENT"), strict=True):
        assert [(c.tag, c.text or "") for c in got if c.tag not in ("LISTE_DA", "LISTE_ACTES")] == \
               [(c.tag, c.text or "") for c in want if c.tag not in ("LISTE_DA", "LISTE_ACTES")]


def test_an_extension_out_of_place_is_flagged_and_carried_after_orient(conn, tmp_path):
    patient = PATIENT.format(d=1, mid="", end="", mode_sortie="8").replace("<DP>S934</DP>", "<DP>S934</DP><X>1</X>")
    sent = tmp_path / "odd.xml"
    sent.write_text(EXTENDED.format(patients=patient))
    result = load_file(conn, sent)
    conn.commit()
    assert result.report.rule_counts["EXTENSION_MOVED"] == 1
    out = tmp_path / "out.xml"
    build_oscour(conn, FINESS, 0, date(2026, 3, 1), date(2026, 3, 7), out)
    assert _children(out.read_bytes())[0][-1] == "X"


def test_every_producer_variant_comes_out_schema_valid(conn, tmp_path):
    from rpu.sandbox.generator import VARIANTS, write_oscour_file

    for i, variant in enumerate(VARIANTS):
        path = tmp_path / f"{variant}.xml"
        write_oscour_file(path, FINESS, i, date(2026, 3, 1), date(2026, 3, 7), visits_per_day=5, seed=i,
                          variant=variant, extract=datetime(2026, 3, 8, 3))
        assert load_file(conn, path).status == "loaded", variant
        out = tmp_path / f"{variant}.out.xml"
        count = build_oscour(conn, FINESS, i, date(2026, 3, 1), date(2026, 3, 7), out)
        assert schemas.check(out, schemas.OSCOUR) == count > 0


def test_syrius_refuses_an_empty_month_and_never_writes_an_invalid_integer(conn, tmp_path, capsys):
    codegeo_csv = tmp_path / "codegeo.csv"
    codegeo_csv.write_text("cp;codegeo\n67000;67482\n")
    out = tmp_path / "empty.zip"
    code = cli.main(["build", "syrius", "--finess", FINESS, "--year", "2026", "--month", "3", "--codegeo",
                     str(codegeo_csv), "--database", conn.url, "--output", str(out)])
    assert code == 1 and "sans PATIENT" in capsys.readouterr().err and not out.exists()
    # The writer itself never leaves a file without PATIENT behind.
    with pytest.raises(schemas.InvalidOutput, match="PATIENT"):
        write_syrius_zip(out, Header("SYRIUS", FINESS, 0, datetime(2026, 4, 1), date(2026, 1, 1),
                                     date(2026, 3, 31)), [], CodegeoTable(), datetime(2026, 4, 1))
    assert not out.exists() and list(tmp_path.glob(".syrius-*")) == []

    # A 12-digit MODE_SORTIE (a misaligned export) is kept in the database, flagged, and written 0.
    patient = PATIENT.format(d=2, mid="", end="", mode_sortie="999999999999")
    sent = tmp_path / "huge.xml"
    sent.write_text(EXTENDED.format(patients=patient))
    assert load_file(conn, sent).status == "loaded"
    conn.commit()
    _entry, count, _ = build_syrius(conn, FINESS, 0, 2026, 3, CodegeoTable.load(codegeo_csv), out)
    assert count == 1 and schemas.check_syrius_zip(out) == 1
    with zipfile.ZipFile(out) as archive:
        data = archive.read(archive.namelist()[0])
    assert b"<MODE_SORTIE>0</MODE_SORTIE>" in data and b"999999999999" not in data
    assert conn.execute("SELECT mode_sortie FROM rpu").fetchone()[0] == "999999999999"


def test_the_schemas_refuse_what_the_platforms_refuse():
    head = header_xml("OSCOUR", Header("OSCOUR", FINESS, 0, datetime(2026, 3, 8, 2), date(2026, 3, 1),
                                       date(2026, 3, 7)))
    good = io.BytesIO()
    write_oscour(good, Header("OSCOUR", FINESS, 0, datetime(2026, 3, 8, 2), date(2026, 3, 1), date(2026, 3, 7)),
                 [visit(date(2026, 3, 1), 10, 0)])
    assert schemas.check(io.BytesIO(good.getvalue()), schemas.OSCOUR) == 1
    misplaced = good.getvalue().replace(b"<GRAVITE>", b"<X>1</X><GRAVITE>")
    with pytest.raises(schemas.InvalidOutput, match="X"):
        schemas.check(io.BytesIO(misplaced), schemas.OSCOUR)
    no_entree = (head + "<PASSAGES><PATIENT><CP/></PATIENT></PASSAGES></OSCOUR>").encode()
    with pytest.raises(schemas.InvalidOutput):
        schemas.check(io.BytesIO(no_entree), schemas.OSCOUR)
