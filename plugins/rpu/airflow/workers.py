"""Celery workers of one region: how a worker process is started and named.

In the compose stack each ``airflow-worker`` container is its own host, and Airflow records
its hostname in every task instance it runs. On one machine (``rpu demo start --executor
celery``, the tests) several workers share the machine's hostname: each gets its own name in
``RPU_WORKER_HOSTNAME``, and Airflow is told to take the hostname from there
(``[core] hostname_callable = rpu.airflow.workers.hostname``), so the task instances still say which
worker ran them.

No Airflow import here: :func:`hostname` is called by Airflow's task runner.
"""

from __future__ import annotations

import os
import socket

HOSTNAME_CALLABLE = "rpu.airflow.workers.hostname"


def hostname() -> str:
    """``RPU_WORKER_HOSTNAME`` when set (a worker among several on one machine), else the FQDN."""
    return os.environ.get("RPU_WORKER_HOSTNAME") or socket.getfqdn()


def worker_command(airflow: str, name: str, queue: str, concurrency: int) -> list[str]:
    """``airflow celery worker`` named ``name`` (Celery node ``name@<host>``), serving ``queue``.

    Without its log server (the task logs are files on this machine, read by the API server
    directly; several workers would otherwise fight over port 8793), gossip and mingle (workers
    of other regions or test runs on the same Redis never talk to these)."""
    return [airflow, "celery", "worker", "--celery-hostname", f"{name}@{socket.gethostname()}",
            "--queues", queue, "--concurrency", str(concurrency), "--skip-serve-logs",
            "--without-gossip", "--without-mingle"]


def worker_env(name: str) -> dict[str, str]:
    """The environment that names one worker among several on this machine."""
    return {"RPU_WORKER_HOSTNAME": f"{name}.{socket.gethostname()}",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE}
