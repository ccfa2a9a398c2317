"""How many Airflow tasks one region runs at once (``[core] parallelism``), from the machine and
the region: the demo (``rpu demo start``) and the compose stack (``AIRFLOW_PARALLELISM`` in the
region's ``.env``, written by ``rpu region init``) use the same rule.

With the LocalExecutor each slot is a worker process that stays up (about 60 MiB once it has run
a task): Airflow's default of 32 slots costs a laptop more than a gigabyte for nothing. What can
usefully run at once in this package:

- the per-establishment tasks (the ``load`` of ``rpu_ingest``, the builds of ``rpu_invs_daily``
  and ``rpu_atih_monthly``, mapped one per establishment) take a slot of the pool ``rpu_db``,
  as many as the machine has cores (``RPU_DB_POOL_SLOTS``), and never more than there are
  establishments;
- plus one slot for everything else: the listing and summary tasks around them, the ARS export,
  the absence monitor (whose wait for the cut-off is a sensor in reschedule mode: it holds no
  slot while it waits), a replay the ARS asked for.

More slots than that would only be idle workers; never fewer than 2 (a load and one other task).
"""

from __future__ import annotations

import os

OTHER_TASKS = 1   # one slot beside the pool's: listing, summary, export, monitor, replay
MIN_SLOTS = 2


def airflow_parallelism(cores: int | None = None, establishments: int = 0, db_pool_slots: int | None = None) -> int:
    """Task slots for one region's Airflow: ``[core] parallelism`` (LocalExecutor workers).
    ``establishments`` 0: not known yet (a new region), the pool's size counts alone."""
    cores = cores or os.cpu_count() or 1
    pool = db_pool_slots or cores
    per_establishment = min(pool, establishments) if establishments else pool
    return max(MIN_SLOTS, per_establishment + OTHER_TASKS)
