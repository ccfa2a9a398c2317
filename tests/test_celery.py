"""The CeleryExecutor for real: a scheduler, a dag-processor, a triggerer, an API server and two
Celery workers (``worker-1``, ``worker-2``, each its own hostname in the task instances),
Redis as broker (its own database number and queue name, so that another test run or the demo
on the same Redis never takes these tasks), PostgreSQL for Airflow's metadata, Celery's results
and the regional database, the real SFTP server. The same DAG files and connections as the
LocalExecutor tests; only the executor changes (:class:`rpu.sandbox.airflow_site.CeleryWorkers`).

A night of 20 establishments: every file loaded exactly once, one ``load`` instance per
establishment named by its FINESS, and the instances spread over both workers.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from rpu.config import region
from rpu.sandbox import generator
from rpu.sandbox.airflow_api import AirflowApi
from rpu.sandbox.airflow_site import AirflowSite, CeleryWorkers, sqlalchemy_url
from rpu.sandbox.local_services import postgres_airflow_connection
from rpu.sandbox.processes import free_port, stop_groups, tail

TZ = ZoneInfo("Europe/Paris")
N_ESTABLISHMENTS = 20


@pytest.fixture
def celery_site(tmp_path, fresh_database_url, clean_sftp, smtp_sink, celery_broker_url):
    today = datetime.now(TZ).date()
    establishments = generator.demo_establishments(N_ESTABLISHMENTS, seed=13)
    region_path = tmp_path / "region.toml"
    region_path.write_text(region.render(
        code="CEL", name="Région Celery", operator_emails=["oru@localhost"], ars_emails=["ars@localhost"],
        establishments=[{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": "live"}
                        for e in establishments],
    ) + '\n[access]\noperators = ["oru"]\n', encoding="utf-8")

    # Last night's files, one per establishment, old enough to be taken at once.
    settled = time.time() - 600
    extract = datetime.now(TZ).replace(tzinfo=None) - timedelta(minutes=5)
    for i, e in enumerate(establishments):
        depot = clean_sftp.root / "etablissements" / e["finess"] / "depot"
        depot.mkdir(parents=True)
        path = depot / f"O{e['finess']}_0_{extract:%Y%m%d%H%M%S}.xml"
        generator.write_oscour_file(path, e["finess"], 0, today - timedelta(days=7), today - timedelta(days=1),
                                    visits_per_day=20, seed=i, extract=extract)
        os.utime(path, (settled, settled))

    regional_url = fresh_database_url()
    sftp = clean_sftp.airflow_connection()
    celery = CeleryWorkers(broker_url=celery_broker_url, queue=f"rpu_test_{secrets.token_hex(4)}", workers=2,
                           concurrency=2)
    site = AirflowSite(
        home=tmp_path / "airflow", database_url=sqlalchemy_url(fresh_database_url()), port=free_port(),
        connections={
            "rpu_db": postgres_airflow_connection(regional_url),
            "rpu_inbox": {**sftp, "extra": {**sftp["extra"], "path": "etablissements"}},
            "smtp_default": smtp_sink.airflow_connection(),
        },
        region_config=region_path, celery=celery, extra_env={"RPU_DB_POOL_SLOTS": "4"},
    )
    logs = tmp_path / "logs"
    passwords = tmp_path / "passwords.json"
    started = {}
    try:
        site.migrate(logs)
        site.sync_access(logs, passwords)
        started = site.start(logs)
        assert set(started) == {"scheduler", "dag-processor", "triggerer", "api-server", "worker-1", "worker-2"}
        site.wait_healthy({name: process for name, (process, _) in started.items()}, timeout=180)
        yield {"site": site, "password": json.loads(passwords.read_text())["oru"], "regional_url": regional_url,
               "establishments": establishments, "sftp_root": clean_sftp.root, "queue": celery.queue}
    finally:
        stop_groups([process for process, _ in started.values()], timeout=20,
                    popens=[popen for _, popen in started.values()])
        left = [name for name, (process, _) in started.items() if process.alive()]
        _forget_queue(celery_broker_url, celery.queue)
        for name in ("scheduler", "worker-1", "worker-2"):
            print(f"--- {name}.log (fin)\n{tail(logs / f'{name}.log', 15)}")
        assert not left, f"still running after stop: {left}"


def _forget_queue(broker_url: str, queue: str) -> None:
    """Remove what this run's queue left in the tests' Redis database (kombu's bindings)."""
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        keys = list(client.scan_iter(match=f"*{queue}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.mark.timeout(420)
def test_a_night_on_two_celery_workers(celery_site):
    site: AirflowSite = celery_site["site"]
    oru = AirflowApi(site.url, "oru", celery_site["password"])
    oru.wait_for_dag("rpu_ingest", timeout=90)
    assert oru.unpause("rpu_ingest") == 200
    if not oru.wait_for_runs("rpu_ingest", timeout=20):
        assert oru.trigger("rpu_ingest")[0] == 200
    runs = oru.wait_until_idle("rpu_ingest", timeout=240)
    assert runs and all(r["state"] == "success" for r in runs), runs

    # Every file loaded exactly once, and moved out of depot/.
    establishments = celery_site["establishments"]
    with psycopg.connect(celery_site["regional_url"]) as conn:
        files = conn.execute("SELECT finess, status, sha256 FROM received_file").fetchall()
        visits, carried = conn.execute("SELECT count(*), count(DISTINCT received_file_id) FROM rpu").fetchone()
        loaded_records = conn.execute("SELECT sum(loaded_records) FROM received_file").fetchone()[0]
    assert sorted((f, s) for f, s, _ in files) == sorted((e["finess"], "loaded") for e in establishments)
    assert len({sha for _, _, sha in files}) == N_ESTABLISHMENTS
    assert carried == N_ESTABLISHMENTS and visits == loaded_records > 0
    root = celery_site["sftp_root"] / "etablissements"
    for e in establishments:
        assert list((root / e["finess"] / "depot").iterdir()) == []
        assert len(list((root / e["finess"] / "traites").glob("*.xml"))) == 1

    # One load per establishment, named by its FINESS, each run once, spread over both workers.
    loads = []
    for run in runs:
        status, body = oru.request("GET", f"/api/v2/dags/rpu_ingest/dagRuns/{run['dag_run_id']}/taskInstances"
                                          "?task_id=load&limit=100")
        assert status == 200, body
        loads += [ti for ti in body["task_instances"] if ti["task_id"] == "load" and ti["state"] == "success"]
    assert sorted(ti["rendered_map_index"] for ti in loads) == sorted(e["finess"] for e in establishments)
    assert {ti["try_number"] for ti in loads} == {1}
    assert {(ti["queue"], ti["pool"]) for ti in loads} == {(celery_site["queue"], "rpu_db")}
    per_worker = Counter(ti["hostname"].split(".")[0] for ti in loads)
    print(f"load par worker : {dict(per_worker)}")
    assert set(per_worker) == {"worker-1", "worker-2"}, per_worker
