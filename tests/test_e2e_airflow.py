"""End to end, on a real Airflow: scheduler, dag-processor, triggerer and API server
(LocalExecutor, metadata on PostgreSQL, FAB auth manager), each in its own process group,
started the way ``rpu demo start`` starts them (:class:`rpu.sandbox.airflow_site.AirflowSite`).

Through the REST API v2, as the people of the region would:

- the operator (``Admin``) unpauses ``rpu_ingest``, which takes a night of files from the real
  SFTP server into the regional database;
- an ARS user triggers ``rpu_invs_replay`` with its params; the replay is journaled (``send``,
  kind ``replay``, who and why) and delivered to the Santé publique France SFTP folder;
- the refusals: the ARS user may read everything but not trigger or change any other DAG,
  connections or variables; an establishment's account sees no DAG at all.

Plus the ``[access]`` table of the region file (:mod:`rpu.airflow.access`), without Airflow.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
import pytest

from rpu.airflow import access
from rpu.config import region
from rpu.config.region import RegionConfigError
from rpu.sandbox import generator
from rpu.sandbox.airflow_api import AirflowApi
from rpu.sandbox.airflow_site import AirflowSite, sqlalchemy_url
from rpu.sandbox.local_services import postgres_airflow_connection
from rpu.sandbox.processes import free_port, stop_groups, tail

TZ = ZoneInfo("Europe/Paris")


# --------------------------------------------------------------------------- [access], no Airflow


def test_access_table_gives_each_account_its_role():
    config = access.parse({
        "operators": ["oru.dupont"],
        "ars": ["ars.martin", {"username": "ars.astreinte", "email": "astreinte@ars.example.fr"}],
        "establishments": [{"username": "si.chu", "finess": "670780055"}],
    })
    assert [(a.username, a.role) for a in config.accounts] == [
        ("oru.dupont", "Admin"), ("ars.martin", "ARS"), ("ars.astreinte", "ARS"), ("si.chu", "Etablissement")]
    assert config.account("ARS.ASTREINTE").email == "astreinte@ars.example.fr"
    assert config.account("ars.martin").email == "ars.martin@localhost"
    assert access.parse({}).accounts == ()


@pytest.mark.parametrize("table, message", [
    ({"admins": ["x"]}, "clé(s) inconnue(s) : admins"),
    ({"ars": ["bad name"]}, "nom de compte invalide"),
    ({"operators": ["dup"], "ars": ["dup"]}, "déclaré deux fois"),
    ({"ars": [{"username": "a", "email": "x@y"}, {"username": "b", "email": "x@y"}]}, "plusieurs comptes"),
    ({"ars": [{"username": "a", "finess": "670780055"}]}, "ne s'applique qu'aux comptes d'établissement"),
    ({"ars": [{"username": "a", "email": "pas une adresse"}]}, "adresse invalide"),
])
def test_access_table_errors_are_named(table, message):
    with pytest.raises(RegionConfigError, match=re.escape(message)):
        access.parse(table, "region.toml")


def test_access_is_read_from_the_region_file(tmp_path):
    path = tmp_path / "region.toml"
    path.write_text(region.render(code="T", name="Test", operator_emails=["oru@localhost"])
                    + '\n[access]\noperators = ["oru"]\nars = ["ars"]\n', encoding="utf-8")
    config = access.from_region(region.load(path))
    assert [a.username for a in config.by_role(access.ARS_ROLE)] == ["ars"]


def test_ars_role_is_viewer_plus_the_replay_and_establishments_get_nothing():
    viewer = {("can_read", "DAGs"), ("can_read", "Task Logs")}
    roles = access.role_permissions(viewer)
    assert roles["ARS"] == viewer | {("can_edit", "DAG:rpu_invs_replay"), ("can_create", "DAG Run:rpu_invs_replay")}
    assert not any("DAG" in resource or "Task" in resource for _action, resource in roles["Etablissement"])


# --------------------------------------------------------------------------- a real Airflow


@pytest.fixture
def airflow_site(tmp_path, fresh_database_url, clean_sftp, smtp_sink):
    """Airflow on a fresh PostgreSQL database, with the region below and its accounts; every
    process group is stopped at the end, even on failure."""
    today = datetime.now(TZ).date()
    establishments = generator.demo_establishments(3, seed=11)
    target, other, _ = establishments
    region_path = tmp_path / "region.toml"
    region_path.write_text(region.render(
        code="E2E", name="Région de test", operator_emails=["oru@localhost"], ars_emails=["ars@localhost"],
        establishments=[{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": "live"}
                        for e in (target, other)],
    ) + ('\n[access]\noperators = ["oru"]\nars = ["ars"]\n'
         f'establishments = [{{ username = "si.autre", finess = "{other["finess"]}" }}]\n'), encoding="utf-8")

    # Last night's files, old enough to be taken at once (not still being written).
    sftp_root = clean_sftp.root
    settled = time.time() - 600
    extract = datetime.now(TZ).replace(tzinfo=None) - timedelta(minutes=5)
    for i, e in enumerate((target, other)):
        depot = sftp_root / "etablissements" / e["finess"] / "depot"
        depot.mkdir(parents=True)
        path = depot / f"O{e['finess']}_0_{extract:%Y%m%d%H%M%S}.xml"
        generator.write_oscour_file(path, e["finess"], 0, today - timedelta(days=7), today - timedelta(days=1),
                                    visits_per_day=20, seed=i, extract=extract)
        os.utime(path, (settled, settled))
    (sftp_root / "spf").mkdir()

    regional_url = fresh_database_url()
    sftp = clean_sftp.airflow_connection()
    site = AirflowSite(
        home=tmp_path / "airflow", database_url=sqlalchemy_url(fresh_database_url()), port=free_port(),
        connections={
            "rpu_db": postgres_airflow_connection(regional_url),
            "rpu_inbox": {**sftp, "extra": {**sftp["extra"], "path": "etablissements"}},
            "invs_outbox": {**sftp, "extra": {**sftp["extra"], "path": "spf"}},
            "smtp_default": smtp_sink.airflow_connection(),
        },
        region_config=region_path,
    )
    logs = tmp_path / "logs"
    passwords = tmp_path / "passwords.json"
    started = {}
    began = time.monotonic()
    try:
        site.migrate(logs)
        site.sync_access(logs, passwords)
        started = site.start(logs)
        site.wait_healthy({name: process for name, (process, _) in started.items()}, timeout=150)
        print(f"Airflow prêt en {time.monotonic() - began:.0f} s")
        yield {"site": site, "passwords": json.loads(passwords.read_text()), "regional_url": regional_url,
               "target": target, "other": other, "today": today, "sftp_root": sftp_root, "logs": logs}
    finally:
        stop_groups([process for process, _ in started.values()], timeout=20,
                    popens=[popen for _, popen in started.values()])
        left = [name for name, (process, _) in started.items() if process.alive()]
        for name in ("scheduler", "dag-processor", "api-server"):
            print(f"--- {name}.log (fin)\n{tail(logs / f'{name}.log', 15)}")
        assert not left, f"still running after stop: {left}"


@pytest.mark.timeout(330)
def test_ingest_then_ars_replay_through_the_rest_api(airflow_site):
    began = time.monotonic()
    site: AirflowSite = airflow_site["site"]
    passwords = airflow_site["passwords"]
    target, other, today = airflow_site["target"], airflow_site["other"], airflow_site["today"]
    oru = AirflowApi(site.url, "oru", passwords["oru"])
    ars = AirflowApi(site.url, "ars", passwords["ars"])
    establishment = AirflowApi(site.url, "si.autre", passwords["si.autre"])
    oru.wait_for_dag("rpu_ingest", timeout=90)
    oru.wait_for_dag("rpu_invs_replay", timeout=90)

    # --- refusals: ARS reads everything, triggers or changes nothing but the replay
    assert ars.trigger("rpu_ingest")[0] == 403
    assert ars.unpause("rpu_ingest") == 403
    assert ars.request("PATCH", "/api/v2/dags/rpu_invs_daily", {"is_paused": False})[0] in (403, 404)
    assert ars.request("GET", "/api/v2/connections")[0] == 403
    assert ars.request("POST", "/api/v2/variables", {"key": "k", "value": "v"})[0] == 403
    status, body = ars.request("GET", "/api/v2/dags?limit=100")
    assert status == 200 and {"rpu_ingest", "rpu_invs_replay"} <= {d["dag_id"] for d in body["dags"]}
    # --- an establishment's account sees nothing of the concentrator
    assert establishment.request("GET", "/api/v2/dags")[0] == 403
    assert establishment.request("GET", "/api/v2/dags/rpu_ingest/dagRuns")[0] == 403
    assert establishment.trigger("rpu_invs_replay", {"finess": other["finess"]})[0] == 403
    assert establishment.request("GET", "/api/v2/eventLogs")[0] == 403

    # --- the operator unpauses rpu_ingest: it takes the night's files
    assert oru.unpause("rpu_ingest") == 200
    if not oru.wait_for_runs("rpu_ingest", timeout=20):
        assert oru.trigger("rpu_ingest")[0] == 200
    runs = oru.wait_until_idle("rpu_ingest", timeout=150)
    assert runs and all(r["state"] == "success" for r in runs), runs
    took = [r for r in runs if oru.task_states("rpu_ingest", r["dag_run_id"]).get("summarize") == "success"]
    assert took, f"no rpu_ingest run loaded anything: {runs}"
    with psycopg.connect(airflow_site["regional_url"]) as conn:
        loaded = conn.execute("SELECT finess, status FROM received_file ORDER BY finess").fetchall()
    assert loaded == sorted([(target["finess"], "loaded"), (other["finess"], "loaded")])
    assert sorted(p.parent.name for p in airflow_site["sftp_root"].glob("etablissements/*/traites/*.xml")) \
        == ["traites", "traites"]
    # ARS reads the runs and their logs
    run_id = took[0]["dag_run_id"]
    assert ars.request("GET", "/api/v2/dags/rpu_ingest/dagRuns")[0] == 200
    assert ars.request("GET", f"/api/v2/dags/rpu_ingest/dagRuns/{run_id}/taskInstances/list_files/logs/1")[0] == 200
    assert ars.request("POST", "/api/v2/dags/rpu_ingest/clearTaskInstances",
                       {"dry_run": True, "dag_run_id": run_id})[0] == 403

    # --- the ARS replays a week for one establishment
    assert oru.unpause("rpu_invs_replay") == 200
    start, end = today - timedelta(days=7), today - timedelta(days=1)
    conf = {"finess": target["finess"], "start": start.isoformat(), "end": end.isoformat(), "dry_run": False,
            "reason": "Test de bout en bout : reprise demandée par l'ARS"}
    assert ars.trigger("rpu_invs_replay", {k: v for k, v in conf.items() if k != "reason"})[0] == 400
    status, body = ars.trigger("rpu_invs_replay", conf)
    assert status == 200, body
    state = oru.wait_for_run("rpu_invs_replay", body["dag_run_id"], timeout=150)
    assert state == "success", oru.task_states("rpu_invs_replay", body["dag_run_id"])
    assert oru.request("GET", f"/api/v2/dags/rpu_invs_replay/dagRuns/{body['dag_run_id']}")[1][
        "triggering_user_name"] == "ars"

    with psycopg.connect(airflow_site["regional_url"]) as conn:
        sends = conn.execute(
            "SELECT destination, kind, status, finess, period_start, period_end, requested_by, reason, file_name,"
            " visit_count FROM send WHERE kind = 'replay'").fetchall()
    assert len(sends) == 1, sends
    destination, kind, status, finess, period_start, period_end, requested_by, reason, file_name, visits = sends[0]
    assert (destination, kind, status, finess) == ("invs", "replay", "sent", target["finess"])
    assert (period_start, period_end, requested_by, reason) == (start, end, "ars", conf["reason"])
    assert visits > 0
    delivered = Path(airflow_site["sftp_root"]) / "spf" / file_name
    assert delivered.is_file()
    assert f"<FINESS>{target['finess']}</FINESS>" in delivered.read_text(encoding="utf-8", errors="replace")
    print(f"scénario en {time.monotonic() - began:.0f} s après le démarrage d'Airflow")
