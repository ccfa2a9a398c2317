"""One Airflow deployment on this machine, as the demo (``rpu demo start``) and the end-to-end
tests (``tests/test_e2e_airflow.py``, ``tests/test_celery.py``) run it: its environment,
``db migrate``, roles and accounts, its components as detached processes, its health."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from rpu.airflow.pools import db_pool_slots, pool_set_command
from rpu.sandbox.demo_region import N_ESTABLISHMENTS
from rpu.sandbox.processes import Process, spawn, tail

REPO_ROOT = Path(__file__).resolve().parents[3]


AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
# The demo's: no triggerer (tests/test_sizing.py checks that no task of the package defers).
DEMO_COMPONENTS = ("scheduler", "dag-processor", "api-server")
_HEALTH_PART = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}


JWT_SECRET_BYTES = 48  # 64 characters, as `rpu region init` draws it


def task_slots(establishments: int) -> int:
    """Task slots for the demo: the pool rpu_db's size (the loads at once) plus one (rpu.config.sizing)."""
    from rpu.config.sizing import airflow_parallelism

    return airflow_parallelism(os.cpu_count(), establishments, db_pool_slots())


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
    parallelism: int = field(default_factory=lambda: task_slots(N_ESTABLISHMENTS))
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
