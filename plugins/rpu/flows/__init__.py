"""Use cases: what each DAG does, from SFTP inbox to each destination. No Airflow here.
"""
