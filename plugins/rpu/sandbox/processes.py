"""Detached child processes of the demo and of the end-to-end tests: each the leader of its
own process group, told apart from a later process with the same PID by its start time in
``/proc/<pid>/stat``; started, stopped (SIGTERM, then SIGKILL), waited for on a port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


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


def stop_pgserver(data_dir: Path) -> None:
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
