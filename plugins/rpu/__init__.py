"""Regional RPU concentrator: the domain package.

Everything here is importable without Airflow: reading, validating and writing OSCOUR and
SYRIUS files, the regional store, the use cases each DAG calls and the ``rpu`` command.
Only ``rpu.airflow_glue`` imports Airflow.
"""

__version__ = "0.1.0"
