"""Regional RPU concentrator: the domain package.

One folder per layer, each importing only the ones under it (ARCHITECTURE.md):
``formats`` (OSCOUR and SYRIUS), ``config`` (the region file), ``store`` (PostgreSQL),
``flows`` (the use cases), ``airflow`` (the only package importing Airflow), ``sandbox``
(the demo and test servers) and ``cli`` (the ``rpu`` command).
"""

__version__ = "0.1.0"
