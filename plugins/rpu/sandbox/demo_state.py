"""The demo's state directory (``var/demo/`` or ``$RPU_DEMO_DIR``): its files, its lock, the
processes it recorded, its ports and secrets (drawn at the first start), its databases' names."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from rpu.sandbox.airflow_site import JWT_SECRET_BYTES, REPO_ROOT
from rpu.sandbox.processes import Process, free_port, port_free

TIMEZONE = "Europe/Paris"


DEFAULT_PORT = 8080




def state_dir() -> Path:
    return Path(os.environ.get("RPU_DEMO_DIR") or REPO_ROOT / "var" / "demo").resolve()


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


def load_or_create_config(state: DemoState) -> dict:
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


def database_names(state: DemoState) -> tuple[str, str]:
    """The regional and Airflow databases: ``rpu_demo`` and ``rpu_demo_airflow`` for the
    repository's demo, suffixed for another state directory (two demos never share one)."""
    if state.root == (REPO_ROOT / "var" / "demo").resolve():
        return "rpu_demo", "rpu_demo_airflow"
    import hashlib

    suffix = hashlib.sha1(str(state.root).encode()).hexdigest()[:8]
    return f"rpu_demo_{suffix}", f"rpu_demo_{suffix}_airflow"
