"""The demo's first night, played through the REST API as an operator would play it."""

from __future__ import annotations

from pathlib import Path

from rpu.sandbox.airflow_api import AirflowApi
from rpu.sandbox.demo_state import DemoState


def scenario(state_root: Path, out=print) -> int:
    """What an operator would do after the first night, through the REST API as ``admin``:
    unpause ``rpu_ingest`` (its latest scheduled run starts at once); once the night is loaded,
    unpause the daily DAGs one at a time, each after the previous one's run ended: the absence
    check (the ARS alert), the ARS export, the daily send, the monthly ATIH flow. One run of
    each. Whatever happens, every DAG ends up unpaused."""
    state = DemoState(state_root)
    config = state.read(state.config_path)
    passwords = state.read(state.passwords_path)
    api = AirflowApi(f"http://127.0.0.1:{config['ports']['airflow']}", "admin", passwords["admin"])

    def run(dag_id: str) -> None:
        status_code, body = api.trigger(dag_id)
        if status_code != 200:
            out(f"{dag_id} : déclenchement refusé (HTTP {status_code}) : {body}")
            return
        out(f"{dag_id} : déclenché ({body['dag_run_id']})")
        final = api.wait_for_run(dag_id, body["dag_run_id"], timeout=900)
        out(f"{dag_id} : {final} {api.task_states(dag_id, body['dag_run_id'])}")

    def run_once(dag_id: str) -> None:
        """Unpause the DAG: the scheduler starts its latest scheduled run at once (catchup=False);
        that run is the one. Only a DAG that got none in 30 s is triggered by hand: one start,
        one run of each (never a scheduled run plus a manual one)."""
        api.unpause(dag_id)
        out(f"{dag_id} : activé")
        if not api.wait_for_runs(dag_id, timeout=30):
            run(dag_id)
        for run_ in api.wait_until_idle(dag_id, timeout=900):
            out(f"{dag_id} : {run_['state']} {api.task_states(dag_id, run_['dag_run_id'])}")

    try:
        api.wait_for_dag("rpu_ingest", timeout=120)
        run_once("rpu_ingest")
        # Then one flow at a time, the day's absence check first (the ARS alert).
        for dag_id in ("rpu_absence_monitor", "rpu_ars_daily", "rpu_invs_daily", "rpu_atih_monthly"):
            if api.dag_exists(dag_id):
                run_once(dag_id)
            else:
                out(f"{dag_id} : absent (pas encore écrit, ou erreur d'import) : ignoré")
    finally:
        _unpause_all(api, out)
        with state.locked():
            config = state.read(state.config_path)
            config["dags_released"] = True
            state.write(state.config_path, config)
    out("scénario terminé")
    return 0


def _unpause_all(api: AirflowApi, out) -> None:
    status_code, body = api.request("GET", "/api/v2/dags?limit=100&paused=true")
    for dag in (body or {}).get("dags", []) if status_code == 200 else []:
        api.unpause(dag["dag_id"])
        out(f"{dag['dag_id']} : activé")
