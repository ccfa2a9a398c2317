"""Timeliness: exit → first reception, reception → delivery to Santé publique France, stored at
load and at send. Real PostgreSQL, real SFTP server for the delivery, visits with known delays."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from conftest import timeliness_drift, write_region_file
from lxml import html as lxml_html

from rpu.config import region as region_config
from rpu.flows import ars_export, establishment_report, invs
from rpu.flows.templating import fr_hours
from rpu.sandbox import generator
from rpu.store import registry, sends, timeliness
from rpu.store.loader import load_file, revoke_file

TZ = "Europe/Paris"
LIVE, PARALLEL = generator.demo_establishments(2, seed=11)


@pytest.fixture
def region(tmp_path, conn) -> region_config.Region:
    region = write_region_file(
        tmp_path,
        establishments=[{"finess": LIVE["finess"], "ordre": 0, "name": LIVE["name"], "status": "live"},
                        {"finess": PARALLEL["finess"], "ordre": 0, "name": PARALLEL["name"], "status": "parallel"}],
        paths={"exports_dir": str(tmp_path / "exports")})
    registry.sync(conn, region, author="test")
    return region


def _t(moment: datetime) -> str:
    return f"{moment:%d/%m/%Y %H:%M}"


def oscour(path, finess: str, extract: datetime, visits: list[tuple[datetime, datetime | None, str]]) -> str:
    """A small OSCOUR file: (ENTREE, SORTIE or None, NAISSANCE dd/mm/yyyy) per visit."""
    start = min(v[0] for v in visits).date()
    patients = "".join(
        f"<PATIENT><CP>67000</CP><COMMUNE>STRASBOURG</COMMUNE><NAISSANCE>{born}</NAISSANCE><SEXE>F</SEXE>"
        f"<ENTREE>{_t(entree)}</ENTREE><MODE_ENTREE>8</MODE_ENTREE><PROVENANCE>5</PROVENANCE>"
        f"<TRANSPORT>PERSO</TRANSPORT><TRANSPORT_PEC>AUCUN</TRANSPORT_PEC><MOTIF>GASTRO04</MOTIF>"
        f"<GRAVITE>2</GRAVITE><DP>R104</DP><LISTE_DA></LISTE_DA><LISTE_ACTES></LISTE_ACTES>"
        f"<SORTIE>{_t(sortie) if sortie else ''}</SORTIE><MODE_SORTIE>8</MODE_SORTIE><DESTINATION></DESTINATION>"
        f"<ORIENT></ORIENT></PATIENT>"
        for entree, sortie, born in visits)
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><OSCOUR><ETABLISSEMENT>'
        f"<FINESS>{finess}</FINESS><ORDRE>0</ORDRE><EXTRACT>{extract:%d/%m/%Y %H:%M:%S}</EXTRACT>"
        f"<DATEDEBUT>{start:%d/%m/%Y}</DATEDEBUT><DATEFIN>{extract:%d/%m/%Y}</DATEFIN></ETABLISSEMENT>"
        f"<PASSAGES>{patients}</PASSAGES></OSCOUR>", encoding="utf-8")
    return path


def _load(conn, path, finess: str) -> int:
    # No volume guard: these tiny files empty a day on purpose (a visit the establishment cancelled).
    result = load_file(conn, path, sender=finess, guard=None)
    assert result.status == "loaded", result.reason
    return result.received_file_id


def test_known_delays_from_exit_to_reception_then_to_santé_publique_france(conn, region, tmp_path, clean_sftp):
    now = datetime.now(ZoneInfo(TZ)).replace(tzinfo=None, second=0, microsecond=0)
    # Arrival delays (exit → reception): 30 h, 10 h, 52 h (no SORTIE: from ENTREE).
    visits = [(now - timedelta(hours=32), now - timedelta(hours=30), "01/02/1950"),
              (now - timedelta(hours=12), now - timedelta(hours=10), "02/03/1980"),
              (now - timedelta(hours=52), None, "03/04/2001")]
    first = _load(conn, oscour(tmp_path / "a.xml", LIVE["finess"], now, visits), LIVE["finess"])
    _load(conn, oscour(tmp_path / "p.xml", PARALLEL["finess"], now, visits[:1]), PARALLEL["finess"])

    start, end = (now - timedelta(days=4)).date(), now.date() + timedelta(days=1)
    data = timeliness.summary(conn, start, end, timezone=TZ, statuses=["live"], bucket="day")
    live = data.of((LIVE["finess"], 0))
    assert live.visits == 3
    assert live.arrival_median_h == pytest.approx(30, abs=0.1)
    assert live.arrival_24h == pytest.approx(1 / 3) and live.arrival_48h == pytest.approx(2 / 3)
    assert (live.delivered, live.delivery_median_h, live.delivery_24h) == (0, None, None)
    by_day = {day: data.of((LIVE["finess"], 0), day).visits for day in {v[0].date() for v in visits}}
    assert sum(by_day.values()) == 3
    assert data.of(None).visits == 3  # the parallel establishment is outside the "live" scope

    # A newer extract: the first visit is gone (cancelled by the establishment), the second got a
    # corrected SORTIE (now 9 h before), the third is unchanged. First receptions are kept.
    second = _load(conn, oscour(tmp_path / "b.xml", LIVE["finess"], now + timedelta(minutes=1),
                                [(visits[1][0], now - timedelta(hours=9), visits[1][2]), visits[2]]), LIVE["finess"])
    rows = conn.execute("SELECT first_file_id, last_file_id FROM visit_timeliness WHERE finess = %s",
                        (LIVE["finess"],)).fetchall()
    assert sorted(rows) == [(first, second), (first, second)]
    live = timeliness.summary(conn, start, end, timezone=TZ, statuses=["live"]).of((LIVE["finess"], 0))
    assert live.visits == 2 and live.arrival_median_h == pytest.approx((9 + 52) / 2, abs=0.1)

    # The daily send to Santé publique France, delivered to the real SFTP server: each delivered
    # visit gets its delivery time; the parallel establishment is never sent.
    outcome = invs.build_daily(conn, region.outbox_dir("invs"), timezone=TZ)
    assert [s.finess for s in outcome.built] == [LIVE["finess"]]
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    [delivered] = sends.deliver_pending_over(
        conn, "invs", lambda: SFTPHook(ssh_conn_id="invs_outbox", conn_retry_attempts=1).get_managed_conn())
    assert delivered.status == "sent"
    received_at = conn.execute("SELECT received_at FROM received_file WHERE id = %s", (first,)).fetchone()[0]
    expected_h = (delivered.sent_at - received_at).total_seconds() / 3600
    data = timeliness.summary(conn, start, end, timezone=TZ, statuses=["live", "parallel"])
    live = data.of((LIVE["finess"], 0))
    assert live.delivered == 2 and live.delivery_median_h == pytest.approx(expected_h, abs=1e-6)
    assert live.delivery_24h == 1.0
    assert data.of((PARALLEL["finess"], 0)).delivered == 0
    assert data.of(None).visits == 3 and data.of(None).delivered == 2

    # Both reports show these figures: the establishment's own page, and the ARS report's table.
    page = establishment_report.build(conn, region, LIVE["finess"], 0, start, now.date())
    tree = lxml_html.fromstring(page.html)
    median = fr_hours(live.arrival_median_h)  # (9 h + 52 h) / 2 = 30 h 30, plus the seconds the load took
    assert live.arrival_median_h == pytest.approx(30.5, abs=0.1)
    assert tree.get_element_by_id("delai-median").text_content() == median
    assert tree.get_element_by_id("part-24h").text_content() == "50\u00a0%"
    built = ars_export.build(conn, region, ars_export.ExportPeriod(now.date() + timedelta(days=1)), tmp_path / "ars")
    report = lxml_html.fromstring(next(f for f in built if f.kind == "html").path.read_text(encoding="utf-8"))
    [row] = [tr for tr in report.get_element_by_id("delais").xpath(".//tr") if LIVE["finess"] in tr.text_content()]
    cells = [td.text_content() for td in row.xpath("./td")]
    assert cells[1:5] == ["2", median, "50,0\u00a0%", "50,0\u00a0%"]
    assert cells[5] == "2" and cells[7] == "100,0\u00a0%"  # both delivered within 24 h of their reception
    assert PARALLEL["finess"] not in report.get_element_by_id("delais").text_content()  # not exported

    # A second delivery of the same period (a replay) does not move the first delivery time.
    assert timeliness.record_delivery(conn, delivered.id) == 0

    # The companion CSV of the ARS export: one line per establishment and day, French numbers.
    text = timeliness.companion_csv(data).decode("utf-8-sig")
    lines = [line.split(";") for line in text.splitlines()]
    assert lines[0] == list(timeliness.COMPANION_COLUMNS)
    assert sum(int(line[3]) for line in lines[1:]) == 3
    assert all(line[0] in (LIVE["finess"], PARALLEL["finess"]) for line in lines[1:])


def _migrated_before(conn, version: int) -> None:
    """The schema as a database had it before migration ``version`` (journaled as rpu db migrate does)."""
    from rpu.store import db as store

    conn.execute("CREATE TABLE schema_migration (version integer PRIMARY KEY, name text NOT NULL,"
                 " checksum char(64) NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    for migration in (m for m in store.known_migrations() if m.version < version):
        conn.execute(migration.sql)
        conn.execute("INSERT INTO schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                     (migration.version, migration.name, migration.checksum))


def test_migration_backfills_the_visits_already_held(fresh_database_url):
    """A database loaded before the timeliness table existed gets one row per visit held, first
    received with the file that holds it now."""
    from rpu.store import db as store

    with psycopg.connect(fresh_database_url(), autocommit=True) as conn:
        _migrated_before(conn, 7)
        file_id = conn.execute(
            "INSERT INTO received_file (file_name, sha256, size_bytes, finess, ordre, status, received_at)"
            " VALUES ('old.xml', repeat('0', 64), 1, %s, 0, 'loaded', '2026-03-08 03:00+01') RETURNING id",
            (LIVE["finess"],)).fetchone()[0]
        # Two identical visits (same minute, same birth date and sex) and a third one.
        conn.execute(
            "INSERT INTO rpu (received_file_id, record_no, finess, ordre, naissance, sexe, entree, sortie) VALUES"
            " (%(f)s, 1, %(e)s, 0, '1950-01-01', 'F', '2026-03-07 10:00', '2026-03-07 12:00'),"
            " (%(f)s, 2, %(e)s, 0, '1950-01-01', 'F', '2026-03-07 10:00', NULL),"
            " (%(f)s, 3, %(e)s, 0, NULL, NULL, '2026-03-06 23:00', NULL)", {"f": file_id, "e": LIVE["finess"]})
        assert [m.version for m in store.migrate(conn)] == [m.version for m in store.known_migrations()
                                                             if m.version >= 7]
        rows = conn.execute("SELECT first_file_id, exit_at FROM visit_timeliness ORDER BY exit_at").fetchall()
        assert rows == [(file_id, datetime(2026, 3, 6, 23, 0)), (file_id, datetime(2026, 3, 7, 10, 0)),
                        (file_id, datetime(2026, 3, 7, 12, 0))]


# --- a revocation: the timeliness follows rpu ---------------------------------------------------

DAY = date(2026, 3, 2)


def _at(day_offset: int, hour: int) -> datetime:
    return datetime.combine(DAY + timedelta(days=day_offset), datetime.min.time()) + timedelta(hours=hour)


def _revoked_sequence(conn, tmp_path, *, as_before_010: bool = False) -> tuple[int, int]:
    """File A (2–4 March: a visit on the 2nd, two on the 3rd), then file B, a newer extract of
    3–5 March (one visit of the 3rd in common with A, one of its own, one on the 5th that only B
    brings); B is revoked: the 3rd and 4th are A's again, the 5th is emptied. ``as_before_010``:
    visit_timeliness is left as the revocation found it (what the code before 010 did)."""
    a = _load(conn, oscour(tmp_path / "a.xml", LIVE["finess"], _at(2, 2), [
        (_at(0, 10), _at(0, 12), "01/01/1950"), (_at(1, 9), _at(1, 11), "02/02/1960"),
        (_at(1, 15), None, "03/03/1970")]), LIVE["finess"])
    b = _load(conn, oscour(tmp_path / "b.xml", LIVE["finess"], _at(3, 2), [
        (_at(1, 9), _at(1, 11), "02/02/1960"), (_at(1, 20), None, "04/04/1980"),
        (_at(3, 1), None, "05/05/1990")]), LIVE["finess"])
    if as_before_010:
        conn.execute("CREATE TEMP TABLE before_revocation AS SELECT * FROM visit_timeliness")
    revocation = revoke_file(conn, b, by="oru", reason="fichier d'une autre unité")
    if as_before_010:
        conn.execute("DELETE FROM visit_timeliness")
        conn.execute("INSERT INTO visit_timeliness SELECT * FROM before_revocation")
    assert revocation.restored == {DAY + timedelta(days=1): a, DAY + timedelta(days=2): a}
    assert revocation.emptied == [DAY + timedelta(days=3)]
    return a, b


def _visits(conn) -> list[tuple]:
    return conn.execute("SELECT entree, first_file_id, last_file_id, first_received_at FROM visit_timeliness"
                        " ORDER BY entree").fetchall()


def test_a_revoked_file_s_visits_leave_the_timeliness_and_the_restored_ones_come_back(conn, region, tmp_path):
    """Regression: a revocation changed rpu but not visit_timeliness, so the ARS report's delays
    counted the revoked file's visits (here 2 of B's: 3 rows for 3 visits held, 1 of them not
    held) and missed the visit of A restored on the 3rd."""
    a, _b = _revoked_sequence(conn, tmp_path)
    assert timeliness_drift(conn) == (0, 0, 0)
    received_a = conn.execute("SELECT received_at FROM received_file WHERE id = %s", (a,)).fetchone()[0]
    # Every visit held is A's, first received with A (the one in common with B kept its first reception).
    assert _visits(conn) == [(_at(0, 10), a, a, received_a), (_at(1, 9), a, a, received_a),
                             (_at(1, 15), a, a, received_a)]
    data = timeliness.summary(conn, DAY, DAY + timedelta(days=7), timezone=TZ, statuses=["live"])
    held = dict(conn.execute("SELECT entree::date, count(*) FROM rpu GROUP BY 1").fetchall())
    assert {day: data.of(None, day).visits for day in data.buckets() if data.of(None, day)} == held
    assert data.of(None).visits == 3


def test_a_visit_given_back_by_a_revocation_keeps_its_delivery(conn, region, tmp_path):
    """Regression: a visit of A that B dropped was forgotten with B's load, and came back with
    B's revocation without its delivery to Santé publique France (counted as never delivered)."""
    a = _load(conn, oscour(tmp_path / "a.xml", LIVE["finess"], _at(2, 2), [
        (_at(0, 10), _at(0, 12), "01/01/1950"), (_at(1, 9), _at(1, 11), "02/02/1960"),
        (_at(1, 15), None, "03/03/1970")]), LIVE["finess"])
    built = tmp_path / "invs.xml"
    built.write_bytes(b"<OSCOUR/>")
    send = sends.record_built(conn, destination="invs", path=built, visit_count=3, finess=LIVE["finess"], ordre=0,
                              period_start=DAY, period_end=DAY + timedelta(days=2), covers_files=[a])
    delivered = sends.attempt(conn, send, lambda send: "reçu")
    assert delivered.status == "sent"
    # B, a newer extract, drops A's visit of the 3rd at 15:00; then B is revoked.
    b = _load(conn, oscour(tmp_path / "b.xml", LIVE["finess"], _at(3, 2), [
        (_at(1, 9), _at(1, 11), "02/02/1960"), (_at(1, 20), None, "04/04/1980")]), LIVE["finess"])
    assert conn.execute("SELECT count(*) FROM visit_timeliness WHERE entree = %s", (_at(1, 15),)).fetchone()[0] == 0
    revoke_file(conn, b, by="oru", reason="fichier d'une autre unité")
    assert timeliness_drift(conn) == (0, 0, 0)
    rows = conn.execute("SELECT entree, invs_send_id, invs_sent_at FROM visit_timeliness ORDER BY entree").fetchall()
    assert rows == [(entree, send.id, delivered.sent_at) for entree in (_at(0, 10), _at(1, 9), _at(1, 15))]
    data = timeliness.summary(conn, DAY, DAY + timedelta(days=7), timezone=TZ, statuses=["live"])
    assert data.of(None).visits == data.of(None).delivered == 3


def test_migration_010_repairs_what_past_revocations_left(fresh_database_url, tmp_path):
    """A database whose revocations ran before 010 (visit_timeliness left as it was before the
    revocation) holds exactly the visits of rpu once migrated."""
    from rpu.store import db as store

    with psycopg.connect(fresh_database_url(), autocommit=True) as conn:
        _migrated_before(conn, 10)
        a, _b = _revoked_sequence(conn, tmp_path, as_before_010=True)
        # B's 2 visits still counted, A's restored visit missing, the visit in common still on B.
        assert timeliness_drift(conn) == (2, 1, 1)
        assert [m.version for m in store.migrate(conn)][0] == 10
        assert timeliness_drift(conn) == (0, 0, 0)
        received_a = conn.execute("SELECT received_at FROM received_file WHERE id = %s", (a,)).fetchone()[0]
        assert [row[:3] for row in _visits(conn)] == [(_at(0, 10), a, a), (_at(1, 9), a, a), (_at(1, 15), a, a)]
        assert _visits(conn)[2][3] == received_a  # the restored visit: first received with A
