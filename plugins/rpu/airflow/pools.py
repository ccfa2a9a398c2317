"""The Airflow pool that bounds how many tasks work the regional database at once.

Every per-establishment task that loads into or extracts from the regional database (the
``load`` of ``rpu_ingest``, the builds of ``rpu_invs_daily`` and ``rpu_atih_monthly``) takes a
slot of the pool ``rpu_db``. Its size comes from ``RPU_DB_POOL_SLOTS`` (the region's ``.env``),
by default the number of cores of the machine that creates it: a load is CPU-bound (parsing,
validation) and PostgreSQL needs its share too. Whatever the executor (one machine or Celery
workers on several), the pool is the one bound, kept by the scheduler.

No Airflow import here: the pool is created with Airflow's command line (``airflow pools set``)
by whoever deploys (``airflow-init`` in the compose stack, ``rpu demo start``, the tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

DB_POOL = "rpu_db"
DB_POOL_DESCRIPTION = "Chargements et extractions simultanés dans la base régionale (RPU_DB_POOL_SLOTS)"


def db_pool_slots(environ: Mapping[str, str] = os.environ) -> int:
    """``RPU_DB_POOL_SLOTS`` when set (a positive integer), else the number of cores."""
    value = (environ.get("RPU_DB_POOL_SLOTS") or "").strip()
    if value:
        slots = int(value)
        if slots < 1:
            raise ValueError(f"RPU_DB_POOL_SLOTS doit être un entier positif, pas {value!r}")
        return slots
    return os.cpu_count() or 1


def pool_set_command(airflow: str = "airflow", slots: int | None = None) -> list[str]:
    """The command that creates (or resizes) the pool."""
    return [airflow, "pools", "set", DB_POOL, str(slots or db_pool_slots()), DB_POOL_DESCRIPTION]
