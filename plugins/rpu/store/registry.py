"""The establishment registry: the region configuration brought into the database.

The configuration file declares establishments; ``sync`` makes the database match it and
records every status change with its date and author, so that "when did this establishment go
live, and who decided it" always has an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from rpu.config.region import EstablishmentConfig, Region
from rpu.store.db import query

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StatusChange:
    finess: str
    ordre: int
    old_status: str | None
    new_status: str

    def __str__(self) -> str:
        old = self.old_status or "(nouveau)"
        return f"{self.finess}/{self.ordre} : {old} → {self.new_status}"


def sync(conn: psycopg.Connection, region: Region, author: str,
         may_go_live: Callable[[str, int], bool] | None = None, refused: list[str] | None = None) -> list[StatusChange]:
    """Insert or update every declared establishment; an establishment the configuration no
    longer declares becomes ``inactive`` (never deleted: its history stays).

    ``may_go_live(finess, ordre)`` guards the switch from ``parallel`` to ``live`` written in
    the file by hand: refused (and listed in ``refused``) until the establishment has its 7
    correct days, so that the file cannot bypass ``rpu establishments promote``."""
    changes: list[StatusChange] = []
    with conn.transaction():
        current = {(row[0], row[1]): row[2] for row in conn.execute("SELECT finess, ordre, status FROM establishment")}
        for establishment in region.establishments:
            old = current.pop(establishment.key, None)
            row = _row(establishment)
            if old == "parallel" and establishment.status == "live" and may_go_live \
                    and not may_go_live(establishment.finess, establishment.ordre):
                row["status"] = "parallel"
                message = (f"{establishment.finess}/{establishment.ordre} : passage en production refusé (moins de "
                           "7 jours corrects consécutifs) ; utilisez rpu establishments promote --force --reason")
                log.warning("%s", message)
                if refused is not None:
                    refused.append(message)
            conn.execute(query("upsert_establishment"), row)
            if old != row["status"]:
                changes.append(_record_change(conn, establishment.finess, establishment.ordre, old,
                                              row["status"], author, "configuration de la région"))
        for (finess, ordre), old in current.items():
            if old != "inactive":
                conn.execute("UPDATE establishment SET status = 'inactive', updated_at = now()"
                             " WHERE finess = %s AND ordre = %s", (finess, ordre))
                changes.append(_record_change(conn, finess, ordre, old, "inactive", author,
                                              "retiré de la configuration de la région"))
    return changes


def set_status(conn: psycopg.Connection, finess: str, ordre: int, new_status: str, author: str,
               reason: str | None = None) -> StatusChange:
    with conn.transaction():
        row = conn.execute("SELECT status FROM establishment WHERE finess = %s AND ordre = %s FOR UPDATE",
                           (finess, ordre)).fetchone()
        if row is None:
            raise LookupError(f"Établissement inconnu : {finess}/{ordre}")
        conn.execute("UPDATE establishment SET status = %s, updated_at = now() WHERE finess = %s AND ordre = %s",
                     (new_status, finess, ordre))
        return _record_change(conn, finess, ordre, row[0], new_status, author, reason)


def _record_change(conn, finess, ordre, old, new, author, reason) -> StatusChange:
    conn.execute(
        "INSERT INTO establishment_status_change (finess, ordre, old_status, new_status, changed_by, reason)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (finess, ordre, old, new, author, reason),
    )
    return StatusChange(finess, ordre, old, new)


def _row(establishment: EstablishmentConfig) -> dict:
    return {
        "finess": establishment.finess,
        "ordre": establishment.ordre,
        "name": establishment.name,
        "legal_finess": establishment.legal_finess,
        "status": establishment.status,
        "it_contacts": list(establishment.it_contacts),
        "ars_contacts": list(establishment.ars_contacts),
    }


@dataclass
class EstablishmentView:
    finess: str
    ordre: int
    name: str
    status: str
    last_file_name: str | None
    last_file_status: str | None
    last_file_at: object | None
    last_loaded_at: object | None


def list_establishments(conn: psycopg.Connection) -> list[EstablishmentView]:
    return [EstablishmentView(*row) for row in conn.execute(query("list_establishments"))]
