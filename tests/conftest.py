"""Session-wide test setup: a private Airflow home, and real services on loopback.

Every service is started here, from a fresh clone, with nothing to install or run first:
PostgreSQL (the one on 127.0.0.1:5432 when it answers, else a private ``pgserver``; or
``RPU_TEST_DATABASE_URL``), an SFTP server and an SMTP sink. Connections reach Airflow the
way they do in production: ``AIRFLOW_CONN_<ID>`` variables, in their JSON form.

Fixtures:
    pg_admin_url         (session)  admin URL of the PostgreSQL server
    database_url         (session)  URL of a throwaway database rpu_test_<random>;
                                    sets AIRFLOW_CONN_RPU_DB
    fresh_database_url   (function) factory: fresh_database_url() -> URL of a new empty database
    db                   (function) URL of a fresh, migrated regional database; sets
                                    AIRFLOW_CONN_RPU_DB (a test module may define its own)
    conn                 (function) an autocommit connection to ``db`` (likewise)
    sftp_server          (session)  running SftpServer; sets AIRFLOW_CONN_RPU_INBOX,
                                    AIRFLOW_CONN_INVS_OUTBOX, AIRFLOW_CONN_ARS_OUTBOX
    clean_sftp           (function) sftp_server, running, with an empty root
    smtp_sink            (session)  running SmtpSink; sets AIRFLOW_CONN_SMTP_DEFAULT
    mailbox              (function) smtp_sink with no message kept
    airflow_home         (session)  the temporary AIRFLOW_HOME
    airflow_db           (session)  Airflow's metadata database, reset once (for dag.test())
    celery_broker_url    (session)  redis://...: the machine's Redis on 127.0.0.1:6379 when it
                                    answers (else a private redis-server), database number 11

Helpers (``from conftest import ...``): ``migrated(url)``, ``migrated_database(admin_url)``,
``write_region_file(folder, ...)``.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# --- Before anything imports Airflow: its configuration is read once, at first import. ---
REPO_ROOT = Path(__file__).resolve().parent.parent
if "airflow" in sys.modules:
    raise RuntimeError(
        "airflow was imported before tests/conftest.py could point AIRFLOW_HOME at a temporary "
        "directory; the tests would use (and reset) a real Airflow home"
    )
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="rpu-test-airflow-home-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.pop("AIRFLOW_CONFIG", None)  # an inherited airflow.cfg must not leak in
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Pinned, so an inherited AIRFLOW__DATABASE__SQL_ALCHEMY_CONN can never be reset.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
    }
)
# Not AIRFLOW__CORE__UNIT_TEST_MODE: it swaps in Airflow's own unit_tests.cfg (LocalExecutor,
# DAGs unpaused at creation, cron *data-interval* timetables), i.e. not the production config.
if str(REPO_ROOT / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "plugins"))

import psycopg  # noqa: E402
import pytest  # noqa: E402

from rpu.sandbox.local_services import (  # noqa: E402
    RedisServer,
    SftpServer,
    SmtpSink,
    create_database,
    drop_database,
    postgres_accepts,
    postgres_airflow_connection,
    redis_accepts,
    start_postgres,
    stop_private_postgres,
)
from rpu.sandbox.openssh_server import SSHD  # noqa: E402

SFTP_CONNECTION_IDS = ("rpu_inbox", "invs_outbox", "ars_outbox")


def _conn_env(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


@contextlib.contextmanager
def airflow_connections(connection: dict, *conn_ids: str) -> Iterator[None]:
    """``AIRFLOW_CONN_<ID>`` of each of ``conn_ids`` set to ``connection`` (its JSON form) until the end."""
    with pytest.MonkeyPatch.context() as mp:
        for conn_id in conn_ids:
            mp.setenv(_conn_env(conn_id), json.dumps(connection))
        yield


@contextlib.contextmanager
def serving(service, *conn_ids: str):
    """``service`` (started) reachable by Airflow as each of ``conn_ids``; stopped at the end."""
    try:
        with airflow_connections(service.airflow_connection(), *conn_ids):
            yield service
    finally:
        service.stop()


# --------------------------------------------------------------------------- Airflow


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """A migrated, empty Airflow metadata database (SQLite in the temporary home)."""
    from airflow.utils import db

    db.resetdb()
    return airflow_home


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``RPU_TEST_DATABASE_URL`` if set (and it must answer), else the server on
    127.0.0.1:5432, else a private pgserver stopped at the end of the session."""
    url = os.environ.get("RPU_TEST_DATABASE_URL")
    if url:
        if not postgres_accepts(url):
            pytest.fail(f"RPU_TEST_DATABASE_URL is set but no PostgreSQL accepts connections there: {url}")
        yield url
        return
    try:
        yield start_postgres(tmp_path_factory.mktemp("postgres") / "data")
    finally:
        stop_private_postgres()


@pytest.fixture(scope="session")
def database_url(pg_admin_url: str) -> Iterator[str]:
    """A throwaway database for the whole session, reachable by Airflow as ``rpu_db``."""
    name = f"rpu_test_{secrets.token_hex(4)}"
    url = create_database(pg_admin_url, name)
    try:
        with airflow_connections(postgres_airflow_connection(url), "rpu_db"):
            yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def fresh_database_url(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates another empty database; all are dropped after the test."""
    names: list[str] = []

    def make() -> str:
        name = f"rpu_test_{secrets.token_hex(4)}"
        names.append(name)
        return create_database(pg_admin_url, name)

    yield make
    for name in names:
        drop_database(pg_admin_url, name)


@contextlib.contextmanager
def migrated_database(admin_url: str, prefix: str = "rpu_test_") -> Iterator[str]:
    """A new regional database (``prefix`` + random), migrated, for a module's tests; dropped at the end."""
    name = prefix + secrets.token_hex(4)
    url = create_database(admin_url, name)
    try:
        yield migrated(url)
    finally:
        drop_database(admin_url, name)


def migrated(url: str) -> str:
    """The regional schema created in the database at ``url`` (its migrations); returns ``url``."""
    from rpu.store.db import migrate

    with psycopg.connect(url, autocommit=True) as connection:
        migrate(connection)
    return url


@pytest.fixture
def db(fresh_database_url, monkeypatch) -> str:
    """A fresh, migrated regional database, which the DAGs reach as ``rpu_db``."""
    url = migrated(fresh_database_url())
    monkeypatch.setenv(_conn_env("rpu_db"), json.dumps(postgres_airflow_connection(url)))
    return url


@pytest.fixture
def conn(db):
    """An autocommit connection to the test's regional database."""
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection


# The visits held in rpu, keyed as visit_timeliness keys them (each day is held by one file, so
# the rank ordered by file then record is the rank within the file that holds it).
_TIMELINESS_DRIFT = """
WITH held AS (
    SELECT r.finess, r.ordre, r.entree, r.received_file_id,
           hashtextextended(concat_ws('|', coalesce(r.naissance::text, ''), coalesce(r.sexe, '')), 0) AS person,
           row_number() OVER (PARTITION BY r.finess, r.ordre, r.entree, r.naissance, r.sexe
                              ORDER BY r.received_file_id, r.record_no) AS rank
    FROM rpu r
)
SELECT (SELECT count(*) FROM visit_timeliness t WHERE NOT EXISTS (
            SELECT 1 FROM held h WHERE (h.finess, h.ordre, h.entree, h.person, h.rank)
                                       = (t.finess, t.ordre, t.entree, t.person, t.rank))),
       (SELECT count(*) FROM held h WHERE NOT EXISTS (
            SELECT 1 FROM visit_timeliness t WHERE (h.finess, h.ordre, h.entree, h.person, h.rank)
                                                   = (t.finess, t.ordre, t.entree, t.person, t.rank))),
       (SELECT count(*) FROM held h JOIN visit_timeliness t
            ON (h.finess, h.ordre, h.entree, h.person, h.rank) = (t.finess, t.ordre, t.entree, t.person, t.rank)
        WHERE t.last_file_id <> h.received_file_id)
"""


def timeliness_drift(connection: psycopg.Connection) -> tuple[int, int, int]:
    """(rows of visit_timeliness for a visit no longer held, visits held without a row, rows
    whose last file is not the one holding the visit): (0, 0, 0) when both tables agree."""
    return tuple(connection.execute(_TIMELINESS_DRIFT).fetchone())


# --------------------------------------------------------------------------- the region file


def write_region_file(folder: Path, monkeypatch: pytest.MonkeyPatch | None = None, **fields):
    """``folder/region.toml`` rendered from ``fields`` (the arguments of rpu.config.region.render;
    a test region TST with one operator address unless told otherwise), then loaded; with
    ``monkeypatch``, also the region of ``RPU_REGION_CONFIG`` for the test."""
    from rpu.config import region as region_config

    path = Path(folder) / "region.toml"
    fields = {"code": "TST", "name": "Région de test", "operator_emails": ["oru@example.org"], **fields}
    path.write_text(region_config.render(**fields), encoding="utf-8")
    if monkeypatch is not None:
        monkeypatch.setenv("RPU_REGION_CONFIG", str(path))
    return region_config.load(path)


# --------------------------------------------------------------------------- SFTP


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    root = tmp_path_factory.mktemp("sftp-root")
    with serving(SftpServer(root, username="rpu", password=secrets.token_urlsafe(12)).start(),
                 *SFTP_CONNECTION_IDS) as server:
        yield server


@pytest.fixture
def clean_sftp(sftp_server: SftpServer) -> SftpServer:
    """The SFTP server, running (a previous test may have stopped it) with an empty root."""
    sftp_server.start()
    for entry in sftp_server.root.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return sftp_server


# --------------------------------------------------------------------------- SMTP


@pytest.fixture(scope="session")
def smtp_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpSink]:
    # One sink for the whole session: SmtpNotifier caches its hook (and so the port).
    with serving(SmtpSink(mailbox_dir=tmp_path_factory.mktemp("mailbox")).start(), "smtp_default") as sink:
        yield sink


@pytest.fixture
def mailbox(smtp_sink: SmtpSink) -> SmtpSink:
    """The SMTP sink with no message kept from earlier tests."""
    smtp_sink.clear()
    return smtp_sink


# --------------------------------------------------------------------------- Redis

# The tests' own Redis database number (each Celery test also has its own queue name), apart
# from the demo's and from anything else using the machine's Redis.
TEST_REDIS_DB = 11


@pytest.fixture(scope="session")
def celery_broker_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if redis_accepts():
        yield f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url(TEST_REDIS_DB)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openssh_sshd() -> str:
    """OpenSSH's sshd (the deployed SFTP server's own), installed when missing like docker-compose."""
    if Path(SSHD).exists():
        return SSHD
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server"]
    if subprocess.run(install, capture_output=True, env=env, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        subprocess.run(install, capture_output=True, env=env, timeout=600, check=True)
    return SSHD


# --------------------------------------------------------------------------- the demo stack


def demo_env(state: Path, port: int) -> dict[str, str]:
    """The environment ``make run`` gives ``rpu demo``, with its state and port for this session."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RPU_"))}
    env.update({"RPU_DEMO_DIR": str(state), "RPU_DEMO_PORT": str(port), "PYTHONPATH": str(REPO_ROOT / "plugins")})
    return env


def rpu_demo(action: str, env: dict[str, str], timeout: float = 300, *args: str):
    """``python -m rpu.sandbox.demo ACTION`` as a child process, as ``make run`` / ``make stop`` run it."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "rpu.sandbox.demo", action, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT)


@pytest.fixture(scope="session")
def demo_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``rpu demo start`` once for the session (the demo and browser tests): state in a temporary
    directory, its own databases; stopped and purged at the end, even on failure."""
    import time

    from rpu.sandbox.demo_state import DemoState
    from rpu.sandbox.processes import free_port

    state_root = tmp_path_factory.mktemp("demo") / "state"
    port = free_port()
    env = demo_env(state_root, port)
    began = time.monotonic()
    started = rpu_demo("start", env)
    seconds = time.monotonic() - began
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = DemoState(state_root)
        yield {"state": state, "env": env, "port": port, "out": started.stdout, "seconds": seconds,
               "started_at": began, "config": json.loads(state.config_path.read_text()),
               "passwords": json.loads(state.passwords_path.read_text())}
    finally:
        stopped = rpu_demo("stop", env, timeout=120)
        print(stopped.stdout, stopped.stderr)
        for log in sorted((state_root / "logs").glob("*.log")) if state_root.exists() else []:
            print(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-10:]))
        purge = rpu_demo("stop", env, 120, "--purge")
        print(purge.stdout, purge.stderr)
