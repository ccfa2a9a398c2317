"""How many Airflow tasks one region runs at once (``[core] parallelism``), from the machine and
the region: the demo (``rpu demo start``) and the compose stack (``AIRFLOW_PARALLELISM`` in the
region's ``.env``, written by ``rpu region init``) use the same rule.

With the LocalExecutor each slot is a worker process that stays up (40 to 60 MiB once it has run
a task): Airflow's default of 32 slots costs a laptop more than a gigabyte for nothing, since at
most a handful of our tasks can run at once. Six DAGs, one run at a time each, one task at a time
in each: the ingest every 15 minutes, and in the morning the daily sends, the ARS export, the
monthly ATIH flow and the absence monitor (whose wait for the cut-off is a sensor in reschedule
mode: it holds no slot while it waits). In a small region each of them takes seconds, so they
rarely overlap: 2 slots (the ingest and one other flow; a third waits a few seconds in the
queue). In a large one (more than 30 establishments) the night's ingest and the morning flows
last minutes and do overlap: up to 6. Our tasks wait on PostgreSQL and SFTP as much as they
compute, so two slots per core, never fewer than 2.
"""

from __future__ import annotations

import os

SMALL_REGION = 30        # establishments
SLOTS_SMALL_REGION = 2
SLOTS_LARGE_REGION = 6   # every flow of the package at once
SLOTS_PER_CORE = 2
MIN_SLOTS = 2            # the ingest and one other flow


def airflow_parallelism(cores: int | None = None, establishments: int = 0) -> int:
    """Task slots for one region's Airflow: ``[core] parallelism`` (LocalExecutor workers)."""
    cores = cores or os.cpu_count() or 1
    overlapping = SLOTS_SMALL_REGION if establishments <= SMALL_REGION else SLOTS_LARGE_REGION
    return max(MIN_SLOTS, min(overlapping, SLOTS_PER_CORE * cores))
