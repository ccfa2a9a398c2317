"""The loader and the schema, against a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from rpu.formats.model import Visit
from rpu.formats.validation import inspect_file
from rpu.sandbox.defects import RECORD_DEFECTS
from rpu.sandbox.generator import demo_establishments, write_oscour_file
from rpu.store import db as store
from rpu.store.loader import load_file

REPO = Path(__file__).resolve().parent.parent
FINESS = demo_establishments(2)[1]["finess"]


@pytest.fixture
def conn(fresh_database_url):
    url = fresh_database_url()
    with psycopg.connect(url) as connection:
        connection.autocommit = True
        store.migrate(connection)
        connection.autocommit = False
        connection.info_url = url  # for the tests that start a second process
        yield connection


def _counts(conn) -> dict:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM rpu), (SELECT count(*) FROM received_file),"
        " (SELECT count(*) FROM record_issue), (SELECT coalesce(sum(hashtext(r::text)), 0) FROM rpu r)"
    ).fetchone()
    conn.commit()
    return {"rpu": row[0], "files": row[1], "issues": row[2], "checksum": row[3]}


def _visits_per_day(conn) -> dict:
    rows = conn.execute("SELECT entree::date, count(*) FROM rpu GROUP BY 1 ORDER BY 1").fetchall()
    conn.commit()
    return dict(rows)


def test_migrate_is_idempotent_and_refuses_a_newer_database(conn):
    assert store.migrate(conn) == []
    version = store.schema_version(conn)
    assert version == max(m.version for m in store.known_migrations())
    conn.execute("UPDATE schema_migration SET checksum = %s WHERE version = 1", ("f" * 64,))
    conn.commit()
    with pytest.raises(store.StoreError, match="modifiée après son application"):
        store.migrate(conn)
    conn.rollback()
    conn.execute("INSERT INTO schema_migration (version, name, checksum) VALUES (999, 'future', %s)", ("0" * 64,))
    conn.commit()
    with pytest.raises(store.StoreError, match="plus récent"):
        store.migrate(conn)


def test_a_file_replaces_its_establishment_and_period_only(conn, tmp_path):
    first = tmp_path / "first.xml"
    write_oscour_file(first, FINESS, 0, date(2026, 11, 10), date(2026, 11, 16), visits_per_day=50, seed=1)
    result = load_file(conn, first, sender="test")
    assert result.status == "loaded" and result.loaded_records == result.report.records
    before = _visits_per_day(conn)

    # The next night: the last 7 days again (11-17), with different visits.
    second = tmp_path / "second.xml"
    write_oscour_file(second, FINESS, 0, date(2026, 11, 11), date(2026, 11, 17), visits_per_day=40, seed=2,
                      extract=datetime(2026, 11, 18, 2, 30))
    result = load_file(conn, second, sender="test")
    assert result.status == "loaded"
    after = _visits_per_day(conn)
    assert after[date(2026, 11, 10)] == before[date(2026, 11, 10)]  # outside the new period: kept
    assert result.replaced_records == sum(n for day, n in before.items() if day >= date(2026, 11, 11))
    new_days = {day: n for day, n in after.items() if day >= date(2026, 11, 11)}
    assert sum(new_days.values()) == result.loaded_records  # nothing doubled
    journal = conn.execute("SELECT status, loaded_records, period_start, period_end FROM received_file"
                           " ORDER BY id").fetchall()
    assert [row[0] for row in journal] == ["loaded", "loaded"]
    assert journal[1][2:] == (date(2026, 11, 11), date(2026, 11, 17))


def test_the_same_bytes_twice_change_nothing(conn, tmp_path):
    path = tmp_path / "f.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 11, 10), date(2026, 11, 16), visits_per_day=30, seed=1)
    load_file(conn, path)
    conn.commit()
    before = _counts(conn)
    result = load_file(conn, path)
    conn.commit()
    assert result.status == "duplicate" and "identique" in result.reason
    after = _counts(conn)
    assert after["files"] == before["files"] + 1  # only the journal row
    assert (after["rpu"], after["checksum"], after["issues"]) == (before["rpu"], before["checksum"], before["issues"])


def test_an_older_extract_never_overwrites_newer_data(conn, tmp_path):
    newer, older, oldest = tmp_path / "newer.xml", tmp_path / "older.xml", tmp_path / "oldest.xml"
    write_oscour_file(newer, FINESS, 0, date(2026, 11, 10), date(2026, 11, 16), visits_per_day=30, seed=1,
                      extract=datetime(2026, 11, 17, 3, 0))
    write_oscour_file(older, FINESS, 0, date(2026, 11, 9), date(2026, 11, 15), visits_per_day=40, seed=2,
                      extract=datetime(2026, 11, 16, 3, 0))
    write_oscour_file(oldest, FINESS, 0, date(2026, 11, 10), date(2026, 11, 14), visits_per_day=40, seed=3,
                      extract=datetime(2026, 11, 15, 3, 0))
    assert load_file(conn, newer).status == "loaded"
    conn.commit()
    newer_days = _visits_per_day(conn)
    result = load_file(conn, older)
    conn.commit()
    # The newer extract keeps 10-15; the day only the older file holds (09/11) is loaded.
    assert result.status == "loaded" and result.days_applied == [date(2026, 11, 9)]
    assert "Appliqué pour 09/11" in result.reason and "10/11–15/11 proviennent du fichier « newer.xml »" in result.reason
    after = _visits_per_day(conn)
    assert {d: n for d, n in after.items() if d >= date(2026, 11, 10)} == newer_days
    assert after[date(2026, 11, 9)] == result.loaded_records > 0

    before = _counts(conn)
    result = load_file(conn, oldest)
    conn.commit()
    assert result.status == "superseded" and result.same_as is not None and result.loaded_records == 0
    after = _counts(conn)
    assert (after["rpu"], after["checksum"]) == (before["rpu"], before["checksum"])
    status = conn.execute("SELECT status, same_as FROM received_file WHERE id = %s",
                          (result.received_file_id,)).fetchone()
    assert status == ("superseded", result.same_as)


def test_a_rejected_file_is_journaled_with_its_reason_and_changes_nothing_else(conn, tmp_path):
    path = tmp_path / "bad.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 11, 10), date(2026, 11, 16), visits_per_day=30, seed=1,
                      defects=["TRUNCATED"])
    result = load_file(conn, path)
    conn.commit()
    assert result.status == "rejected"
    row = conn.execute("SELECT status, rule, reason FROM received_file").fetchone()
    assert row[0:2] == ("rejected", "TRUNCATED") and "tronqué" in row[2]
    assert conn.execute("SELECT count(*) FROM rpu").fetchone()[0] == 0
    issue = conn.execute("SELECT rule, level, record_no FROM record_issue").fetchone()
    assert issue == ("TRUNCATED", "file", None)


def test_rejected_and_flagged_visits_are_journaled_as_issues(conn, tmp_path):
    path = tmp_path / "flags.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 11, 10), date(2026, 11, 16), visits_per_day=30, seed=1,
                      defects=["ENTREE_MISSING", "VALUE_NOT_IN_SET", "STAY_TOO_LONG"])
    result = load_file(conn, path)
    conn.commit()
    assert result.status == "loaded"
    assert result.loaded_records == result.report.records - 1
    issues = conn.execute("SELECT rule, level, field, record_no, message FROM record_issue ORDER BY record_no").fetchall()
    assert {(i[0], i[1]) for i in issues} == {("ENTREE_MISSING", "record"), ("VALUE_NOT_IN_SET", "flag"),
                                               ("STAY_TOO_LONG", "flag")}
    assert all(i[3] is not None and i[4].startswith("Passage n°") for i in issues)
    flagged = conn.execute("SELECT flags FROM rpu WHERE cardinality(flags) > 0 ORDER BY record_no").fetchall()
    assert sorted(f[0][0] for f in flagged) == ["STAY_TOO_LONG", "VALUE_NOT_IN_SET"]


def test_a_crash_mid_file_leaves_the_database_exactly_as_before(conn, tmp_path):
    """A real crash: the loading process is killed (SIGKILL) while its COPY is under way."""
    first = tmp_path / "first.xml"
    write_oscour_file(first, FINESS, 0, date(2026, 11, 1), date(2026, 11, 7), visits_per_day=50, seed=1)
    load_file(conn, first)
    conn.commit()
    before = _counts(conn)

    big = tmp_path / "big.xml"
    write_oscour_file(big, FINESS, 0, date(2026, 11, 1), date(2026, 11, 7), visits_per_day=40_000, seed=2,
                      extract=datetime(2026, 11, 8, 4, 0))
    env = dict(os.environ, PYTHONPATH=str(REPO / "plugins"))
    process = subprocess.Popen([sys.executable, "-m", "rpu", "load", str(big), "--database", conn.info_url],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until its COPY is running
            copying = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY rpu%%'"
                                   " AND datname = current_database()").fetchone()[0]
            conn.commit()
            if copying:
                break
            assert process.poll() is None, "the load ended before it could be interrupted"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the file
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    # PostgreSQL notices the dead client and rolls its transaction back.
    deadline = time.monotonic() + 30
    while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'COPY rpu%%'"
                       " AND datname = current_database() AND state <> 'idle'").fetchone()[0]:
        conn.commit()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    conn.commit()
    assert _counts(conn) == before
    # And the next attempt loads it whole.
    assert load_file(conn, big).status == "loaded"


def test_any_value_received_is_stored_intact(conn, tmp_path):
    """Odd characters in codes and free text survive COPY and the array literals unchanged."""
    odd_da, odd_acte = 'X"1\\2,{3} NULL', "ab\tc"
    path = tmp_path / "odd.xml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE>'
        "<EXTRACT>02/11/2026 02:30:00</EXTRACT><DATEDEBUT>26/10/2026</DATEDEBUT><DATEFIN>01/11/2026</DATEFIN>"
        "</ETABLISSEMENT><PASSAGES><PATIENT><COMMUNE>L'ÎLE \\ &amp; &lt;SUD&gt;</COMMUNE>"
        "<ENTREE>27/10/2026 10:05</ENTREE><MOTIF>chute\\n dans l'escalier</MOTIF>"
        f"<LISTE_DA><DA>{odd_da.replace('&', '&amp;')}</DA><DA>J069</DA></LISTE_DA>"
        f"<LISTE_ACTES><ACTE>{odd_acte}</ACTE></LISTE_ACTES></PATIENT></PASSAGES></OSCOUR>",
        encoding="utf-8")
    assert load_file(conn, path).status == "loaded"
    row = conn.execute("SELECT commune, motif, da, actes, flags FROM rpu").fetchone()
    assert row[0] == "L'ÎLE \\ & <SUD>"
    assert row[1] == "chute\\n dans l'escalier"
    assert row[2] == [odd_da.upper(), "J069"]
    assert row[3] == [odd_acte.strip().upper()]
    assert row[4] == ["FORMAT_INVALID"]


def test_odd_values_among_hundreds_of_visits_are_stored_intact(conn, tmp_path):
    """Visits are copied by batches of rows: a batch holding one odd value is escaped row by
    row, and every other row of it, and of the batches around it, arrives unchanged."""
    odd = {7: "A\\B", 260: "tab\there", 261: "cr\rlf", 400: 'quote " and {braces}'}

    def patient(number: int) -> str:
        motif, da = (odd.get(number, default).replace("\r", "&#13;") for default in (f"MOTIF{number}", "J069"))
        return (f"<PATIENT><COMMUNE>VILLE {number}</COMMUNE><ENTREE>{1 + number % 7:02d}/11/2026 "
                f"{number % 24:02d}:{number % 60:02d}</ENTREE><MOTIF>{motif}</MOTIF>"
                f"<LISTE_DA><DA>{da}</DA></LISTE_DA></PATIENT>")

    path = tmp_path / "many.xml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE>'
        "<EXTRACT>08/11/2026 02:30:00</EXTRACT><DATEDEBUT>01/11/2026</DATEDEBUT><DATEFIN>07/11/2026</DATEFIN>"
        "</ETABLISSEMENT><PASSAGES>" + "".join(patient(n) for n in range(1, 601)) + "</PASSAGES></OSCOUR>",
        encoding="utf-8")
    assert load_file(conn, path).status == "loaded"
    rows = {record_no: (commune, motif, da, entree) for record_no, commune, motif, da, entree in conn.execute(
        "SELECT record_no, commune, motif, da, entree FROM rpu")}
    assert len(rows) == 600
    for number in range(1, 601):
        commune, motif, da, entree = rows[number]
        assert commune == f"VILLE {number}"
        # MOTIF is free text, its runs of whitespace made one space; DA is a code, upper case.
        assert motif == " ".join(odd.get(number, f"MOTIF{number}").split())
        assert da == [odd.get(number, "J069").strip().upper()]
        assert entree == datetime(2026, 11, 1 + number % 7, number % 24, number % 60)


def test_the_rows_loaded_are_the_visits_validated_field_by_field(conn, tmp_path):
    """The loader copies each kept visit's fields without building a Visit: every column of
    every row equals the field of the Visit that validation gives for the same PATIENT."""
    path = tmp_path / "night.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 11, 1), date(2026, 11, 7), visits_per_day=60,
                      extract=datetime(2026, 11, 8, 3), seed=5, defects=RECORD_DEFECTS)
    visits = []
    inspect_file(path, on_visit=lambda visit, header: visits.append(visit))
    assert load_file(conn, path).status == "loaded"
    names = [f.name for f in dataclasses.fields(Visit)]
    columns = ["record_no" if name == "position" else name for name in names]
    select = sql.SQL("SELECT {} FROM rpu").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    loaded = {row[0]: row for row in conn.execute(select)}
    assert len(loaded) == len(visits) > 300
    assert any(visit.flags for visit in visits) and any(visit.da for visit in visits)
    for visit in visits:
        # No extension is stored as NULL.
        expected = tuple(None if name == "extensions" and not visit.extensions else getattr(visit, name)
                         for name in names)
        assert loaded[visit.position] == expected, visit.position


def test_visits_outside_the_period_are_never_counted_twice(conn, tmp_path):
    """A visit dated before DATEDEBUT (a producer selecting by exit time) comes back every night."""
    def night(name, start, end, extract_day, **kwargs):
        path = tmp_path / name
        write_oscour_file(path, FINESS, 0, start, end, visits_per_day=20, extract=datetime(2026, 11, extract_day, 3),
                          **kwargs)
        return load_file(conn, path)

    first = night("a.xml", date(2026, 11, 10), date(2026, 11, 16), 17, seed=1, defects=["ENTREE_OUTSIDE_PERIOD"])
    again = night("b.xml", date(2026, 11, 10), date(2026, 11, 16), 18, seed=2, defects=["ENTREE_OUTSIDE_PERIOD"])
    assert first.status == again.status == "loaded"
    day = date(2026, 11, 7)  # the generator dates that visit three days before DATEDEBUT
    assert _visits_per_day(conn)[day] == 1  # replaced, not added

    # A file whose period covers that day is the authority for it...
    covering = night("c.xml", date(2026, 11, 4), date(2026, 11, 9), 19, seed=3)
    per_day = _visits_per_day(conn)
    assert covering.status == "loaded"
    covered = per_day[day]
    # ...and a later file's out-of-period visit on that day is journaled, not loaded.
    later = night("d.xml", date(2026, 11, 10), date(2026, 11, 16), 20, seed=4, defects=["ENTREE_OUTSIDE_PERIOD"])
    assert later.not_applied_records == 1
    assert later.loaded_records == later.report.kept_records - 1
    assert _visits_per_day(conn)[day] == covered
    row = conn.execute("SELECT loaded_records FROM received_file WHERE id = %s", (later.received_file_id,)).fetchone()
    assert row[0] == later.loaded_records
