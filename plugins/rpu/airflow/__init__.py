"""The Airflow glue: task bodies, connections, alerts, pools and access rights.

The only package of ``rpu`` that imports Airflow.
"""
