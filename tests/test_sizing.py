"""Airflow's task slots for one region, from the machine and the region (rpu.config.sizing): the demo
and `rpu region init` (compose's AIRFLOW_PARALLELISM) use the same rule."""

from __future__ import annotations

import os

import pytest

from rpu.config.sizing import airflow_parallelism


@pytest.mark.parametrize(("cores", "establishments", "pool", "slots"), [
    (1, 10, None, 2),     # never fewer than 2: a load and one other task
    (2, 10, None, 3),     # the demo on a laptop: 2 loads at once (pool rpu_db) + 1
    (8, 90, None, 9),     # Île-de-France on 8 cores
    (8, 90, 4, 5),        # ... with RPU_DB_POOL_SLOTS=4
    (16, 3, None, 4),     # 3 establishments never load more than 3 files at once
    (4, 0, None, 5),      # a new region, establishments not declared yet: the pool alone
])
def test_slots_follow_the_pool_the_cores_and_the_region(cores, establishments, pool, slots):
    assert airflow_parallelism(cores, establishments, pool) == slots


def test_the_machine_is_read_when_not_given():
    assert airflow_parallelism(None, 0) == (os.cpu_count() or 1) + 1


def test_region_init_writes_the_slots_in_the_env_file():
    from rpu.cli.region_init import RegionSecrets, render_env

    text = render_env("tst", "Région de test", "./regions/tst", RegionSecrets.generate())
    assert f"AIRFLOW_PARALLELISM={airflow_parallelism(None, 0)}" in text.splitlines()


def test_no_task_of_the_package_defers_so_the_demo_needs_no_triggerer():
    """`rpu demo start` runs no triggerer (170 MiB): a deferred task would wait for ever there.
    Sensors wait in reschedule mode, which needs no triggerer."""
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    dagbag = DagBag(dag_folder=str(Path(__file__).resolve().parent.parent / "dags"))
    assert dagbag.import_errors == {} and "rpu_ingest" in dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            assert not getattr(task, "deferrable", False), (dag_id, task.task_id)
            assert not getattr(task, "start_from_trigger", False), (dag_id, task.task_id)
            if getattr(task, "mode", None) is not None:  # a sensor
                assert task.mode == "reschedule", (dag_id, task.task_id, task.mode)
