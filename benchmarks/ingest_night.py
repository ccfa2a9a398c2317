"""A night of a large region in one ingest run: N establishments, one 7-day file each.

    .venv/bin/python benchmarks/ingest_night.py                     # 100 establishments x ~500 visits/day
    .venv/bin/python benchmarks/ingest_night.py --establishments 20

A real SFTP server (asyncssh, loopback) and a fresh database on the local PostgreSQL
(RPU_BENCH_ADMIN_URL); the same ingest code as the rpu_ingest DAG, over one paramiko SFTP
session. Prints the run's time and where it went.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plugins"))

import paramiko  # noqa: E402
import psycopg  # noqa: E402

from rpu import region as region_config  # noqa: E402
from rpu.generator import demo_establishments, write_oscour_file  # noqa: E402
from rpu.ingest import SftpInbox, run_ingest  # noqa: E402
from rpu.local_services import SftpServer, create_database, drop_database  # noqa: E402
from rpu.store import migrate  # noqa: E402

ADMIN_URL = os.environ.get("RPU_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--establishments", type=int, default=100)
    parser.add_argument("--visits-per-day", type=float, default=500)
    args = parser.parse_args()

    establishments = demo_establishments(args.establishments, seed=11)
    end = date(2026, 11, 26)
    with tempfile.TemporaryDirectory(prefix="rpu-night-") as workdir:
        root = Path(workdir) / "sftp"
        visits = 0
        for i, establishment in enumerate(establishments):
            depot = root / establishment["finess"] / "depot"
            depot.mkdir(parents=True)
            visits += write_oscour_file(depot / f"RPU_{establishment['finess']}.xml", establishment["finess"], 0,
                                        end - timedelta(days=6), end, visits_per_day=args.visits_per_day, seed=i)
            stamp = time.time() - 600
            os.utime(depot / f"RPU_{establishment['finess']}.xml", (stamp, stamp))
        region = region_config.parse({
            "region": {"code": "BENCH", "name": "Banc d'essai", "operator_emails": ["oru@localhost"]},
            "establishment": [{"finess": e["finess"], "ordre": 0, "name": e["name"], "status": "live"}
                              for e in establishments],
        })
        name = f"rpu_night_{uuid.uuid4().hex[:8]}"
        url = create_database(ADMIN_URL, name)
        server = SftpServer(root, username="rpu", password="banc-essai").start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                migrate(conn)
            transport = paramiko.Transport(("127.0.0.1", server.port))
            transport.connect(username="rpu", password="banc-essai")
            sftp = paramiko.SFTPClient.from_transport(transport)
            with psycopg.connect(url) as conn:
                started = time.perf_counter()
                summary = run_ingest(conn, SftpInbox(sftp), region)
                seconds = time.perf_counter() - started
            transport.close()
        finally:
            server.stop()
            drop_database(ADMIN_URL, name)

    totals = summary.totals()
    print(f"{args.establishments} establishments, {visits:,} visits in their files")
    print(f"one run: {seconds:.1f} s, {totals['loaded']} files loaded, {totals['visits_loaded']:,} visits "
          f"({totals['visits_loaded'] / seconds:,.0f} visits/s)")
    for step, spent in summary.timings.items():
        print(f"  {step:<10}{spent:>8.1f} s  {100 * spent / seconds:>5.1f} %")


if __name__ == "__main__":
    main()
