"""The demo's region: its ten establishments and their roles in the scenario, its region file,
and its data (ten days of history in the regional database, last night's files in the SFTP
depots)."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from datetime import time as clock
from pathlib import Path
from zoneinfo import ZoneInfo

INBOX_DIR, INVS_DIR, ARS_DIR, ATIH_DIR = "etablissements", "spf", "ars", "atih"


N_ESTABLISHMENTS = 10
SILENT_DAYS = 9
HISTORY_DAYS = 10


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
    from rpu.sandbox.population import RESIDENCES_67

    codes = sorted({cp for cp, _name, _weight in RESIDENCES_67})
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
