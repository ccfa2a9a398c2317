"""Formats: OSCOUR and SYRIUS read, validated and written, the rules and their French texts.

No database, no Airflow: everything here works on files and values.
"""
