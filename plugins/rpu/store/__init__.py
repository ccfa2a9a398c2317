"""The regional store: PostgreSQL through psycopg 3, SQL in ``include/sql/``.

Migrations, the loader (day authority), the journals of sends, the registry of establishments.
"""
