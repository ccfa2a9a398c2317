"""The few calls of Airflow's REST API v2 the demo's scenario and the tests make, as one user."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote


class AirflowApi:
    """The few REST API v2 calls the demo and the tests make, as one user."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.token = self._token(password)

    def _token(self, password: str) -> str:
        status, body = self.request("POST", "/auth/token", {"username": self.username, "password": password},
                                    auth=False)
        if status not in (200, 201):
            raise PermissionError(f"connexion refusée pour {self.username} (HTTP {status}) : {body}")
        return body["access_token"]

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def dag_exists(self, dag_id: str) -> bool:
        return self.request("GET", f"/api/v2/dags/{dag_id}")[0] == 200

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.dag_exists(dag_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"DAG {dag_id} absent de l'API après {timeout:.0f} s (erreur d'import ?)")
            time.sleep(1)

    def unpause(self, dag_id: str) -> int:
        return self.request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})[0]

    def trigger(self, dag_id: str, conf: dict | None = None) -> tuple[int, Any]:
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        status, body = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")
        return body.get("state") if status == 200 else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"{dag_id} {run_id} pas terminé après {timeout:.0f} s")

    def runs(self, dag_id: str) -> list[dict]:
        status, body = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=run_after")
        return body.get("dag_runs", []) if status == 200 else []

    def wait_for_runs(self, dag_id: str, timeout: float) -> list[dict]:
        """The DAG's runs, once there is at least one (empty after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not (runs := self.runs(dag_id)) and time.monotonic() < deadline:
            time.sleep(1)
        return runs

    def wait_until_idle(self, dag_id: str, timeout: float = 600) -> list[dict]:
        """Wait until no run of the DAG is queued or running; return its runs."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(dag_id)
            if not any(r["state"] in ("queued", "running") for r in runs):
                return runs
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} : exécutions pas terminées après {timeout:.0f} s")
            time.sleep(2)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        status, body = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in (body or {}).get("task_instances", [])} if status == 200 else {}
