"""rpu_invs_daily: the daily OSCOUR file to Santé publique France, from the regional database.

Real PostgreSQL (a fresh database per test), the real SFTP server for the outbox, the DAG run
with ``dag.test()``.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest
from conftest import write_region_file

from rpu.cli.build import register_build_commands
from rpu.config import region as region_config
from rpu.flows import invs
from rpu.formats.validation import inspect_file
from rpu.sandbox import generator
from rpu.store import extract, registry, sends
from rpu.store.loader import load_file

REPO_ROOT = Path(__file__).resolve().parent.parent
LIVE, PARALLEL, ONBOARDING, INACTIVE = generator.demo_establishments(4, seed=7)
STATUSES = {LIVE["finess"]: "live", PARALLEL["finess"]: "parallel", ONBOARDING["finess"]: "onboarding",
            INACTIVE["finess"]: "inactive"}
NAME = re.compile(r"^RPU_(\d{9})_0_(\d{14})\.xml$")


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def region(tmp_path, monkeypatch) -> region_config.Region:
    """A region file with one establishment per status, as RPU_REGION_CONFIG."""
    establishments = [{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": STATUSES[e["finess"]]}
                      for e in (LIVE, PARALLEL, ONBOARDING, INACTIVE)]
    return write_region_file(tmp_path, monkeypatch, establishments=establishments,
                             paths={"exports_dir": str(tmp_path / "exports")})


def load(conn, tmp_path, establishment, start: date, end: date, *, seed: int = 1, per_day: float = 15,
         variant: str = "standard") -> int:
    """Generate one file and load it; return its received_file id."""
    path = tmp_path / f"O{establishment['finess']}_{start:%Y%m%d}_{end:%Y%m%d}_{seed}.xml"
    generator.write_oscour_file(path, establishment["finess"], 0, start, end, visits_per_day=per_day, seed=seed,
                                variant=variant)
    result = load_file(conn, path, sender=establishment["finess"])
    assert result.status == "loaded", result.reason
    return result.received_file_id


def invs_sends(conn) -> list[sends.Send]:
    from psycopg.rows import class_row

    with conn.cursor(row_factory=class_row(sends.Send)) as cursor:
        return cursor.execute("SELECT * FROM send WHERE destination = 'invs' ORDER BY id").fetchall()


def sftp_session():
    from airflow.providers.sftp.hooks.sftp import SFTPHook

    return SFTPHook(ssh_conn_id="invs_outbox", conn_retry_attempts=1).get_managed_conn()


def comparable(visit) -> tuple:
    return (visit.entree, visit.cp, visit.commune, visit.naissance, visit.sexe, visit.mode_entree, visit.provenance,
            visit.transport, visit.transport_pec, visit.motif, visit.gravite, visit.dp, tuple(visit.da),
            tuple(visit.actes), visit.sortie, visit.mode_sortie, visit.destination, visit.orient,
            tuple(tuple(e) for e in visit.extensions))


def read_back(path) -> tuple:
    visits = []
    report = inspect_file(path, on_visit=lambda visit, header: visits.append(visit))
    return report, visits


# --------------------------------------------------------------------------- the use case


def test_daily_file_per_live_establishment_covers_the_union_once(conn, region, tmp_path, clean_sftp):
    registry.sync(conn, region, author="test")
    first = load(conn, tmp_path, LIVE, date(2026, 3, 1), date(2026, 3, 7), seed=1)
    second = load(conn, tmp_path, LIVE, date(2026, 3, 2), date(2026, 3, 8), seed=2)
    for other in (PARALLEL, ONBOARDING, INACTIVE):
        load(conn, tmp_path, other, date(2026, 3, 1), date(2026, 3, 7), seed=3)

    outbox = tmp_path / "outbox"
    outcome = invs.build_daily(conn, outbox, now=datetime(2026, 3, 9, 5, 30, 0))
    assert outcome.failed == []
    [send] = outcome.built
    assert (send.finess, send.ordre, send.kind, send.status) == (LIVE["finess"], 0, "daily", "built")
    assert (send.period_start, send.period_end) == (date(2026, 3, 1), date(2026, 3, 8))
    assert send.covers_files == [first, second]
    assert send.file_name == f"RPU_{LIVE['finess']}_0_20260309053000.xml"
    path = Path(send.local_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert send.visit_count == extract.count_visits(conn, LIVE["finess"], 0, date(2026, 3, 1), date(2026, 3, 8)) > 0
    assert [p.name for p in outbox.iterdir()] == [send.file_name]  # no temporary file left

    # The file: header = the period, EXTRACT = the build time; the region's current data.
    report, visits = read_back(path)
    assert not report.rejected and report.rejected_records == 0
    assert report.header.extract == datetime(2026, 3, 9, 5, 30, 0)
    assert (report.header.period_start, report.header.period_end) == (date(2026, 3, 1), date(2026, 3, 8))
    assert len(visits) == send.visit_count

    # Same day again: nothing new, nothing built (the built send is still pending).
    assert invs.build_daily(conn, outbox).built == []

    with sftp_session() as sftp:
        [delivered] = invs.deliver(conn, sftp)
        assert delivered.status == "sent" and delivered.attempts == 1 and delivered.sent_at is not None
        assert invs.deliver(conn, sftp) == []  # nothing pending any more
    assert (clean_sftp.root / send.file_name).read_bytes() == path.read_bytes()
    assert invs.build_daily(conn, outbox).built == []  # sent: still nothing twice

    # The next day's file of the establishment: a new send carrying only that file.
    third = load(conn, tmp_path, LIVE, date(2026, 3, 3), date(2026, 3, 9), seed=4)
    [next_send] = invs.build_daily(conn, outbox, now=datetime(2026, 3, 10, 5, 30, 0)).built
    assert next_send.covers_files == [third]
    assert (next_send.period_start, next_send.period_end) == (date(2026, 3, 3), date(2026, 3, 9))
    assert {s.finess for s in invs_sends(conn)} == {LIVE["finess"]}


def test_built_oscour_round_trips_through_the_reader(conn, region, tmp_path):
    registry.sync(conn, region, author="test")
    source = tmp_path / "source.xml"
    generator.write_oscour_file(source, LIVE["finess"], 0, date(2026, 5, 1), date(2026, 5, 7), visits_per_day=40,
                                seed=11, variant="extensions")
    assert load_file(conn, source).status == "loaded"
    _, received = read_back(source)

    out = tmp_path / "built.xml"
    count = invs.build_oscour(conn, LIVE["finess"], 0, date(2026, 5, 1), date(2026, 5, 7), out,
                              extract=datetime(2026, 5, 8, 6, 0, 0))
    report, rebuilt = read_back(out)
    assert count == len(received) == len(rebuilt) == report.records
    assert not report.rejected and report.rejected_records == 0
    assert (report.header.finess, report.header.ordre) == (LIVE["finess"], 0)
    assert [v.entree for v in rebuilt] == sorted(v.entree for v in rebuilt)  # ordered by ENTREE
    assert sorted(map(comparable, rebuilt)) == sorted(map(comparable, received))
    assert any(v.extensions for v in rebuilt)  # producer extensions travel on
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    # A sub-period holds exactly the visits whose ENTREE date is in it.
    part = tmp_path / "part.xml"
    count = invs.build_oscour(conn, LIVE["finess"], 0, date(2026, 5, 3), date(2026, 5, 4), part)
    assert count == sum(1 for v in received if date(2026, 5, 3) <= v.entree.date() <= date(2026, 5, 4)) > 0


def test_parallel_establishment_moved_to_live_is_sent_from_the_next_day(conn, region, tmp_path):
    registry.sync(conn, region, author="test")
    outbox = tmp_path / "outbox"
    load(conn, tmp_path, PARALLEL, date(2026, 4, 1), date(2026, 4, 7), seed=1)
    assert invs.build_daily(conn, outbox).built == []  # parallel: the older concentrator sends it

    registry.set_status(conn, PARALLEL["finess"], 0, "live", author="oru", reason="7 jours corrects")
    # What was loaded while parallel was forwarded by the older concentrator: not sent.
    assert invs.build_daily(conn, outbox).built == []

    file_id = load(conn, tmp_path, PARALLEL, date(2026, 4, 2), date(2026, 4, 8), seed=2)
    [send] = invs.build_daily(conn, outbox).built
    assert (send.finess, send.covers_files) == (PARALLEL["finess"], [file_id])
    assert (send.period_start, send.period_end) == (date(2026, 4, 2), date(2026, 4, 8))


def test_rpu_build_oscour_command(conn, db, region, tmp_path, capsys):
    registry.sync(conn, region, author="test")
    load(conn, tmp_path, LIVE, date(2026, 6, 1), date(2026, 6, 7))
    parser = argparse.ArgumentParser(prog="rpu")
    register_build_commands(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "manual.xml"
    args = parser.parse_args(["build", "oscour", "--finess", LIVE["finess"], "--start", "2026-06-02", "--end",
                              "2026-06-03", "--database", db, "--output", str(out)])
    assert args.func(args) == 0
    report, visits = read_back(out)
    assert not report.rejected and len(visits) == extract.count_visits(conn, LIVE["finess"], 0, date(2026, 6, 2),
                                                                         date(2026, 6, 3))
    assert str(len(visits)) in capsys.readouterr().out
    from rpu.cli.errors import UsageError

    reversed_period = parser.parse_args(["build", "oscour", "--finess", LIVE["finess"], "--start", "2026-06-03",
                                         "--end", "2026-06-02", "--database", db, "--output", str(out)])
    with pytest.raises(UsageError, match="avant"):
        reversed_period.func(reversed_period)
    with pytest.raises(SystemExit):
        parser.parse_args(["build", "oscour", "--finess", "12345", "--start", "2026-06-02", "--end", "2026-06-03",
                           "--output", str(out)])
    assert not invs_sends(conn)  # a manual build journals nothing


def test_extract_streams_in_batches_and_closes_its_cursor(conn, region, tmp_path):
    registry.sync(conn, region, author="test")
    load(conn, tmp_path, LIVE, date(2026, 7, 1), date(2026, 7, 7), per_day=30)
    total = extract.count_visits(conn, LIVE["finess"], 0, date(2026, 7, 1), date(2026, 7, 7))
    streamed = list(extract.visits_for(conn, LIVE["finess"], 0, date(2026, 7, 1), date(2026, 7, 7), itersize=7))
    assert len(streamed) == total > 7
    assert all(isinstance(v.extensions, list) and isinstance(v.da, list) for v in streamed)
    # Stopped early: the cursor and its transaction are closed, the connection usable at once.
    visits = extract.visits_for(conn, LIVE["finess"], 0, date(2026, 7, 1), date(2026, 7, 7), itersize=5)
    next(visits)
    visits.close()
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert conn.execute("SELECT count(*) FROM pg_cursors").fetchone()[0] == 0


# --------------------------------------------------------------------------- the DAG


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / f"{dag_id}.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def test_dag_parses_with_its_doc_schedule_and_alerting():
    dag = _dag("rpu_invs_daily")
    assert "Santé publique France" in dag.doc_md and "En cas d'échec" in dag.doc_md
    assert dag.max_active_runs == 1 and {"rpu", "invs"} <= set(dag.tags)
    assert [t.task_id for t in dag.topological_sort()] == ["plan_sends", "build_send", "deliver", "heartbeat"]
    assert dag.task_dict["build_send"].pool == "rpu_db"
    assert dag.task_dict["deliver"].trigger_rule == "all_done"  # earlier days' sends go even if the build fails
    assert (dag.timetable.expression, str(dag.timetable.timezone)) == ("30 5 * * *", "Europe/Paris")
    assert all(t.on_failure_callback for t in dag.tasks)


def test_dag_run_destination_down_then_back_sends_exactly_once(airflow_db, conn, region, tmp_path, clean_sftp,
                                                               mailbox):
    from airflow.utils.state import DagRunState, TaskInstanceState

    registry.sync(conn, region, author="test")
    load(conn, tmp_path, LIVE, date(2026, 3, 1), date(2026, 3, 7))
    load(conn, tmp_path, PARALLEL, date(2026, 3, 1), date(2026, 3, 7))
    dag = _dag("rpu_invs_daily")
    for task in dag.tasks:
        task.retries = 0  # dag.test() would otherwise wait for the retry delays

    clean_sftp.stop()
    try:
        run = dag.test(logical_date=datetime(2026, 3, 8, 4, 30, tzinfo=UTC))
    finally:
        clean_sftp.start()
    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"plan_sends": TaskInstanceState.SUCCESS, "build_send": TaskInstanceState.SUCCESS,
                      "deliver": TaskInstanceState.FAILED, "heartbeat": TaskInstanceState.UPSTREAM_FAILED}
    # One build per live establishment, named by its FINESS.
    assert [ti.rendered_map_index for ti in run.get_task_instances() if ti.task_id == "build_send"] == [LIVE["finess"]]
    [send] = invs_sends(conn)
    assert (send.finess, send.status, send.attempts, send.sent_at) == (LIVE["finess"], "failed", 1, None)
    assert "injoignable" in send.remote_answer
    assert not list(clean_sftp.root.iterdir())
    mailbox.wait_for(lambda m: "rpu_invs_daily" in str(m["Subject"]))  # the ORU is alerted

    # The server is back: the next run delivers the stored file, without rebuilding it.
    run = dag.test(logical_date=datetime(2026, 3, 8, 5, 0, tzinfo=UTC))
    assert run.state == DagRunState.SUCCESS
    [send] = invs_sends(conn)
    assert (send.status, send.attempts) == ("sent", 2)
    assert [p.name for p in clean_sftp.root.iterdir()] == [send.file_name]
    assert NAME.match(send.file_name)

    # And again: nothing new, nothing sent twice.
    run = dag.test(logical_date=datetime(2026, 3, 8, 5, 30, tzinfo=UTC))
    assert run.state == DagRunState.SUCCESS
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["deliver"] == TaskInstanceState.SKIPPED
    assert len(invs_sends(conn)) == 1 and len(list(clean_sftp.root.iterdir())) == 1
    local_copy = Path(os.environ["RPU_REGION_CONFIG"]).parent / "exports" / "envois" / "invs" / send.file_name
    assert local_copy.exists()

    # A week after its delivery, the local copy of the non-anonymised file goes; the journal stays.
    conn.execute("UPDATE send SET sent_at = now() - interval '8 days'")
    run = dag.test(logical_date=datetime(2026, 3, 8, 6, 0, tzinfo=UTC))
    assert run.state == DagRunState.SUCCESS
    assert not local_copy.exists()
    assert [(s.id, s.status) for s in invs_sends(conn)] == [(send.id, "sent")]


def test_dag_delivers_earlier_pending_sends_when_a_build_fails(airflow_db, conn, region, tmp_path, clean_sftp,
                                                                   mailbox):
    from airflow.utils.state import DagRunState, TaskInstanceState

    registry.sync(conn, region, author="test")
    load(conn, tmp_path, LIVE, date(2026, 3, 1), date(2026, 3, 7))
    [earlier] = invs.build_daily(conn, tmp_path / "earlier", now=datetime(2026, 3, 8, 5, 30)).built  # not delivered
    load(conn, tmp_path, LIVE, date(2026, 3, 2), date(2026, 3, 8), seed=2)  # the next night: due again
    region.outbox_dir(invs.DESTINATION).parent.mkdir(parents=True)
    region.outbox_dir(invs.DESTINATION).write_text("")  # a file where the outbox folder should be
    dag = _dag("rpu_invs_daily")
    for task in dag.tasks:
        task.retries = 0

    run = dag.test(logical_date=datetime(2026, 3, 9, 4, 30, tzinfo=UTC))
    assert run.state == DagRunState.FAILED
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {"plan_sends": TaskInstanceState.SUCCESS, "build_send": TaskInstanceState.FAILED,
                      "deliver": TaskInstanceState.FAILED, "heartbeat": TaskInstanceState.UPSTREAM_FAILED}
    [send] = invs_sends(conn)
    assert (send.id, send.status, send.attempts) == (earlier.id, "sent", 1)
    assert [p.name for p in clean_sftp.root.iterdir()] == [earlier.file_name]
