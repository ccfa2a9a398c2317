"""Real network services on loopback, for the tests and the one-command local demo.

- :class:`SftpServer` (:mod:`rpu.sandbox.sftp_server`): the SFTP server where establishments
  drop their files (and where the national and regional destinations pick theirs up), chrooted
  to a directory, one user with a password, a pinned host key.
- :class:`SmtpSink` (:mod:`rpu.sandbox.smtp_sink`): an SMTP server that accepts every message,
  keeps it in memory and, for the demo, writes it as an ``.eml`` file into a mailbox directory
  the operator reads.
- :func:`start_postgres`: the local PostgreSQL on 127.0.0.1:5432 when there is one, else a
  private server started with ``pgserver``; :func:`create_database` / :func:`drop_database`.

Each ``airflow_connection()`` returns the JSON form of an ``AIRFLOW_CONN_<ID>`` variable
(JSON rather than URI so that boolean extras stay booleans). No Airflow import here.
"""

from __future__ import annotations

import atexit
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from rpu.sandbox.sftp_server import LOOPBACK, SftpServer
from rpu.sandbox.smtp_sink import ReceivedMail, SmtpSink

# --------------------------------------------------------------------------- PostgreSQL

LOCAL_POSTGRES_URL = f"postgresql://postgres@{LOOPBACK}:5432/postgres"
_private_servers: list[Any] = []  # pgserver handles started by start_postgres()


def postgres_accepts(url: str, timeout: int = 2) -> bool:
    """True when a PostgreSQL server accepts a connection at ``url``."""
    try:
        with psycopg.connect(url, connect_timeout=timeout):
            return True
    except psycopg.OperationalError:
        return False


def start_postgres(data_dir: str | os.PathLike[str], *, existing_url: str | None = LOCAL_POSTGRES_URL) -> str:
    """Return the URL of a PostgreSQL server to use as administrator.

    ``existing_url`` (by default the postgres user on 127.0.0.1:5432) when it accepts
    connections; otherwise a private server started by ``pgserver`` with its data in
    ``data_dir``, listening on a Unix socket only, stopped by :func:`stop_private_postgres`
    or, failing that, when this process exits.
    """
    if existing_url and port_open(existing_url) and postgres_accepts(existing_url):
        return existing_url
    with warnings.catch_warnings():
        # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset (containers, CI).
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # only needed on a machine without a PostgreSQL server

    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    _private_servers.append(server)
    return server.get_uri()


def stop_private_postgres() -> None:
    """Stop the servers :func:`start_postgres` started (their data stays).

    pgserver otherwise stops them from an ``atexit`` hook that logs; under pytest that
    logging goes to already-closed capture streams and prints "--- Logging error ---".
    """
    while _private_servers:
        server = _private_servers.pop()
        server.cleanup()
        atexit.unregister(server._cleanup)


def database_url(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` (host, port, user and query unchanged)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database ``name``; return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, closing any session still connected to it."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_airflow_connection(url: str) -> dict[str, Any]:
    """JSON form of an Airflow ``postgres`` connection (e.g. ``rpu_db``) for ``url``.

    Works for a Unix-socket URL too (``?host=/socket/dir``): the socket directory becomes the
    connection's host, which psycopg accepts as such.
    """
    params = psycopg.conninfo.conninfo_to_dict(url)
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        "host": params.get("host") or "localhost",
        "port": int(params.get("port") or 5432),
        "login": params.get("user") or "postgres",
        "schema": params.get("dbname") or "postgres",
    }
    if params.get("password"):
        conn["password"] = params["password"]
    return conn


def port_open(url: str) -> bool:
    """Cheap TCP check before trying a PostgreSQL login (Unix-socket URLs are just tried)."""
    params = psycopg.conninfo.conninfo_to_dict(url)
    host = str(params.get("host") or "")
    if not host or host.startswith("/"):
        return True
    try:
        with socket.create_connection((host, int(params.get("port") or 5432)), timeout=1):
            return True
    except OSError:
        return False


__all__ = [
    "LOCAL_POSTGRES_URL",
    "ReceivedMail",
    "SftpServer",
    "SmtpSink",
    "create_database",
    "database_url",
    "drop_database",
    "postgres_accepts",
    "postgres_airflow_connection",
    "start_postgres",
    "stop_private_postgres",
]


# --------------------------------------------------------------------------- Redis (Celery's broker)

LOCAL_REDIS = (LOOPBACK, 6379)


def redis_accepts(host: str = LOOPBACK, port: int = 6379, timeout: float = 2) -> bool:
    """Whether a Redis server answers PING there (RESP, no client library needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A private ``redis-server`` (the Debian package's binary) on a free loopback port, no
    persistence: for a machine whose own Redis (127.0.0.1:6379) does not answer."""

    def __init__(self, work_dir: str | os.PathLike[str], binary: str = "redis-server"):
        self.work_dir = Path(work_dir)
        self.binary = binary
        self.port = 0
        self._process = None

    def start(self, timeout: float = 20) -> RedisServer:
        import shutil
        import subprocess

        executable = shutil.which(self.binary)
        if executable is None:
            raise RuntimeError("Redis ne répond pas sur 127.0.0.1:6379 et redis-server est introuvable "
                               "(apt-get install redis-server)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind((LOOPBACK, 0))
            self.port = probe.getsockname()[1]
        self._process = subprocess.Popen(
            [executable, "--bind", LOOPBACK, "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.work_dir)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not redis_accepts(LOOPBACK, self.port, timeout=0.5):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server n'a pas démarré sur {LOOPBACK}:{self.port}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except Exception:
                self._process.kill()
        self._process = None

    def url(self, db: int = 0) -> str:
        return f"redis://{LOOPBACK}:{self.port}/{db}"
