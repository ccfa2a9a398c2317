"""Watching the watcher: ``rpu health`` states and exit codes, and the heartbeat of each DAG
received by a local HTTP server. Real PostgreSQL, real SFTP server, ``dag.test()``."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg

from rpu.cli import main as cli
from rpu.config import region as region_config
from rpu.flows import health
from rpu.sandbox.generator import demo_establishments

REPO = Path(__file__).resolve().parent.parent
[ESTABLISHMENT] = demo_establishments(1, seed=21)


class Monitor:
    """A dead-man's-switch service on loopback: remembers every GET it receives."""

    def __init__(self, status: int = 200):
        self.requests: list[str] = []
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                monitor.requests.append(self.path)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def write_region(tmp_path, monkeypatch, heartbeat_url: str | None = None) -> Path:
    path = tmp_path / "region.toml"
    text = region_config.render(
        code="TST", name="Région de test", operator_emails=["oru@example.org"],
        establishments=[{"finess": ESTABLISHMENT["finess"], "ordre": 0, "name": ESTABLISHMENT["name"],
                         "status": "live"}],
        paths={"exports_dir": str(tmp_path / "exports")})
    if heartbeat_url:
        text += f'\n[monitoring]\nheartbeat_url = "{heartbeat_url}"\n'
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("RPU_REGION_CONFIG", str(path))
    return path


def rpu_health(capsys, *args) -> tuple[int, dict]:
    capsys.readouterr()  # what earlier steps printed (dag.test() logs)
    code = cli.main(["health", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def states(report: dict) -> dict:
    return {c["name"]: c["state"] for c in report["checks"]}


def test_states_and_exit_codes(db, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(health, "DISK_DEGRADED", 0.0)  # this machine's disk is not under test here
    monkeypatch.setattr(health, "DISK_DOWN", 0.0)
    region = write_region(tmp_path, monkeypatch)
    with psycopg.connect(db, autocommit=True) as conn:
        # Fresh: no flow has ever succeeded (paused DAGs look like this): degraded.
        code, report = rpu_health(capsys, "--database", db, "--region", str(region))
        assert (code, report["state"]) == (1, "degraded")
        assert states(report)["flux rpu_ingest"] == "degraded"

        for flow in health.FLOWS:
            health.record_success(conn, flow.dag_id, "scheduled__test")
        code, report = rpu_health(capsys, "--database", db, "--region", str(region))
        assert (code, report["state"]) == (0, "healthy"), report
        assert set(states(report)) >= {"base régionale", "fichiers en attente dans depot/", "fichiers retenus",
                                        "envois", "espace disque des exports"}

        # The daily send has not succeeded for 30 hours: degraded, and said so.
        conn.execute("UPDATE flow_run SET last_success_at = now() - interval '30 hours' WHERE flow = 'rpu_invs_daily'")
        code, report = rpu_health(capsys, "--database", db, "--region", str(region))
        assert (code, report["state"]) == (1, "degraded")
        [invs] = [c for c in report["checks"] if c["name"] == "flux rpu_invs_daily"]
        assert invs["state"] == "degraded" and invs["data"]["late"] is True and "en retard" in invs["detail"]

        # The scheduler stopped 4 hours ago: nothing is ingested any more, the concentrator is down.
        conn.execute("UPDATE flow_run SET last_success_at = now() - interval '4 hours' WHERE flow = 'rpu_ingest'")
        code, report = rpu_health(capsys, "--database", db, "--region", str(region))
        assert (code, report["state"]) == (2, "down")
        assert states(report)["flux rpu_ingest"] == "down"

        # Back to normal, then a file waiting in depot/ for 2 hours and a failed send: degraded.
        conn.execute("UPDATE flow_run SET last_success_at = now()")
        conn.execute("INSERT INTO inbox_listing (path, size, mtime) VALUES ('670000397/depot/nuit.xml', 10, %s),"
                     " ('670000397/depot/nuit2.xml.part', 10, %s)",
                     (int(time.time()) - 7200, int(time.time()) - 7200))
        conn.execute("INSERT INTO send (destination, file_name, local_path, sha256, size_bytes, visit_count, status)"
                     " VALUES ('invs', 'f.xml', '/nowhere', repeat('0', 64), 1, 1, 'failed')")
        code, report = rpu_health(capsys, "--database", db, "--region", str(region))
        assert (code, report["state"]) == (1, "degraded")
        [depot] = [c for c in report["checks"] if c["name"] == "fichiers en attente dans depot/"]
        assert depot["data"]["files"] == ["670000397/depot/nuit.xml"]  # an upload under way is not waiting
        assert states(report)["envois"] == "degraded"

    # The text form, for a person.
    capsys.readouterr()
    assert cli.main(["health", "--database", db, "--region", str(region)]) == 1
    text = capsys.readouterr().out
    assert text.startswith("Concentrateur RPU : DÉGRADÉ") and "1 vers invs en échec" in text

    # The database does not answer: down.
    code, report = rpu_health(capsys, "--database", "postgresql://postgres@127.0.0.1:1/nope", "--region", str(region))
    assert (code, report["state"]) == (2, "down")
    assert states(report)["base régionale"] == "down"


def test_disk_space_thresholds(tmp_path):
    check = health.check_disk(tmp_path / "exports" / "not-yet-created")
    assert check.data["path"].endswith("not-yet-created") and 0 < check.data["free_share"] <= 1
    free = check.data["free_share"]
    assert check.state == ("down" if free < health.DISK_DOWN else "degraded" if free < health.DISK_DEGRADED
                           else "healthy")


def test_ping_never_raises():
    with Monitor() as monitor:
        assert health.ping(monitor.url + "/ping/abc") is None
        assert monitor.requests == ["/ping/abc"]
    with Monitor(status=500) as monitor:
        assert "HTTP 500" in health.ping(monitor.url)
    assert "injoignable" in health.ping("http://127.0.0.1:1/", timeout=1)
    assert "non HTTP" in health.ping("file:///etc/passwd")


def _ingest_dag():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags" / "rpu_ingest.py")).dags["rpu_ingest"]
    for task in dag.tasks:
        task.retries = 0
    return dag


def test_heartbeat_received_at_the_end_of_a_successful_run(airflow_db, db, tmp_path, monkeypatch, clean_sftp,
                                                          mailbox, capsys):
    dag = _ingest_dag()
    others = {t.task_id for t in dag.tasks} - {"heartbeat"}
    assert dag.task_dict["heartbeat"].upstream_task_ids == others  # every task: a failure anywhere, no ping
    with Monitor() as monitor:
        write_region(tmp_path, monkeypatch, heartbeat_url=monitor.url + "/ping/rpu-tst")
        run = dag.test(logical_date=datetime.now(UTC))
        assert run.state == "success"  # nothing new: no load, the run still succeeded
        task_states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert task_states["load"] == "skipped" and task_states["heartbeat"] == "success"
        assert monitor.requests == ["/ping/rpu-tst"]

    with psycopg.connect(db) as conn:
        at, run_id, beat_at, beat_error = conn.execute(
            "SELECT last_success_at, run_id, heartbeat_at, heartbeat_error FROM flow_run WHERE flow = 'rpu_ingest'"
        ).fetchone()
    assert run_id == run.run_id and beat_at is not None and beat_error is None
    assert datetime.now(UTC) - at < timedelta(minutes=5)

    # The monitoring service is gone: the run is still a success, the failure is recorded.
    write_region(tmp_path, monkeypatch, heartbeat_url="http://127.0.0.1:1/ping/rpu-tst")
    run = dag.test(logical_date=datetime.now(UTC))
    assert run.state == "success"
    with psycopg.connect(db) as conn:
        beat_error = conn.execute("SELECT heartbeat_error FROM flow_run WHERE flow = 'rpu_ingest'").fetchone()[0]
        # The runs stop (back-dated two hours): rpu health sees the flow late.
        conn.execute("UPDATE flow_run SET last_success_at = now() - interval '2 hours'")
    assert "injoignable" in beat_error
    code, report = rpu_health(capsys, "--database", db)
    [ingest] = [c for c in report["checks"] if c["name"] == "flux rpu_ingest"]
    assert code >= 1 and ingest["state"] == "degraded" and ingest["data"]["late"] is True


def test_a_failed_run_sends_no_heartbeat(airflow_db, tmp_path, monkeypatch, clean_sftp, mailbox):
    monkeypatch.setenv("AIRFLOW_CONN_RPU_DB", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": 1, "login": "postgres", "schema": "nope"}))
    dag = _ingest_dag()
    with Monitor() as monitor:
        write_region(tmp_path, monkeypatch, heartbeat_url=monitor.url + "/ping/rpu-tst")
        run = dag.test(logical_date=datetime.now(UTC))
        assert run.state == "failed"
        assert {ti.task_id: ti.state for ti in run.get_task_instances()}["heartbeat"] == "upstream_failed"
        assert monitor.requests == []
