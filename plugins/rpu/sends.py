"""The outbound journal and deliveries: every file built for a destination is journaled,
delivered, and marked ``sent`` only once the destination has the whole file.

A delivery that fails leaves the send ``failed`` with the remote answer; the next run retries
it from the stored file (checksum verified), without rebuilding it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import psycopg
from psycopg.rows import class_row

log = logging.getLogger(__name__)


@dataclass
class Send:
    id: int
    destination: str
    kind: str
    finess: str | None
    ordre: int | None
    period_start: date | None
    period_end: date | None
    year: int | None
    month: int | None
    file_name: str
    local_path: str
    sha256: str
    size_bytes: int
    visit_count: int
    status: str
    attempts: int
    remote_answer: str | None
    covers_files: list[int]
    requested_by: str | None
    reason: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None


class DeliveryError(Exception):
    """The destination did not take the file; the message is the remote answer or the cause."""


def file_sha256(path: str | os.PathLike) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def record_built(conn: psycopg.Connection, *, destination: str, path: str | os.PathLike, visit_count: int,
                 kind: str = "daily", finess: str | None = None, ordre: int | None = None,
                 period_start: date | None = None, period_end: date | None = None, year: int | None = None,
                 month: int | None = None, file_name: str | None = None, covers_files: list[int] = (),
                 requested_by: str | None = None, reason: str | None = None) -> Send:
    """Journal a file just built (status ``built``) and return the send. Commits."""
    sha256, size = file_sha256(path)
    with conn.transaction(), conn.cursor(row_factory=class_row(Send)) as cursor:
        cursor.execute(
            "INSERT INTO send (destination, kind, finess, ordre, period_start, period_end, year, month, file_name,"
            " local_path, sha256, size_bytes, visit_count, covers_files, requested_by, reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING *",
            (destination, kind, finess, ordre, period_start, period_end, year, month,
             file_name or Path(path).name, os.fspath(path), sha256, size, visit_count, list(covers_files),
             requested_by, reason),
        )
        return cursor.fetchone()


# Every function here runs in its own explicit transaction, so that none leaves an implicit one
# open on the caller's connection (later transactions would become savepoints of it, lost if the
# caller then fails).

def pending(conn: psycopg.Connection, destination: str) -> list[Send]:
    """Sends built or failed, oldest first: what the next delivery run must (re)try."""
    with conn.transaction(), conn.cursor(row_factory=class_row(Send)) as cursor:
        cursor.execute("SELECT * FROM send WHERE destination = %s AND status IN ('built', 'failed')"
                       " ORDER BY id", (destination,))
        return cursor.fetchall()


def get(conn: psycopg.Connection, send_id: int) -> Send:
    with conn.transaction(), conn.cursor(row_factory=class_row(Send)) as cursor:
        cursor.execute("SELECT * FROM send WHERE id = %s", (send_id,))
        return cursor.fetchone()


Deliver = Callable[[Send], str]  # delivers one send's stored file, returns the remote answer


def attempt(conn: psycopg.Connection, send: Send, deliver: Deliver) -> Send:
    """Try one delivery and journal its outcome (committed whatever happens)."""
    answer, status = None, "failed"
    try:
        digest, _ = file_sha256(send.local_path)
        if digest != send.sha256:
            raise DeliveryError(f"Le fichier construit {send.local_path} a changé depuis sa construction.")
        answer = deliver(send)
        status = "sent"
    except (DeliveryError, OSError, EOFError) as error:
        answer = str(error) or type(error).__name__
        log.warning("Envoi n°%s vers %s en échec : %s", send.id, send.destination, answer)
    except Exception as error:  # paramiko and HTTP errors alike: journal, then let the run report it
        answer = f"{type(error).__name__}: {error}"
        log.warning("Envoi n°%s vers %s en échec : %s", send.id, send.destination, answer)
    with conn.transaction(), conn.cursor(row_factory=class_row(Send)) as cursor:
        cursor.execute(
            "UPDATE send SET status = %s, attempts = attempts + 1, remote_answer = %s, last_attempt_at = now(),"
            " sent_at = CASE WHEN %s = 'sent' THEN now() ELSE sent_at END WHERE id = %s RETURNING *",
            (status, answer, status, send.id),
        )
        return cursor.fetchone()


def deliver_pending(conn: psycopg.Connection, destination: str, deliver: Deliver) -> list[Send]:
    """(Re)try every pending send of a destination; returns them in their new state."""
    return [attempt(conn, send, deliver) for send in pending(conn, destination)]


class SftpOutbox:
    """Delivery to an SFTP folder: upload under a temporary name, then rename, so that the
    destination never sees a partial file under the final name."""

    def __init__(self, sftp, folder: str = ""):
        self.sftp = sftp
        self.folder = folder.rstrip("/")

    def __call__(self, send: Send) -> str:
        final = posixpath.join(self.folder, send.file_name) if self.folder else send.file_name
        temporary = posixpath.join(posixpath.dirname(final), f".{posixpath.basename(final)}.part")
        self.sftp.put(send.local_path, temporary, confirm=True)
        size = self.sftp.stat(temporary).st_size
        if size != send.size_bytes:
            raise DeliveryError(f"Taille reçue {size} octets au lieu de {send.size_bytes}.")
        self.sftp.posix_rename(temporary, final)
        return f"déposé {final} ({size} octets)"


def owner_only(path: str | os.PathLike) -> None:
    """Health data files are readable by their owner alone."""
    os.chmod(path, 0o600)
