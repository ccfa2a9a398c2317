"""The regional PostgreSQL store: connections, SQL files and versioned migrations.

SQL lives in ``include/sql/`` (``migrations/NNN_name.sql`` applied in order, ``queries/*.sql``
for the larger queries); Python only passes parameters.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import psycopg

SQL_DIR = Path(os.environ.get("RPU_SQL_DIR", Path(__file__).resolve().parents[3] / "include" / "sql"))
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# Serialises concurrent `rpu db migrate` runs (any constant shared by all of them).
_MIGRATION_LOCK = 0x5250550001


class StoreError(Exception):
    """A problem with the regional database that an operator must act on."""


def database_url(explicit: str | None = None) -> str:
    url = explicit or os.environ.get("RPU_DATABASE_URL")
    if not url:
        raise StoreError("Aucune base régionale : passez --database URL ou définissez RPU_DATABASE_URL.")
    return url


def connect(url: str | None = None, **kwargs) -> psycopg.Connection:
    return psycopg.connect(database_url(url), **kwargs)


@cache
def query(name: str) -> str:
    """The text of ``include/sql/queries/<name>.sql``."""
    return (SQL_DIR / "queries" / f"{name}.sql").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def known_migrations() -> list[Migration]:
    migrations = []
    for path in sorted((SQL_DIR / "migrations").glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise StoreError(f"Nom de migration invalide : {path.name} (attendu NNN_nom.sql).")
        migrations.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise StoreError("Deux migrations portent le même numéro de version.")
    return migrations


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply every migration not yet applied, in one transaction (all or none), and return them.

    Idempotent; refuses a database whose schema is newer than this code (a downgrade would
    otherwise run old code on a schema it does not know) and one whose applied migrations were
    edited since (their checksum differs)."""
    migrations = known_migrations()
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum char(64) NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = dict(conn.execute("SELECT version, checksum FROM schema_migration").fetchall())
        newest_known = max((m.version for m in migrations), default=0)
        if applied and max(applied) > newest_known:
            raise StoreError(
                f"La base est au schéma {max(applied)}, plus récent que ce code (schéma {newest_known}) : "
                "mettez à jour le concentrateur avant de l'utiliser sur cette base."
            )
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise StoreError(
                        f"La migration {migration.path.name} a été modifiée après son application : une "
                        "migration publiée ne se modifie pas, ajoutez-en une nouvelle.")
                continue
            with conn.transaction():
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migration (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied_now.append(migration)
    return applied_now


def schema_version(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT CASE WHEN to_regclass('schema_migration') IS NULL THEN 0"
        " ELSE (SELECT coalesce(max(version), 0) FROM schema_migration) END"
    ).fetchone()
    return int(row[0])
