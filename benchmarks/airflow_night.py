"""The night of ``ingest_night.py --airflow``: the same files taken by Airflow itself.

A whole deployment on this machine, as ``make run`` starts it: scheduler, dag-processor and API
server, the LocalExecutor, Airflow's metadata and the regional database in the local
PostgreSQL, OpenSSH's sshd as the region's SFTP server, an SMTP sink. The pool ``rpu_db`` has
``slots`` slots (``RPU_DB_POOL_SLOTS``), the executor one task slot more (rpu.config.sizing).
One run of ``rpu_ingest`` is triggered: its ``list`` task, then one ``load`` task instance per
establishment, each its own task process with its own SFTP session and database connection.

What is timed: the run (queued to done, as the UI shows it) and its load phase (first ``load``
started to last ``load`` ended, from the task instances). Everything on the machine shares its
cores: Airflow's own components too, as in production.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import psycopg

from rpu.config import region as region_config
from rpu.sandbox.airflow_api import AirflowApi
from rpu.sandbox.airflow_site import DEMO_COMPONENTS, AirflowSite, sqlalchemy_url
from rpu.sandbox.local_services import SmtpSink, create_database, drop_database, postgres_airflow_connection
from rpu.sandbox.openssh_server import OpenSshSftpServer
from rpu.sandbox.processes import free_port, stop_groups, tail

DAG_ID = "rpu_ingest"
OPERATOR = "oru"


def airflow_night(admin_url: str, template: Path, establishments: list[dict], slots: int, busy,
                  settings: dict[str, str] | None = None) -> dict:
    """Take the night in ``template`` (``<FINESS>/depot/...``) through a fresh Airflow with
    ``slots`` slots in the pool; ``busy()`` reads the machine's busy CPU seconds; ``settings``:
    Airflow options as ``{"section.key": value}``. Checks that every establishment's file was
    loaded, once."""
    with contextlib.ExitStack() as stack:
        regional_url, metadata_url = (_database(stack, admin_url, kind) for kind in ("regional", "meta"))
        smtp = SmtpSink().start()
        stack.callback(smtp.stop)
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rpu-night-airflow-")))
        root = work / "sftp"
        shutil.copytree(template, root)
        sftp = OpenSshSftpServer(root, work / "sshd").start()
        stack.callback(sftp.stop)
        region_path = work / "region.toml"
        region_path.write_text(_region_text(establishments), encoding="utf-8")
        site = AirflowSite(
            home=work / "airflow", database_url=sqlalchemy_url(metadata_url), port=free_port(),
            connections={"rpu_db": postgres_airflow_connection(regional_url), "rpu_inbox": sftp.airflow_connection(),
                         "smtp_default": smtp.airflow_connection()},
            region_config=region_path, parallelism=slots + 1, airflow_components=DEMO_COMPONENTS,
            extra_env={"RPU_DB_POOL_SLOTS": str(slots), **airflow_env(settings or {})},
        )
        logs = work / "logs"
        site.migrate(logs)
        site.sync_access(logs, work / "passwords.json")
        started = site.start(logs)
        stack.callback(stop_groups, [process for process, _ in started.values()], timeout=20,
                       popens=[popen for _, popen in started.values()])
        try:
            site.wait_healthy({name: process for name, (process, _) in started.items()}, timeout=240)
            api = AirflowApi(site.url, OPERATOR, json.loads((work / "passwords.json").read_text())[OPERATOR])
            api.wait_for_dag(DAG_ID, timeout=180)
            clock, busy_before = time.monotonic(), busy()
            run = _one_run(api)
            cores_busy = (busy() - busy_before) / (time.monotonic() - clock)
            night = _timings(api, run)
            if night["loads"] != len(establishments):
                raise SystemExit(f"one run should load every establishment: {night['loads']} loads for "
                                 f"{len(establishments)}")
            _check_loaded(regional_url, establishments)
        except Exception:
            for component in ("scheduler", "dag-processor"):
                print(f"--- {component}.log (end)\n{tail(logs / f'{component}.log', 20)}")
            raise
    return {"slots": slots, **night, "cores_busy": cores_busy}


def _database(stack: contextlib.ExitStack, admin_url: str, kind: str) -> str:
    """A fresh database on the local PostgreSQL, dropped when ``stack`` closes."""
    name = f"rpu_night_af_{kind}_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    stack.callback(drop_database, admin_url, name)
    return url


def airflow_env(settings: dict[str, str]) -> dict[str, str]:
    """``{"scheduler.scheduler_idle_sleep_time": "0.2"}`` as Airflow's environment variables."""
    return {"AIRFLOW__" + "__".join(part.upper() for part in option.split(".", 1)): value
            for option, value in settings.items()}


def _region_text(establishments: list[dict]) -> str:
    return region_config.render(
        code="BENCH", name="Banc d'essai", operator_emails=["oru@localhost"], ars_emails=["ars@localhost"],
        establishments=[{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": "live"}
                        for e in establishments],
    ) + f'\n[access]\noperators = ["{OPERATOR}"]\n'


def _one_run(api: AirflowApi) -> dict:
    """Unpause the DAG (its schedule starts a run at once), else trigger one; wait for that run,
    then pause the DAG: a run the schedule adds meanwhile (every 15 minutes) waits for it
    (max_active_runs=1) and finds nothing left to take."""
    assert api.unpause(DAG_ID) == 200
    if not api.wait_for_runs(DAG_ID, timeout=20):
        status, body = api.trigger(DAG_ID)
        if status != 200:
            raise SystemExit(f"{DAG_ID} not triggered: HTTP {status} {body}")
    first = api.wait_for_runs(DAG_ID, timeout=20)[0]
    state = api.wait_for_run(DAG_ID, first["dag_run_id"], timeout=3600)
    api.request("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})
    if state != "success":
        raise SystemExit(f"{DAG_ID} {first['dag_run_id']}: {state}")
    status, run = api.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{first['dag_run_id']}")
    assert status == 200, run
    return run


def _timings(api: AirflowApi, run: dict) -> dict:
    loads = _load_instances(api, run["dag_run_id"])
    if len({ti["map_index"] for ti in loads}) != len(loads) or any(
            ti["state"] != "success" or ti["try_number"] != 1 for ti in loads):
        raise SystemExit(f"the loads did not all succeed at the first try: "
                         f"{sorted((ti['rendered_map_index'], ti['state'], ti['try_number']) for ti in loads)}")
    starts = [_instant(ti["start_date"]) for ti in loads]
    ends = [_instant(ti["end_date"]) for ti in loads]
    return {
        "run_seconds": _instant(run["end_date"]) - _instant(run["start_date"]),
        "loads": len(loads),
        "load_phase_seconds": max(ends) - min(starts),
        "load_median_seconds": statistics.median(e - s for s, e in zip(starts, ends, strict=True)),
    }


def _load_instances(api: AirflowApi, run_id: str) -> list[dict]:
    """The run's ``load`` task instances, page by page (the API gives at most 100 at a time)."""
    loads: list[dict] = []
    while True:
        status, body = api.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances"
                                          f"?task_id=load&limit=100&offset={len(loads)}")
        assert status == 200, body
        page = [ti for ti in body["task_instances"] if ti["task_id"] == "load"]
        loads += page
        if not page or len(loads) >= body["total_entries"]:
            return loads


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _check_loaded(url: str, establishments: list[dict]) -> None:
    with psycopg.connect(url) as conn:
        files = conn.execute("SELECT finess, status FROM received_file").fetchall()
    if sorted(files) != sorted((e["finess"], "loaded") for e in establishments):
        raise SystemExit(f"the night through Airflow is wrong: {len(files)} journal rows for "
                         f"{len(establishments)} establishments, statuses {sorted({s for _, s in files})}")
