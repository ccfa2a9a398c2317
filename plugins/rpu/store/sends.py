"""The outbound journal and deliveries: every file built for a destination is journaled,
delivered, and marked ``sent`` only once the destination has the whole file.

A delivery that fails leaves the send ``failed`` with the remote answer; the next run retries
it from the stored file (checksum verified), without rebuilding it. One send is delivered by
one task at a time (a session advisory lock per send, and its status read again under it), so
a replay delivered while the daily run delivers every pending send never leaves twice. When the
SFTP server cannot be reached at all, every pending send is journaled ``failed`` with the cause
(:func:`deliver_pending_over`). Local copies of delivered sends are removed after a week
(:func:`purge_local_copies`); the journal rows stay.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO

import psycopg
from psycopg.rows import class_row

from rpu.store.timeliness import record_delivery

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

# Session advisory locks making the delivery of one send exclusive: key = _SEND_LOCK + send id
# (high 32 bits "RPU\x03", apart from the other advisory locks of the concentrator). A session
# lock dies with its session: a task killed mid-delivery never leaves a send locked.
_SEND_LOCK = 0x52505503 << 32


def _lock_key(send_id: int) -> int:
    return _SEND_LOCK + send_id


def attempt(conn: psycopg.Connection, send: Send, deliver: Deliver) -> Send | None:
    """Try one delivery and journal its outcome (committed whatever happens); return the send
    in its new state, or ``None`` when it was not attempted: another task is delivering it at
    this very moment (its lock is held), or it is already ``sent`` or ``cancelled`` (``send``
    may be a stale copy: its status is read again under the lock)."""
    key = _lock_key(send.id)
    with conn.transaction():
        (acquired,) = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    if not acquired:
        log.info("Envoi n°%s vers %s : en cours de remise par une autre tâche, laissé de côté.", send.id,
                 send.destination)
        return None
    try:
        current = get(conn, send.id)
        if current is None or current.status in ("sent", "cancelled"):
            log.info("Envoi n°%s vers %s : déjà %s, rien à faire.", send.id, send.destination,
                     current.status if current else "supprimé")
            return None
        return _attempt(conn, current, deliver)
    finally:
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except psycopg.Error as error:  # a lost session has released its locks
            log.warning("Envoi n°%s : verrou non relâché (%s) ; il le sera à la fin de la session.", send.id, error)


def _attempt(conn: psycopg.Connection, send: Send, deliver: Deliver) -> Send:
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
        updated = cursor.fetchone()
        if updated.status == "sent" and updated.destination == "invs":  # timeliness, in the same transaction
            record_delivery(conn, updated.id)
        return updated


def _pending(conn: psycopg.Connection, destination: str, only: Collection[int] | None) -> list[Send]:
    found = pending(conn, destination)
    return found if only is None else [send for send in found if send.id in only]


def deliver_pending(conn: psycopg.Connection, destination: str, deliver: Deliver,
                    *, only: Collection[int] | None = None) -> list[Send]:
    """(Re)try every pending send of a destination (or those of ``only``); returns those
    attempted, in their new state (a send another task is delivering, or has just delivered,
    is left out)."""
    results = (attempt(conn, send, deliver) for send in _pending(conn, destination, only))
    return [send for send in results if send is not None]


class ServerUnreachable(RuntimeError):
    """The SFTP server could not be reached (or its folder prepared); the message (French) is
    the cause journaled on every pending send."""


def _failing(cause: str) -> Deliver:
    def deliver(send: Send) -> str:
        raise DeliveryError(cause)

    return deliver


def deliver_pending_over(conn: psycopg.Connection, destination: str,
                         open_session: Callable[[], contextlib.AbstractContextManager], folder: str = "", *,
                         server: str | None = None, create_folder: bool = False,
                         only: Collection[int] | None = None) -> list[Send]:
    """Deliver every pending send of ``destination`` (or those of ``only``) over one SFTP
    session (``open_session()``, a paramiko SFTPClient context) into ``folder``, with
    :class:`SftpOutbox`; returns the sends attempted, in their new state. Nothing pending: no
    connection at all, ``[]``.

    When the session cannot be opened (connection refused, authentication, host key...) or,
    with ``create_folder``, the folder cannot be created, every pending send is journaled as a
    failed attempt with the cause (``server`` names the server in it, e.g. the connection id),
    and :class:`ServerUnreachable` is raised, so that the task fails, is retried and alerts:
    nothing is left silent, nothing is marked sent."""
    if not _pending(conn, destination, only):
        return []
    name = server or destination
    with contextlib.ExitStack() as stack:
        try:
            sftp = stack.enter_context(open_session())
        except Exception as error:
            cause = f"serveur SFTP {name} injoignable : {type(error).__name__}: {error}"
            _journal_failure(conn, destination, only, cause)
            raise ServerUnreachable(cause) from error
        if create_folder and folder:
            try:
                ensure_folder(sftp, folder)
            except Exception as error:
                cause = f"dossier {folder} impossible à créer sur le serveur SFTP {name} : {type(error).__name__}: {error}"
                _journal_failure(conn, destination, only, cause)
                raise ServerUnreachable(cause) from error
        return deliver_pending(conn, destination, SftpOutbox(sftp, folder), only=only)


def _journal_failure(conn: psycopg.Connection, destination: str, only: Collection[int] | None, cause: str) -> None:
    log.warning("%s", cause)
    deliver_pending(conn, destination, _failing(cause), only=only)


def ensure_folder(sftp, folder: str) -> None:
    """Create ``folder`` (and its parents) on the SFTP server when missing."""
    path = ""
    for part in folder.strip("/").split("/"):
        path = posixpath.join(path, part) if path else ("/" + part if folder.startswith("/") else part)
        try:
            sftp.stat(path)
        except FileNotFoundError:
            sftp.mkdir(path)


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


def open_owner_only(path: str | os.PathLike, mode: str = "wb", **kwargs) -> IO:
    """Open ``path`` for writing, created or truncated, readable by its owner alone: also when
    it already existed with other permissions (a ``.part`` left by an interrupted run), which
    ``os.open(..., 0o600)`` alone would keep. ``kwargs`` go to :func:`open` (encoding...)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def private_file(path: str | os.PathLike, mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Write ``path`` readable by its owner alone, under the temporary name ``.<name>.part``
    renamed when complete: a reader never sees half a file; on error nothing is left behind."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.part")
    try:
        with open_owner_only(temporary, mode, **kwargs) as stream:
            yield stream
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


KEEP_LOCAL_DAYS = 7  # local copies of delivered (or cancelled) sends are removed after this many days


def purge_local_copies(conn: psycopg.Connection, destination: str, older_than_days: int = KEEP_LOCAL_DAYS, *,
                       within: str | os.PathLike | None = None) -> int:
    """Remove the local copies of the sends of ``destination`` delivered (``sent``, by
    ``sent_at``) or ``cancelled`` (by ``created_at``) more than ``older_than_days`` ago, so
    that health data files do not pile up on the disk; returns how many files were removed.
    The journal rows stay; a ``built`` or ``failed`` send's file is never touched (it is to be
    (re)sent). With ``within``, only files under that folder are removed (and their own
    folder below it, once empty)."""
    root = Path(within).resolve() if within is not None else None
    with conn.transaction():
        rows = conn.execute(
            "SELECT local_path FROM send WHERE destination = %s AND status IN ('sent', 'cancelled')"
            " AND coalesce(sent_at, created_at) < now() - make_interval(days => %s)",
            (destination, older_than_days)).fetchall()
    removed = 0
    for (local_path,) in rows:
        path = Path(local_path).resolve()
        if (root is not None and root not in path.parents) or not path.is_file():
            continue
        path.unlink()
        removed += 1
        if root is not None and path.parent != root:
            with contextlib.suppress(OSError):  # a build folder (ARS), once empty
                path.parent.rmdir()
    return removed
