"""The services the demo runs besides Airflow: its PostgreSQL (the machine's or a private one),
its databases, Redis for Celery, the SFTP server and the SMTP sink (each a process of its own,
``python -m rpu.sandbox.demo sftp|smtp``), and the Airflow site wired to them all."""

from __future__ import annotations

import shutil
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

from rpu.sandbox.airflow_site import DEMO_COMPONENTS, AirflowSite, CeleryWorkers, sqlalchemy_url, task_slots
from rpu.sandbox.demo_region import ARS_DIR, ATIH_DIR, INBOX_DIR, INVS_DIR, demo_establishments
from rpu.sandbox.demo_state import DemoState, database_names
from rpu.sandbox.processes import free_port, spawn, wait_for_port


def postgres_admin_url(state: DemoState, config: dict, say) -> str:
    """Admin URL of the demo's PostgreSQL server: the one chosen at the first start."""
    from rpu.sandbox.local_services import LOCAL_POSTGRES_URL, port_open, postgres_accepts

    mode = config.get("postgres")
    if mode is None:
        mode = "local" if port_open(LOCAL_POSTGRES_URL) and postgres_accepts(LOCAL_POSTGRES_URL) else "pgserver"
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


def ensure_database(admin_url: str, name: str) -> str:
    """The URL of database ``name`` on the demo's server, created if it is not there yet."""
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
    from rpu.sandbox.sftp_server import load_or_create_host_key

    key = load_or_create_host_key(state.root / "sftp-key")
    return key.export_public_key("openssh").decode().strip()


def site_for(state: DemoState, config: dict, admin_url: str) -> AirflowSite:
    from rpu.sandbox.local_services import postgres_airflow_connection

    regional_name, airflow_name = database_names(state)
    regional = ensure_database(admin_url, regional_name)
    metadata = ensure_database(admin_url, airflow_name)
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
                       parallelism=task_slots(len(demo_establishments())), airflow_components=DEMO_COMPONENTS,
                       jwt_secret=config["secrets"]["jwt"], api_secret_key=config["secrets"]["api"], celery=celery)


DEMO_REDIS_DB = 1


def start_redis(state: DemoState, config: dict, running: dict, env: Mapping[str, str], say) -> None:
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
