"""The one-command local concentrator: ``rpu demo start | stop | status`` (``make run`` / ``make stop``).

``start`` brings up, detached, each in its own process group, with their PIDs in
``<state>/pids.json`` (``<state>`` is ``var/demo/`` in the repository, or ``$RPU_DEMO_DIR``):

- PostgreSQL: the machine's on 127.0.0.1:5432 when it answers, else a private one
  (``pgserver``, data in ``<state>/pg``); databases ``rpu_demo`` (the regional database,
  migrated) and ``rpu_demo_airflow`` (Airflow's own);
- an SFTP server (``python -m rpu.sandbox.demo sftp``) whose root is ``<state>/sftp``: the establishments'
  folders under ``etablissements/<FINESS>/``, the destinations' under ``spf/``, ``ars/``,
  ``atih/``;
- an SMTP sink (``python -m rpu.sandbox.demo smtp``) writing every message as an ``.eml`` file in
  ``<state>/mailbox/``;
- Airflow: scheduler, dag-processor and API server (no triggerer: no task of the package
  defers, and it would cost 170 MiB for nothing), with LocalExecutor, the
  metadata in PostgreSQL and the **FAB auth manager** (roles from the region file's
  ``[access]`` table, see :mod:`rpu.airflow.access`). This is what ``airflow standalone`` starts, but
  standalone forces the SimpleAuthManager, which has no per-DAG rights;
- on the first start only, a demo region (``<state>/region.toml``, 10 establishments) and its
  data: ten days of history in the regional database, last night's files in the SFTP depots
  (one establishment silent for 9 days, one sending a broken file, one with an anomaly), then
  a one-shot ``scenario`` process that triggers ``rpu_ingest``, then ``rpu_absence_monitor``
  (the ARS alert e-mail), ``rpu_ars_daily`` and ``rpu_invs_daily`` through the REST API.

Running ``start`` again starts only what is not running. ``stop`` ends every recorded process
group (SIGTERM, then SIGKILL) and the private PostgreSQL if the demo started it.

:class:`AirflowSite` (environment, ``db migrate``, accounts, the four components, health) is
also what ``tests/test_e2e_airflow.py`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from rpu.airflow.pools import db_pool_slots, pool_set_command

REPO_ROOT = Path(__file__).resolve().parents[3]
TIMEZONE = "Europe/Paris"
AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
# The demo's: no triggerer (tests/test_sizing.py checks that no task of the package defers).
DEMO_COMPONENTS = ("scheduler", "dag-processor", "api-server")
_HEALTH_PART = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
DEMO_DAGS = ("rpu_ingest", "rpu_absence_monitor", "rpu_ars_daily", "rpu_invs_daily", "rpu_atih_monthly",
             "rpu_invs_replay")
INBOX_DIR, INVS_DIR, ARS_DIR, ATIH_DIR = "etablissements", "spf", "ars", "atih"
DEFAULT_PORT = 8080
N_ESTABLISHMENTS = 10
SILENT_DAYS = 9
HISTORY_DAYS = 10
JWT_SECRET_BYTES = 48  # 64 characters, as `rpu region init` draws it


def _parallelism(establishments: int) -> int:
    """Task slots for the demo: the pool rpu_db's size (the loads at once) plus one (rpu.config.sizing)."""
    from rpu.config.sizing import airflow_parallelism

    return airflow_parallelism(os.cpu_count(), establishments, db_pool_slots())


def state_dir() -> Path:
    return Path(os.environ.get("RPU_DEMO_DIR") or REPO_ROOT / "var" / "demo").resolve()


# --------------------------------------------------------------------------- processes


@dataclass
class Process:
    """One detached process, leader of its own process group."""

    name: str
    pid: int
    pgid: int
    start_ticks: int  # /proc/<pid>/stat starttime: tells our process from a later one with the same PID
    argv: list[str]
    log: str

    def alive(self) -> bool:
        stat = _proc_stat(self.pid)
        return stat is not None and stat["state"] != "Z" and stat["start"] == self.start_ticks


def _proc_stat(pid: int) -> dict | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = text[text.rindex(")") + 2:].split()
    # fields after "(comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime priority nice num_threads itrealvalue starttime ...
    return {"state": rest[0], "pgid": int(rest[2]), "start": int(rest[19])}


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat["pgid"] == pgid and stat["state"] != "Z":
                members.append(int(entry.name))
    return members


def spawn(name: str, argv: list[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
          ) -> tuple[Process, subprocess.Popen]:
    """Start ``argv`` detached (own session, so own process group), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, cwd=cwd)
    stat = _proc_stat(popen.pid)
    return Process(name, popen.pid, popen.pid, stat["start"] if stat else 0, list(argv), str(log_path)), popen


def stop_group(process: Process, timeout: float = 20.0, popen: subprocess.Popen | None = None) -> None:
    """SIGTERM to the whole process group, SIGKILL to what is left after ``timeout`` seconds."""
    stop_groups([process], timeout, [popen] if popen is not None else [])


def stop_groups(processes: list[Process], timeout: float = 20.0, popens: list[subprocess.Popen] = ()) -> list[str]:
    """Stop several process groups at once: SIGTERM to each, wait up to ``timeout`` seconds
    for all, then SIGKILL to what is left. Returns the names of the groups that were running.
    A group whose leader is gone and whose number now belongs to another process is left alone."""
    ours = []
    for process in processes:
        leader_ours = process.alive()
        if leader_ours or (_proc_stat(process.pgid) is None and group_members(process.pgid)):
            ours.append(process)
    for process in ours:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pgid, signal.SIGTERM)

    def left() -> list[Process]:
        for popen in popens:
            popen.poll()  # reap our own children, or they stay zombies
        return [p for p in ours if group_members(p.pgid)]

    deadline = time.monotonic() + timeout
    while left() and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in left():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    for popen in popens:
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
    return [p.name for p in ours]


def wait_for_port(port: int, timeout: float, process: Process | None = None, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} s'est arrêté au démarrage : voir {process.log}\n{tail(process.log)}")
        time.sleep(0.2)
    raise TimeoutError(f"rien n'écoute sur {host}:{port} après {timeout:.0f} s")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: str | Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- Airflow


def sqlalchemy_url(url: str) -> str:
    """A libpq URL (``postgresql://...``, Unix socket in ``?host=`` or not) as the SQLAlchemy
    URL of Airflow's metadata database (driver psycopg 3)."""
    import psycopg

    params = psycopg.conninfo.conninfo_to_dict(url)
    user = quote(str(params.get("user") or "postgres"), safe="")
    password = params.get("password")
    credentials = user + (":" + quote(str(password), safe="") if password else "")
    database = quote(str(params.get("dbname") or "postgres"), safe="")
    host = str(params.get("host") or "127.0.0.1")
    if host.startswith("/"):
        return f"postgresql+psycopg://{credentials}@/{database}?host={quote(host, safe='/')}"
    return f"postgresql+psycopg://{credentials}@{host}:{params.get('port') or 5432}/{database}"


@dataclass(frozen=True)
class CeleryWorkers:
    """The CeleryExecutor instead of the LocalExecutor: ``workers`` Celery workers on this
    machine (``worker-1``, ``worker-2``...), each running ``concurrency`` tasks at once, taking
    tasks from ``queue`` on the Redis broker ``broker_url``; Celery's results in Airflow's
    metadata database (PostgreSQL). A dedicated Redis database number and queue name keep two
    deployments (two test runs, a demo) on one Redis apart."""

    broker_url: str
    queue: str = "default"
    workers: int = 2
    concurrency: int = 2

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"worker-{i}" for i in range(1, self.workers + 1))


@dataclass
class AirflowSite:
    """One Airflow deployment on this machine: scheduler, dag-processor, triggerer and API
    server on ``port`` (``airflow_components``: the demo runs no triggerer), LocalExecutor (or
    Celery workers, ``celery``), metadata in PostgreSQL, FAB auth manager, connections as
    ``AIRFLOW_CONN_*`` JSON and the region file in ``RPU_REGION_CONFIG``."""

    home: Path
    database_url: str  # SQLAlchemy URL of Airflow's metadata database
    port: int
    connections: dict[str, dict]
    region_config: Path
    dags_folder: Path = REPO_ROOT / "dags"
    paused_at_creation: bool = True
    parallelism: int = field(default_factory=lambda: _parallelism(N_ESTABLISHMENTS))
    # 64 characters: Airflow signs its tokens with HS512, whose key PyJWT wants of 64 bytes at least.
    jwt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(JWT_SECRET_BYTES))
    api_secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_env: dict[str, str] = field(default_factory=dict)
    airflow_components: tuple[str, ...] = AIRFLOW_COMPONENTS
    celery: CeleryWorkers | None = None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}"

    def env(self) -> dict[str, str]:
        from rpu.airflow.access import FAB_AUTH_MANAGER

        # Nothing inherited from a caller's Airflow (a test session's home, its connections).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RPU_", "_AIRFLOW"))}
        venv_bin = str(Path(sys.executable).parent)  # standalone-like: "airflow" from this venv
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
        plugins = str(REPO_ROOT / "plugins")
        env["PYTHONPATH"] = plugins + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(self.paused_at_creation),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__WORKERS": "1",
            # Task slots (LocalExecutor workers) sized to the machine and the region (rpu.config.sizing),
            # not Airflow's default of 32 idle workers.
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__API__SECRET_KEY": self.api_secret_key,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.jwt_secret,
            # New DAG files are seen within 30 s (default 5 min).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "RPU_REGION_CONFIG": str(self.region_config),
            # Fewer glibc malloc arenas in the threaded components (API server, triggerer): the
            # same work in less memory on a laptop.
            "MALLOC_ARENA_MAX": "2",
        })
        if self.celery is not None:
            env.update({
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": self.celery.broker_url,
                # Celery's task states in PostgreSQL (Airflow's metadata database), not in Redis.
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.database_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.celery.concurrency),
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": self.celery.queue,
            })
        for conn_id, connection in self.connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection)
        env.update(self.extra_env)
        return env

    @property
    def components(self) -> tuple[str, ...]:
        """Airflow's processes on this machine: its components (the demo: no triggerer), then the
        Celery workers."""
        return self.airflow_components + (self.celery.names if self.celery else ())

    def run(self, argv: list[str], log_path: Path, timeout: float = 300) -> None:
        """Run one command in this site's environment (output appended to ``log_path``)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            result = subprocess.run(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:4])} a échoué (code {result.returncode}) : voir {log_path}\n"
                               f"{tail(log_path)}")

    def migrate(self, log_dir: Path) -> None:
        """``airflow db migrate``: Airflow's tables and the FAB auth manager's (roles, users)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], log_dir / "airflow-db-migrate.log")
        # The pool every per-establishment load takes a slot of (without it they never start).
        slots = db_pool_slots({**os.environ, **self.extra_env})
        self.run(pool_set_command(str(Path(sys.executable).parent / "airflow"), slots), log_dir / "airflow-pools.log")

    def sync_access(self, log_dir: Path, passwords_file: Path) -> None:
        """Roles and accounts from the region file's ``[access]`` (:func:`rpu.airflow.access.sync`)."""
        self.run([sys.executable, "-m", "rpu.airflow.access", "sync", "--region", str(self.region_config),
                  "--passwords", str(passwords_file)], log_dir / "access-sync.log")

    def start(self, log_dir: Path, only: tuple[str, ...] | None = None
              ) -> dict[str, tuple[Process, subprocess.Popen]]:
        from rpu.airflow.workers import worker_command, worker_env

        airflow = str(Path(sys.executable).parent / "airflow")
        env = self.env()
        started = {}
        for component in self.components if only is None else only:
            argv, component_env = [airflow, component], env
            if component in ("scheduler", "triggerer"):
                # One machine, one log folder: the API server reads the task logs from disk, so the
                # log-serving process each of them would start (~55 MiB each) serves nobody.
                argv.append("--skip-serve-logs")
            if component == "api-server":
                argv += ["--host", "127.0.0.1", "--port", str(self.port)]
            elif self.celery and component in self.celery.names:
                argv = worker_command(airflow, component, self.celery.queue, self.celery.concurrency)
                component_env = {**env, **worker_env(component)}
            started[component] = spawn(component, argv, component_env, log_dir / f"{component}.log", cwd=self.home)
        return started

    def health(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v2/monitor/health", timeout=5) as response:
                return json.load(response)
        except (OSError, ValueError):
            return None

    def healthy(self) -> bool:
        health = self.health()
        return bool(health) and all(
            (health.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", *(_HEALTH_PART[c] for c in self.components if c in _HEALTH_PART)))

    def workers_ready(self, processes: Mapping[str, Process]) -> bool:
        """Every Celery worker has said "ready" (connected to the broker, consuming its queue)."""
        names = self.celery.names if self.celery else ()
        return all(name in processes and " ready." in tail(processes[name].log, 200) for name in names)

    def wait_healthy(self, processes: Mapping[str, Process], timeout: float = 180) -> float:
        """Wait until the API answers, every component heartbeats and every Celery worker is
        ready; fail at once if one dies."""
        started = time.monotonic()
        while not (self.healthy() and self.workers_ready(processes)):
            for process in processes.values():
                if not process.alive():
                    raise RuntimeError(f"Airflow {process.name} s'est arrêté : voir {process.log}\n{tail(process.log)}")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"Airflow n'est pas prêt après {timeout:.0f} s (santé : {self.health()})")
            time.sleep(1)
        return time.monotonic() - started


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


# --------------------------------------------------------------------------- the demo region


def demo_establishments() -> list[dict]:
    """The demo region's establishments: mostly live, one parallel, one onboarding; roles in
    the scenario: ``silent`` (nothing for 9 days), ``broken`` (a file refused tonight),
    ``anomaly`` (a file loaded with one flagged visit)."""
    from rpu.sandbox import generator

    out = []
    for i, establishment in enumerate(generator.demo_establishments(N_ESTABLISHMENTS, "67", seed=0)):
        status = {7: "parallel", 9: "onboarding"}.get(i, "live")
        role = {3: "broken", 5: "silent", 2: "anomaly"}.get(i)
        out.append({**establishment, "status": status, "role": role})
    return out


def write_demo_codegeo(path: Path) -> None:
    """A CP → CODEGEO table for the demo's postcodes (Bas-Rhin), each its own code: synthetic,
    not ATIH's table (a region configures the real one in ``[paths] codegeo_csv``)."""
    from rpu.sandbox.generator import _RESIDENCES_67

    codes = sorted({cp for cp, _name, _weight in _RESIDENCES_67})
    path.write_text("CP;CODEGEO\n" + "".join(f"{cp};{cp}\n" for cp in codes), encoding="utf-8")


def demo_region_toml(establishments: list[dict], *, exports_dir: Path, codegeo_csv: Path, airflow_url: str) -> str:
    from rpu.config import region

    text = region.render(
        code="DEMO", name="Région de démonstration (Bas-Rhin)",
        operator_emails=["oru@localhost"], ars_emails=["ars@localhost"],
        establishments=[{"finess": e["finess"], "ordre": e["ordre"], "name": e["name"],
                         "legal_finess": e["legal_finess"], "status": e["status"],
                         "it_contacts": [f"si.{e['finess']}@localhost"]} for e in establishments],
        # The demo's monitor judges "today" as soon as it is triggered.
        schedule={"absence_cutoff": "00:00"},
        paths={"exports_dir": str(exports_dir), "codegeo_csv": str(codegeo_csv)}, atih={"delivery": "sftp"},
        airflow_url=airflow_url,
    )
    broken = next(e for e in establishments if e["role"] == "broken")
    return text + (
        "\n# Comptes Airflow (auth manager FAB) : rpu access sync. Aucun mot de passe ici.\n"
        "[access]\n"
        'operators = ["admin"]\n'
        'ars = ["ars"]\n'
        f'establishments = [{{ username = "si.{broken["finess"]}", finess = "{broken["finess"]}" }}]\n'
    )


def _file_name(finess: str, ordre: int, extract: datetime) -> str:
    return f"O{finess}_{ordre}_{extract:%Y%m%d%H%M%S}.xml"


def seed(database_url: str, region_path: Path, sftp_root: Path, work: Path, log=print) -> bool:
    """The demo's data, once (``False`` when the regional database already has files): ten days
    of history loaded as if received each night, the absence monitor walked through those days
    (no e-mail), and last night's files in the SFTP depots for ``rpu_ingest`` to take."""
    from rpu.config import region as region_config
    from rpu.flows import absence
    from rpu.flows.ingest import SETTLE_SECONDS
    from rpu.sandbox import generator
    from rpu.store import db as store
    from rpu.store import registry
    from rpu.store.loader import load_file

    region = region_config.load(region_path)
    establishments = demo_establishments()
    tz = ZoneInfo(region.timezone)
    now = datetime.now(tz)
    today = now.date()
    with store.connect(database_url, autocommit=True) as conn:
        store.migrate(conn)
        if conn.execute("SELECT count(*) FROM received_file").fetchone()[0]:
            return False
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with store.connect(database_url) as conn:
        registry.sync(conn, region, author="démo")
        conn.commit()
        for days_ago in range(HISTORY_DAYS, 0, -1):
            night = today - timedelta(days=days_ago)
            received = datetime.combine(night, clock(3, 0), tz)
            for i, e in enumerate(establishments):
                if e["role"] == "silent" and days_ago < HISTORY_DAYS:
                    continue  # its last file: 10 days ago; nothing for the last 9 days
                path = work / _file_name(e["finess"], e["ordre"], received.replace(tzinfo=None))
                generator.write_oscour_file(path, e["finess"], e["ordre"], night - timedelta(days=7),
                                            night - timedelta(days=1), visits_per_day=e["daily_visits"] / 2,
                                            seed=1000 * days_ago + i, extract=received.replace(tzinfo=None) - timedelta(minutes=30))
                result = load_file(conn, path, sender=e["finess"])
                conn.execute("UPDATE received_file SET received_at = %s WHERE id = %s",
                             (received, result.received_file_id))
                conn.commit()
                path.unlink()
        log(f"historique : {HISTORY_DAYS} nuits chargées en {time.monotonic() - started:.0f} s")
        # The monitor as if it had run each morning (no e-mail: today's run sends the alert).
        for days_ago in range(SILENT_DAYS, 0, -1):
            day = today - timedelta(days=days_ago)
            absence.run_monitor(conn, region, day, datetime.combine(day, clock(10, 0), tz),
                                notify=None)
    # Last night's files, old enough to be taken by the first ingest run.
    extract = min(now.replace(tzinfo=None) - timedelta(minutes=5),
                  datetime.combine(today, clock(2, 30)))
    settled = time.time() - SETTLE_SECONDS - 60
    for i, e in enumerate(establishments):
        depot = sftp_root / INBOX_DIR / e["finess"] / "depot"
        depot.mkdir(parents=True, exist_ok=True)
        if e["role"] == "silent":
            continue
        defects = {"broken": ["TRUNCATED"], "anomaly": ["STAY_TOO_LONG"]}.get(e["role"], [])
        path = depot / _file_name(e["finess"], e["ordre"], extract)
        generator.write_oscour_file(path, e["finess"], e["ordre"], today - timedelta(days=7), today - timedelta(days=1),
                                    visits_per_day=e["daily_visits"] / 2, seed=i, extract=extract, defects=defects)
        os.utime(path, (settled, settled))
    return True


# --------------------------------------------------------------------------- state


class DemoState:
    """``<state>/``: config.json (ports, secrets; owner-only), pids.json, passwords.json,
    region.toml, logs/, mailbox/, sftp/, airflow/, pg/ (private PostgreSQL only)."""

    def __init__(self, root: Path | None = None):
        self.root = (root or state_dir()).resolve()
        self.config_path = self.root / "config.json"
        self.pids_path = self.root / "pids.json"
        self.passwords_path = self.root / "passwords.json"
        self.region_path = self.root / "region.toml"
        self.logs = self.root / "logs"
        self.mailbox = self.root / "mailbox"
        self.sftp_root = self.root / "sftp"
        self.airflow_home = self.root / "airflow"
        self.pg_data = self.root / "pg"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        import fcntl  # POSIX only: `rpu validate` must still run on a hospital's Windows machine

        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def read(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}

    def write(self, path: Path, data: dict) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)

    def processes(self) -> dict[str, Process]:
        return {name: Process(**p) for name, p in self.read(self.pids_path).get("processes", {}).items()}

    def record(self, process: Process | None = None, *, forget: str | None = None, pgserver: dict | None = None,
               forget_pgserver: bool = False) -> None:
        data = self.read(self.pids_path)
        data.setdefault("processes", {})
        if process is not None:
            data["processes"][process.name] = asdict(process)
        if forget:
            data["processes"].pop(forget, None)
        if pgserver is not None:
            data["pgserver"] = pgserver
        if forget_pgserver:
            data.pop("pgserver", None)
        self.write(self.pids_path, data)


def _load_or_create_config(state: DemoState) -> dict:
    config = state.read(state.config_path)
    if config:
        return config
    wanted = int(os.environ.get("RPU_DEMO_PORT") or DEFAULT_PORT)
    config = {
        "created_at": datetime.now(ZoneInfo(TIMEZONE)).isoformat(timespec="seconds"),
        "ports": {"airflow": wanted if port_free(wanted) else free_port(), "sftp": free_port(), "smtp": free_port()},
        "sftp": {"username": "rpu", "password": secrets.token_urlsafe(16)},
        "secrets": {"jwt": secrets.token_urlsafe(JWT_SECRET_BYTES), "api": secrets.token_urlsafe(32)},
    }
    state.write(state.config_path, config)
    return config


def _postgres(state: DemoState, config: dict, say) -> str:
    """Admin URL of the demo's PostgreSQL server: the one chosen at the first start."""
    from rpu.sandbox.local_services import LOCAL_POSTGRES_URL, _port_open, postgres_accepts

    mode = config.get("postgres")
    if mode is None:
        mode = "local" if _port_open(LOCAL_POSTGRES_URL) and postgres_accepts(LOCAL_POSTGRES_URL) else "pgserver"
        config["postgres"] = mode
        state.write(state.config_path, config)
    if mode == "local":
        if not postgres_accepts(LOCAL_POSTGRES_URL):
            raise RuntimeError(f"le PostgreSQL de la machine ({LOCAL_POSTGRES_URL}) ne répond plus")
        say(f"PostgreSQL : celui de la machine ({LOCAL_POSTGRES_URL})")
        return LOCAL_POSTGRES_URL
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver
    server = pgserver.get_server(state.pg_data, cleanup_mode=None)  # keeps running after this process
    state.record(pgserver={"data_dir": str(state.pg_data), "pid": server.get_pid()})
    say(f"PostgreSQL : privé (pgserver, données dans {state.pg_data})")
    return server.get_uri()


def _ensure_database(admin_url: str, name: str) -> str:
    import psycopg
    from psycopg import sql

    from rpu.sandbox.local_services import database_url

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(admin_url, name)


def _sftp_connection(config: dict, host_key: str, path: str) -> dict:
    return {"conn_type": "sftp", "host": "127.0.0.1", "port": config["ports"]["sftp"],
            "login": config["sftp"]["username"], "password": config["sftp"]["password"],
            "extra": {"host_key": host_key, "no_host_key_check": False, "look_for_keys": False, "path": path}}


def _host_key(state: DemoState) -> str:
    from rpu.sandbox.local_services import _load_or_create_host_key

    key = _load_or_create_host_key(state.root / "sftp-key")
    return key.export_public_key("openssh").decode().strip()


def database_names(state: DemoState) -> tuple[str, str]:
    """The regional and Airflow databases: ``rpu_demo`` and ``rpu_demo_airflow`` for the
    repository's demo, suffixed for another state directory (two demos never share one)."""
    if state.root == (REPO_ROOT / "var" / "demo").resolve():
        return "rpu_demo", "rpu_demo_airflow"
    import hashlib

    suffix = hashlib.sha1(str(state.root).encode()).hexdigest()[:8]
    return f"rpu_demo_{suffix}", f"rpu_demo_{suffix}_airflow"


def site_for(state: DemoState, config: dict, admin_url: str) -> AirflowSite:
    from rpu.sandbox.local_services import postgres_airflow_connection

    regional_name, airflow_name = database_names(state)
    regional = _ensure_database(admin_url, regional_name)
    metadata = _ensure_database(admin_url, airflow_name)
    host_key = _host_key(state)
    connections = {
        "rpu_db": postgres_airflow_connection(regional),
        "rpu_inbox": _sftp_connection(config, host_key, INBOX_DIR),
        "invs_outbox": _sftp_connection(config, host_key, INVS_DIR),
        "ars_outbox": _sftp_connection(config, host_key, ARS_DIR),
        "atih_syrius": _sftp_connection(config, host_key, ATIH_DIR),
        "smtp_default": {"conn_type": "smtp", "host": "127.0.0.1", "port": config["ports"]["smtp"],
                         "extra": {"disable_ssl": True, "disable_tls": True,
                                   "from_email": "concentrateur-rpu@localhost"}},
    }
    # Until the first night has been ingested (scenario), the DAGs are created paused: a catch-up
    # run of rpu_absence_monitor must not judge today before rpu_ingest has loaded last night's
    # files. The scenario unpauses them all; later starts create new DAGs unpaused.
    celery = None
    if config.get("executor") == "celery":
        # Its own Redis database number and queue: never another deployment's tasks.
        celery = CeleryWorkers(broker_url=config["redis_url"], queue=f"{regional_name}_taches", workers=2,
                               concurrency=2)
    return AirflowSite(home=state.airflow_home, database_url=sqlalchemy_url(metadata), port=config["ports"]["airflow"],
                       connections=connections, region_config=state.region_path,
                       paused_at_creation=not config.get("dags_released", False),
                       parallelism=_parallelism(len(demo_establishments())), airflow_components=DEMO_COMPONENTS,
                       jwt_secret=config["secrets"]["jwt"], api_secret_key=config["secrets"]["api"], celery=celery)


DEMO_REDIS_DB = 1


def _redis(state: DemoState, config: dict, running: dict, env: Mapping[str, str], say) -> None:
    """The Celery broker of the demo (``config["redis_url"]``): the machine's Redis on
    127.0.0.1:6379 when it answers, else a private ``redis-server`` recorded with the demo's
    processes (stopped by ``rpu demo stop``)."""
    from rpu.sandbox.local_services import redis_accepts

    if "redis" in running:
        say(f"redis : déjà en marche (PID {running['redis'].pid})")
        return
    if config.get("redis") != "private" and redis_accepts():
        config.update(redis="local", redis_url=f"redis://127.0.0.1:6379/{DEMO_REDIS_DB}")
        state.write(state.config_path, config)
        say(f"Redis : celui de la machine (127.0.0.1:6379, base {DEMO_REDIS_DB})")
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("Redis ne répond pas sur 127.0.0.1:6379 et redis-server est introuvable "
                           "(apt-get install redis-server)")
    port = config.get("ports", {}).get("redis") or free_port()
    config["ports"]["redis"] = port
    config.update(redis="private", redis_url=f"redis://127.0.0.1:{port}/{DEMO_REDIS_DB}")
    state.write(state.config_path, config)
    process, _ = spawn("redis", [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                 "--appendonly", "no"], env, state.logs / "redis.log")
    state.record(process)
    wait_for_port(port, 20, process)
    say(f"Redis : privé, démarré sur 127.0.0.1:{port} (PID {process.pid})")


# --------------------------------------------------------------------------- start / stop / status


def start(state: DemoState | None = None, out=print, executor: str | None = None) -> int:
    """``executor``: "local" (LocalExecutor) or "celery" (two Celery workers and a Redis
    broker); None keeps the one of the first start (local by default)."""
    state = state or DemoState()
    began = time.monotonic()
    with state.locked():
        for directory in (state.logs, state.mailbox, state.sftp_root, state.airflow_home):
            directory.mkdir(parents=True, exist_ok=True)
        for sub in (INBOX_DIR, INVS_DIR, ARS_DIR, ATIH_DIR):
            (state.sftp_root / sub).mkdir(exist_ok=True)
        config = _load_or_create_config(state)
        running = {name: p for name, p in state.processes().items() if p.alive()}
        for name in set(state.processes()) - set(running):
            state.record(forget=name)
        if len(config["secrets"]["jwt"]) < 64 and not set(running) & set(AIRFLOW_COMPONENTS):
            # A demo made before the key was long enough: a new one while no component uses it.
            config["secrets"]["jwt"] = secrets.token_urlsafe(JWT_SECRET_BYTES)
            state.write(state.config_path, config)

        def say(text: str) -> None:
            out(f"[{time.monotonic() - began:5.1f} s] {text}")

        if executor and executor != config.get("executor", "local"):
            if any(name in running for name in (*AIRFLOW_COMPONENTS, "redis")):
                raise RuntimeError(f"la démo tourne avec l'exécuteur {config.get('executor', 'local')} : "
                                   "arrêtez-la d'abord (make stop), puis relancez")
            config["executor"] = executor
            state.write(state.config_path, config)
        admin_url = _postgres(state, config, say)
        if config.get("executor") == "celery":
            _redis(state, config, running, {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW",
                                                                                                     "RPU_"))}, say)
        site = site_for(state, config, admin_url)
        if not state.region_path.exists():
            codegeo = state.root / "codegeo.csv"
            write_demo_codegeo(codegeo)
            state.region_path.write_text(demo_region_toml(demo_establishments(), exports_dir=state.root / "exports",
                                                          codegeo_csv=codegeo, airflow_url=site.url), encoding="utf-8")
        python = sys.executable
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RPU_"))},
               "PYTHONPATH": str(REPO_ROOT / "plugins")}
        # SFTP and SMTP: separate long-lived processes.
        for name, argv, port in (
            ("sftp", [python, "-m", "rpu.sandbox.demo", "sftp", "--state", str(state.root)], config["ports"]["sftp"]),
            ("smtp", [python, "-m", "rpu.sandbox.demo", "smtp", "--mailbox", str(state.mailbox), "--port",
                      str(config["ports"]["smtp"])], config["ports"]["smtp"]),
        ):
            if name in running:
                say(f"{name} : déjà en marche (PID {running[name].pid})")
                continue
            if not port_free(port):
                raise RuntimeError(f"le port {port} ({name}) est pris par un autre programme : "
                                   f"arrêtez-le ou effacez {state.root} pour repartir de zéro")
            process, _ = spawn(name, argv, env, state.logs / f"{name}.log")
            state.record(process)
            wait_for_port(port, 20, process)
            say(f"{name} : démarré sur 127.0.0.1:{port} (PID {process.pid})")

        # Data (first start only) while Airflow gets ready: different databases.
        seeded: dict[str, Any] = {}

        def seeding() -> None:
            try:
                seeded["done"] = seed(_ensure_database(admin_url, database_names(state)[0]), state.region_path,
                                      state.sftp_root, state.root / "work", log=say)
            except BaseException as error:  # reported below
                seeded["error"] = error

        seeder = threading.Thread(target=seeding, name="demo-seed")
        seeder.start()
        missing = tuple(c for c in site.components if c not in running)
        if missing:
            if len(missing) == len(site.components) or not site.healthy():
                site.migrate(state.logs)
                say("Airflow : base migrée")
                site.sync_access(state.logs, state.passwords_path)
                say("Airflow : rôles et comptes à jour (section [access] de la région)")
            if not port_free(site.port) and "api-server" in missing:
                raise RuntimeError(f"le port {site.port} (interface Airflow) est pris par un autre programme")
            for process, _popen in site.start(state.logs, missing).values():
                state.record(process)
            say(f"Airflow : {', '.join(missing)} démarrés")
        else:
            say("Airflow : déjà en marche")
        processes = {name: p for name, p in state.processes().items() if name in site.components}
        site.wait_healthy(processes, timeout=240)
        say(f"Airflow : prêt sur {site.url}")
        seeder.join()
        if "error" in seeded:
            raise seeded["error"]
        if seeded.get("done"):
            say("données de démonstration : historique chargé, fichiers de la nuit déposés")
        scenario_running = "scenario" in running
        first_night = bool(seeded.get("done") or not config.get("dags_released"))
        if first_night and not scenario_running:
            process, _ = spawn("scenario", [python, "-m", "rpu.sandbox.demo", "scenario", "--state", str(state.root)],
                               env, state.logs / "scenario.log")
            state.record(process)
        out("")
        out(summary(state, config, site, first_night=first_night or scenario_running))
        out(f"(démarrage : {time.monotonic() - began:.0f} s)")
    return 0


def summary(state: DemoState, config: dict, site: AirflowSite, *, first_night: bool = False) -> str:
    """What ``make run`` prints: where everything is; on the first start only, what the first
    night will show; and a replay to try, dry run first (as the README and the DAG's doc say)."""
    passwords = state.read(state.passwords_path)
    establishments = demo_establishments()
    live = next(e for e in establishments if e["status"] == "live" and not e["role"])
    silent = next(e for e in establishments if e["role"] == "silent")
    today = datetime.now(ZoneInfo(TIMEZONE)).date()
    lines = [
        "Concentrateur RPU de démonstration",
        f"  Interface Airflow : {site.url} (en français si votre navigateur l'est)",
        f"    opérateur (ORU)  : admin / {passwords.get('admin', '?')}",
        f"    ARS              : ars / {passwords.get('ars', '?')} (lit tout, ne déclenche que rpu_invs_replay)",
        f"    mots de passe    : {state.passwords_path}",
        f"  Boîte aux lettres (chaque e-mail en .eml) : {state.mailbox}",
        f"  SFTP : sftp -P {config['ports']['sftp']} {config['sftp']['username']}@127.0.0.1"
        f" (mot de passe dans {state.config_path}) ; dépôts : /{INBOX_DIR}/<FINESS>/depot/",
        f"  Journaux : {state.logs} ; région : {state.region_path}",
        (f"  Exécuteur : Celery, {', '.join(site.celery.names)} (file {site.celery.queue}, {site.celery.broker_url})"
         if site.celery else "  Exécuteur : LocalExecutor (make run-celery : deux workers Celery)"),
        f"  Airflow : {site.parallelism} tâches à la fois ({os.cpu_count()} cœurs, {len(establishments)} établissements)",
    ]
    if first_night:
        lines.append(
            "  Dans les minutes qui viennent, une exécution de chaque DAG : rpu_ingest charge la nuit (un fichier"
            f" rejeté, avec son rapport dans {INBOX_DIR}/<FINESS>/rejetes/), rpu_absence_monitor envoie l'alerte ARS"
            f" ({silent['name']}, FINESS {silent['finess']}, sans fichier depuis {SILENT_DAYS} jours),"
            " rpu_ars_daily l'export de l'ARS, rpu_invs_daily l'envoi à Santé publique France.")
    lines += [
        f"  Une reprise à essayer (connecté en ars) : rpu_invs_replay, bouton Déclencher, FINESS géographique"
        f" {live['finess']}, du {today - timedelta(days=7):%d/%m/%Y} au {today - timedelta(days=1):%d/%m/%Y},"
        " un motif, « Simulation » laissée cochée (nombre de passages par jour, rien n'est envoyé) ;"
        " puis de nouveau, décochée, pour l'envoi réel.",
        "  Arrêter : make stop (python -m rpu demo stop) ; état : python -m rpu demo status",
    ]
    return "\n".join(lines)


def stop(state: DemoState | None = None, out=print, purge: bool = False) -> int:
    """Stop every recorded process group (and the private PostgreSQL if the demo started it).
    ``purge``: then also drop the demo's databases and delete the state directory."""
    state = state or DemoState()
    if not state.root.exists():
        out("démo : rien à arrêter")
        return 0
    with state.locked():
        processes = state.processes()
        # Airflow and the scenario first (they use SFTP, SMTP and PostgreSQL), then the services.
        services = ("sftp", "smtp", "redis")
        first = [p for name, p in processes.items() if name not in services]
        then = [p for name, p in processes.items() if name in services]
        for batch in (first, then):
            for name in stop_groups(batch):
                out(f"{name} : arrêté (groupe {processes[name].pgid})")
            for process in batch:
                state.record(forget=process.name)
        pg = state.read(state.pids_path).get("pgserver")
        if pg:
            _stop_pgserver(Path(pg["data_dir"]))
            state.record(forget_pgserver=True)
            out("PostgreSQL privé : arrêté")
        if purge:
            _purge(state, out)
            return 0
    out("démo arrêtée (les données restent dans " + str(state.root) + ")")
    return 0


def _purge(state: DemoState, out) -> None:
    from rpu.sandbox.local_services import LOCAL_POSTGRES_URL, drop_database, postgres_accepts

    config = state.read(state.config_path)
    if config.get("postgres") == "local" and postgres_accepts(LOCAL_POSTGRES_URL):
        for name in database_names(state):
            drop_database(LOCAL_POSTGRES_URL, name)
        out(f"bases {', '.join(database_names(state))} supprimées")
    shutil.rmtree(state.root, ignore_errors=True)
    out(f"démo effacée ({state.root})")


def _stop_pgserver(data_dir: Path) -> None:
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast" shutdown
    deadline = time.monotonic() + 20
    while _proc_stat(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _proc_stat(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def status(state: DemoState | None = None, out=print) -> int:
    state = state or DemoState()
    processes = state.processes()
    config = state.read(state.config_path)
    if not processes:
        out("démo : arrêtée")
        return 3
    all_up = True
    for name, process in processes.items():
        up = process.alive()
        if name != "scenario":
            all_up &= up
        label = "en marche" if up else ("terminé" if name == "scenario" else "ARRÊTÉ")
        out(f"{name:<14} {label:<10} PID {process.pid}  journal {process.log}")
    if config:
        port = config["ports"]["airflow"]
        healthy = AirflowSite(state.airflow_home, "", port, {}, state.region_path,
                              airflow_components=DEMO_COMPONENTS).healthy()
        all_up &= healthy
        out(f"Airflow : http://localhost:{port} ({'prêt' if healthy else 'pas prêt'}) ; boîte aux lettres : "
            f"{state.mailbox} ({len(list(state.mailbox.glob('*.eml')))} message(s))")
    return 0 if all_up else 1


# --------------------------------------------------------------------------- internal processes


def _serve_until_signalled(start_server, stop_server) -> int:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: done.set())
    start_server()
    while not done.wait(3600):
        pass
    stop_server()
    return 0


def serve_sftp(state_root: Path) -> int:
    from rpu.sandbox.local_services import SftpServer

    state = DemoState(state_root)
    config = state.read(state.config_path)
    server = SftpServer(state.sftp_root, username=config["sftp"]["username"], password=config["sftp"]["password"],
                        port=config["ports"]["sftp"], state_dir=state.root / "sftp-key")
    return _serve_until_signalled(server.start, server.stop)


def serve_smtp(mailbox: Path, port: int) -> int:
    from rpu.sandbox.local_services import SmtpSink

    sink = SmtpSink(mailbox, port=port)
    return _serve_until_signalled(sink.start, sink.stop)


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


# --------------------------------------------------------------------------- command line


def register_demo_commands(subparsers) -> argparse.ArgumentParser:
    """Add ``demo`` (start, stop, status) to the ``rpu`` sub-commands."""
    demo = subparsers.add_parser("demo", help="une région de démonstration sur cette machine (make run / make stop)")
    actions = demo.add_subparsers(dest="demo_command", required=True, metavar="ACTION")
    for name, func, text in (
        ("start", cmd_start, "démarrer (ou compléter) la démo : PostgreSQL, SFTP, SMTP, Airflow, données"),
        ("stop", cmd_stop, "arrêter tous les processus de la démo (les données restent)"),
        ("status", cmd_status, "ce qui tourne"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--state", type=Path, help="dossier d'état (défaut : $RPU_DEMO_DIR ou var/demo)")
        if name == "stop":
            action.add_argument("--purge", action="store_true",
                                help="effacer aussi les bases et le dossier d'état (repartir de zéro)")
        if name == "start":
            action.add_argument("--executor", choices=("local", "celery"),
                                help="local : LocalExecutor ; celery : deux workers Celery et Redis (make run-celery). "
                                     "Défaut : celui du premier démarrage")
        action.set_defaults(func=func)
    return demo


def cmd_start(args) -> int:
    state = DemoState(args.state)
    try:
        return start(state, executor=getattr(args, "executor", None))
    except (RuntimeError, TimeoutError) as error:
        print(f"rpu demo: {error}", file=sys.stderr)
        print("rpu demo: ce qui a démarré reste en marche ; « rpu demo stop » l'arrête.", file=sys.stderr)
        return 1


def cmd_stop(args) -> int:
    return stop(DemoState(args.state), purge=getattr(args, "purge", False))


def cmd_status(args) -> int:
    return status(DemoState(args.state))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rpu.sandbox.demo")
    commands = parser.add_subparsers(dest="command", required=True)
    register_demo_commands(commands)
    for name, func, text in (("start", cmd_start, "= demo start"), ("stop", cmd_stop, "= demo stop"),
                             ("status", cmd_status, "= demo status")):
        action = commands.add_parser(name, help=text)
        action.add_argument("--state", type=Path)
        if name == "stop":
            action.add_argument("--purge", action="store_true")
        if name == "start":
            action.add_argument("--executor", choices=("local", "celery"))
        action.set_defaults(func=func)
    sftp = commands.add_parser("sftp", help="(interne) le serveur SFTP de la démo, jusqu'à SIGTERM")
    sftp.add_argument("--state", type=Path, required=True)
    sftp.set_defaults(func=lambda a: serve_sftp(a.state))
    smtp = commands.add_parser("smtp", help="(interne) le puits SMTP de la démo, jusqu'à SIGTERM")
    smtp.add_argument("--mailbox", type=Path, required=True)
    smtp.add_argument("--port", type=int, required=True)
    smtp.set_defaults(func=lambda a: serve_smtp(a.mailbox, a.port))
    run = commands.add_parser("scenario", help="(interne) déclenche les DAG de la première nuit")
    run.add_argument("--state", type=Path, required=True)
    run.set_defaults(func=lambda a: scenario(a.state))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
