"""Hostile and broken input: every file gets a verdict, no parse blows up, no load waits forever,
a wrong file can be taken back. Reader and validator fuzzed with Hypothesis; loads against a
real PostgreSQL."""

from __future__ import annotations

import io
import os
import random
import threading
import time
from datetime import date, datetime, timedelta

import psycopg
import pytest
from conftest import migrated, migrated_database
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpu.formats.validation import inspect_file
from rpu.sandbox.generator import write_oscour_file
from rpu.store.loader import Busy, Limits, load_file, revoke_file

FINESS = "670780691"
HEAD = (b'<?xml version="1.0"?><OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE>'
        b'<EXTRACT>08/03/2026 02:00:00</EXTRACT><DATEDEBUT>01/03/2026</DATEDEBUT><DATEFIN>07/03/2026</DATEFIN>'
        b'</ETABLISSEMENT>')
PATIENT = b"<PATIENT><ENTREE>0%d/03/2026 10:00</ENTREE><MOTIF>x</MOTIF></PATIENT>"
FUZZ_EXAMPLES = int(os.environ.get("RPU_FUZZ_EXAMPLES", "150"))


@pytest.fixture(scope="module")
def seed_file(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("seed") / "seed.xml"
    write_oscour_file(path, FINESS, 0, date(2026, 3, 1), date(2026, 3, 3), visits_per_day=4, seed=3,
                      variant="extensions", extract=datetime(2026, 3, 4, 2))
    return path.read_bytes()


@pytest.fixture
def conn(fresh_database_url):
    url = migrated(fresh_database_url())
    with psycopg.connect(url) as connection:
        connection.url = url
        yield connection


def verdict(data: bytes):
    return inspect_file(io.BytesIO(data), "f.xml", received_at=datetime(2026, 12, 1))


def rules(data: bytes) -> set[str]:
    return {f.rule for f in verdict(data).file_findings}


# --- the reader ------------------------------------------------------------------------------


def test_records_spelt_otherwise_reject_the_file_with_the_count():
    data = HEAD + b"<PASSAGES>" + PATIENT % 1 + b"<Patient><ENTREE>01/03/2026 10:00</ENTREE></Patient>" * 999 \
        + b"</PASSAGES></OSCOUR>"
    report = verdict(data)
    assert report.rejected and report.file_findings[0].rule == "UNKNOWN_ELEMENT"
    assert "999 éléments inconnus" in report.file_findings[0].message
    # One alone, anywhere a PATIENT may stand, is enough.
    for misplaced in (b"<PASSAGES>" + PATIENT % 1 + b"<PASSAGE/>" + PATIENT % 2 + b"</PASSAGES></OSCOUR>",
                      PATIENT % 1 + b"<patient/></OSCOUR>",
                      b"<PASSAGES>" + PATIENT % 1 + b"</PASSAGES><RPU/></OSCOUR>"):
        assert rules(HEAD + misplaced) == {"UNKNOWN_ELEMENT"}, misplaced


def test_empty_passages_are_released_as_read():
    """8.8 MB of <PASSAGES/> once took 64 s: each chunk scanned every element kept so far. They
    are now released as they end, so the tree stays small and the parse linear in the size."""
    from rpu.formats.oscour import OscourReader

    reader = OscourReader(io.BytesIO(HEAD + b"<PASSAGES/>" * 400_000 + b"</OSCOUR>"))
    assert list(reader) == []
    assert len(reader._tree_root) <= 2  # the last PASSAGES and nothing else


def test_namespaces_huge_values_odd_orders_and_impossible_dates_get_a_verdict():
    ns = HEAD.replace(b"<OSCOUR>", b'<OSCOUR xmlns:x="urn:x">') + b"<PASSAGES>" + \
        PATIENT.replace(b"<MOTIF>", b"<x:HMED>1</x:HMED><MOTIF>") % 1 + b"</PASSAGES></OSCOUR>"
    assert rules(ns) == {"NAMESPACE_FORBIDDEN"}
    huge = HEAD + b"<PASSAGES>" + PATIENT.replace(b"<MOTIF>x", b"<MOTIF>" + b"a" * (11 << 20)) % 1 \
        + b"</PASSAGES></OSCOUR>"
    assert rules(huge) == {"VALUE_TOO_LARGE"}
    assert rules(HEAD.replace(b"<ORDRE>0", "<ORDRE>²".encode()) + b"</OSCOUR>") == {"ORDRE_INVALID"}
    year_9999 = HEAD.replace(b"01/03/2026</DATEDEBUT><DATEFIN>07/03/2026", b"25/12/9999</DATEDEBUT><DATEFIN>31/12/9999")
    assert rules(year_9999 + b"</OSCOUR>") == {"DATEDEBUT_INVALID", "DATEFIN_INVALID"}
    future = HEAD.replace(b"08/03/2026 02:00:00", b"08/03/2062 02:00:00")
    report = verdict(future + b"</OSCOUR>")
    assert [f.rule for f in report.file_findings] == ["EXTRACT_IN_FUTURE"]
    assert "reçu le 01/12/2026" in report.file_findings[0].message


MUTATIONS = ("flip", "truncate", "delete", "duplicate", "rename", "namespace", "huge", "encoding", "bom", "crlf",
             "doctype", "entity", "lowercase_root")


def mutate(data: bytes, kind: str, rnd: random.Random) -> bytes:
    if kind == "flip":
        buf = bytearray(data)
        for _ in range(rnd.randint(1, 8)):
            buf[rnd.randrange(len(buf))] ^= 1 << rnd.randrange(8)
        return bytes(buf)
    if kind == "truncate":
        return data[:rnd.randrange(len(data))]
    tags = [t for t in (b"PATIENT", b"ENTREE", b"FINESS", b"PASSAGES", b"ETABLISSEMENT", b"DATEFIN", b"HMED",
                        b"LISTE_DA", b"DA", b"EXTRACT", b"ORDRE") if b"<" + t + b">" in data]
    if not tags:
        return data
    tag = rnd.choice(tags)
    start = data.find(b"<" + tag + b">")
    end = data.find(b"</" + tag + b">", start)
    element = data[start:end + len(tag) + 3] if end > 0 else b""
    if kind == "delete":
        return data.replace(element, b"", 1)
    if kind == "duplicate":
        return data.replace(element, element * rnd.randint(2, 50), 1)
    if kind == "rename":
        new = rnd.choice([tag.lower(), tag.title(), b"X" + tag, b"PASSAGE"])
        return data.replace(b"<" + tag + b">", b"<" + new + b">", 1).replace(b"</" + tag + b">", b"</" + new + b">", 1)
    if kind == "namespace":
        return data.replace(b"<" + tag + b">", b'<n:' + tag + b' xmlns:n="urn:n">', 1).replace(
            b"</" + tag + b">", b"</n:" + tag + b">", 1)
    if kind == "huge":
        return data.replace(b"<" + tag + b">", b"<" + tag + b">" + b"9" * rnd.choice([100, 100_000, 2_000_000]), 1)
    if kind == "encoding":
        return data.replace(b'encoding="UTF-8"', rnd.choice([b'encoding="ISO-8859-1"', b'encoding="UTF-16"',
                                                           b'encoding="nope"']), 1)
    if kind == "bom":
        return rnd.choice([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]) + data
    if kind == "crlf":
        return data.replace(b"\n", b"\r\n").replace(b"><", b">\r\n<", rnd.randint(1, 50))
    if kind == "doctype":
        return data.replace(b"<OSCOUR>", b'<!DOCTYPE OSCOUR [<!ENTITY e "x">]><OSCOUR>', 1)
    if kind == "entity":
        return data.replace(b"<" + tag + b">", b"<" + tag + b">&e;&amp;&#0;&#x1F600;", 1)
    return data.replace(b"<OSCOUR>", b"<oscour>", 1).replace(b"</OSCOUR>", b"</oscour>", 1)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3), seed=st.integers(0, 2**32))
def test_fuzzed_files_always_get_a_verdict(seed_file, kinds, seed):
    rnd = random.Random(seed)
    data = seed_file
    for kind in kinds:
        data = mutate(data, kind, rnd)
    report = verdict(data)  # never raises
    assert report.status in ("accepted", "rejected")
    if report.rejected:
        assert report.file_findings and all(f.message for f in report.file_findings)
    else:
        assert report.header is not None and report.header.period_end is not None
        assert report.kept_records + report.rejected_records == report.records


@settings(max_examples=max(10, FUZZ_EXAMPLES // 10), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=2), seed=st.integers(0, 2**32))
def test_validate_and_load_agree(module_conn, tmp_path_factory, seed_file, kinds, seed):
    rnd = random.Random(seed)
    data = seed_file
    for kind in kinds:
        data = mutate(data, kind, rnd)
    path = tmp_path_factory.mktemp("fuzz") / "f.xml"
    path.write_bytes(data)
    report = inspect_file(path, received_at=datetime(2026, 12, 1))
    result = load_file(module_conn, path, received_at=datetime(2026, 12, 1), guard=None)
    module_conn.commit()
    if result.status != "duplicate":
        assert (result.status == "rejected") == report.rejected, (kinds, result.reason)
        assert result.error is None, result.error


@pytest.fixture(scope="module")
def module_conn(pg_admin_url):
    with migrated_database(pg_admin_url, "rpu_test_fuzz_") as url, psycopg.connect(url) as connection:
        yield connection


# --- the loader ------------------------------------------------------------------------------


def _week(tmp_path, name, extract_day, per_day=5, seed=1):
    path = tmp_path / name
    write_oscour_file(path, FINESS, 0, date(2026, 3, 1), date(2026, 3, 7), visits_per_day=per_day, seed=seed,
                      extract=datetime(2026, 3, extract_day, 2))
    return path


def test_an_unexpected_error_is_a_verdict_and_keeps_nothing(conn, tmp_path, monkeypatch):
    from rpu.formats import validation

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug")

    # Every file's header is checked (a clean visit's checks may be the compiled ones).
    monkeypatch.setattr(validation, "check_header", broken)
    result = load_file(conn, _week(tmp_path, "a.xml", 8))
    conn.commit()
    assert result.status == "rejected" and "ZeroDivisionError" in result.error
    assert "erreur technique" in result.reason.lower() and "a bug" not in result.reason
    assert conn.execute("SELECT count(*) FROM rpu").fetchone()[0] == 0
    row = conn.execute("SELECT status, rule FROM received_file").fetchone()
    assert row == ("rejected", None) or row[0] == "rejected"


def test_a_duplicate_says_what_changed_since(conn, tmp_path):
    first = _week(tmp_path, "a.xml", 8)
    load_file(conn, first)
    load_file(conn, _week(tmp_path, "b.xml", 9, seed=2))
    again = load_file(conn, first)
    conn.commit()
    assert again.status == "duplicate"
    assert "01/03–07/03 proviennent du fichier « b.xml »" in again.reason and "diffère" in again.reason


def test_identical_uploads_at_once_are_loaded_once(conn, tmp_path):
    path = _week(tmp_path, "a.xml", 8, per_day=200)
    statuses = []

    def load():
        with psycopg.connect(conn.url) as other:
            statuses.append(load_file(other, path).status)
            other.commit()

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == ["duplicate", "duplicate", "loaded"]


def test_a_load_never_waits_forever_on_its_establishment(conn, tmp_path):
    load_file(conn, _week(tmp_path, "a.xml", 8))
    conn.commit()
    with psycopg.connect(conn.url) as holder:  # another load of the same establishment, stuck
        holder.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{FINESS}/0",))
        started = time.monotonic()
        with pytest.raises(Busy, match="réessay|repris"):
            load_file(conn, _week(tmp_path, "b.xml", 9, seed=2), limits=Limits(lock_seconds=1))
        assert time.monotonic() - started < 10
        holder.rollback()
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM received_file").fetchone()[0] == 1  # nothing journaled
    conn.commit()


def test_revoking_a_wrong_file_gives_each_day_back_to_the_next_file(conn, tmp_path, capsys):
    from rpu.cli import main as cli

    first = load_file(conn, _week(tmp_path, "a.xml", 8, per_day=6))
    conn.commit()
    before = dict(conn.execute("SELECT entree::date, count(*) FROM rpu GROUP BY 1"))
    wrong = load_file(conn, _week(tmp_path, "wrong.xml", 9, per_day=5, seed=9))
    conn.commit()
    assert wrong.status == "loaded"
    assert cli.main(["files", "revoke", str(wrong.received_file_id), "--reason", "fichier d'une autre unité",
                     "--author", "oru", "--database", conn.url]) == 0
    out = capsys.readouterr().out
    assert f"de nouveau fourni par le fichier n°{first.received_file_id}" in out
    after = dict(conn.execute("SELECT entree::date, count(*) FROM rpu GROUP BY 1"))
    assert after == before
    assert conn.execute("SELECT status, decided_by FROM received_file WHERE id = %s",
                        (wrong.received_file_id,)).fetchone() == ("revoked", "oru")
    conn.commit()
    # A later file ranks as usual against what is restored.
    newer = load_file(conn, _week(tmp_path, "c.xml", 10, per_day=6, seed=3))
    assert newer.status == "loaded" and len(newer.days_applied) == 7
    revocation = revoke_file(conn, newer.received_file_id, by="oru", reason="test")
    assert set(revocation.restored.values()) == {first.received_file_id} and not revocation.incomplete
    assert (date(2026, 3, 1) + timedelta(days=6)) in revocation.days


def test_rpu_validate_gives_a_json_verdict_for_every_input_and_exit_3_on_a_crash(tmp_path, capsys, monkeypatch):
    import json

    from rpu.cli import main as cli
    from rpu.store import copy_in

    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    write_oscour_file(good, FINESS, 0, date(2026, 3, 1), date(2026, 3, 3), visits_per_day=3,
                      extract=datetime(2026, 3, 4, 2))
    bad.write_bytes(HEAD + b"<PASSAGES>" + PATIENT % 1 + b"<Patient/></PASSAGES></OSCOUR>")
    assert cli.main(["validate", "--json", str(good), str(bad)]) == 1  # 1: a file rejected
    verdicts = json.loads(capsys.readouterr().out)
    assert [v["status"] for v in verdicts] == ["accepted", "rejected"]

    real = copy_in.validate_file

    def crashing(path):
        if path.name == "bad.xml":
            raise RecursionError("a bug of ours")
        return real(path)

    monkeypatch.setattr(copy_in, "validate_file", crashing)
    assert cli.main(["validate", "--json", str(good), str(bad)]) == 3  # 3: our crash, not a rejection
    verdicts = json.loads(capsys.readouterr().out)
    assert verdicts[0]["status"] == "accepted" and verdicts[1] == {"file": str(bad), "status": "error",
                                                                   "error": "RecursionError"}
