"""The benchmarks stay runnable: each runs here on a small input, against the suite's PostgreSQL,
with its own checks (the night's: every file loaded once, the days replaced). Their figures mean
nothing at this size and are not looked at; README.md quotes full-size runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _bench(script: str, *args: str, admin_url: str) -> str:
    completed = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                               text=True, timeout=600, env={**os.environ, "RPU_BENCH_ADMIN_URL": admin_url})
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def test_the_per_core_benchmark_runs(pg_admin_url):
    out = _bench("ingest.py", "--visits", "3000", "--repeat", "1", admin_url=pg_admin_url)
    for step in ("read", "validate", "load"):
        assert f"\n  {step} " in out, out
    assert "the timeliness record" in out


def test_the_night_benchmark_runs_a_second_night_with_1_and_2_loaders(pg_admin_url, openssh_sshd):
    out = _bench("ingest_night.py", "--establishments", "3", "--visits-per-day", "20", "--workers", "1,2",
                 "--second-night", "--archived-nights", "2", admin_url=pg_admin_url)
    assert "SFTP server: OpenSSH sshd, internal-sftp (as deployed); sessions: one per establishment" in out
    assert out.count(" wall, 3 files, ") == 2 and out.count("18 days replaced") == 2, out
    assert out.count("the day's listing that swept the archive folders") == 2
    assert out.count("where the cores went (CPU s): loaders ") == 2  # its PostgreSQL is local
    assert "speedup 1 -> 2 loaders" in out


def test_the_night_benchmark_runs_on_the_python_sftp_server_with_a_session_per_loader(pg_admin_url):
    out = _bench("ingest_night.py", "--establishments", "3", "--visits-per-day", "20", "--workers", "1,2",
                 "--sftp-server", "python", "--sessions", "loader", admin_url=pg_admin_url)
    assert "SFTP server: Python (asyncssh, the tests'); sessions: one per loader" in out
    assert out.count(" wall, 3 files, ") == 2 and out.count("0 days replaced") == 2, out
    assert "speedup 1 -> 2 loaders" in out


def test_the_night_benchmark_runs_through_airflow_with_1_and_2_pool_slots(pg_admin_url, openssh_sshd):
    out = _bench("ingest_night.py", "--airflow", "--establishments", "3", "--visits-per-day", "20",
                 "--workers", "1,2", admin_url=pg_admin_url)
    for slots in (1, 2):
        assert f"Airflow, pool rpu_db of {slots} slot(s): run " in out, out
    assert out.count("of which the 3 loads ") == 2, out
    assert "speedup 1 -> 2 slots (the run, through Airflow)" in out
