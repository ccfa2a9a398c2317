"""The ingest use case: establishments' files from the SFTP inbox into the regional store.

For each stable file of each registered establishment's ``depot/`` (the layout is in
``flows/inbox.py``): download, check the sender, load it in one transaction, and only after
the commit move it to ``traites/``, ``rejetes/`` or ``attente/`` (never overwriting), with a
French report beside it when there is something to say (``flows/ingest_reports.py``). A
failure anywhere leaves each file either loaded and moved, or still in ``depot/``; a file
loaded but not yet moved is recognised by its checksum on the next run (``duplicate``) and
moved then, never loaded twice.

The SFTP side is any object with the few methods of ``SftpInbox``, so this module needs no
Airflow.
"""

from __future__ import annotations

import logging
import posixpath
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko
import psycopg

from rpu.config.region import Region
from rpu.flows.inbox import (
    ARCHIVES_SWEPT_EVERY,
    DEPOT,
    HELD,
    PROCESSED,
    REJECTED,
    REPORT_SUFFIX,
    InboxFile,
    free_name,
    is_temporary_name,
)
from rpu.flows.inbox import SETTLE_SECONDS as SETTLE_SECONDS  # where the demo and the task bodies look for them
from rpu.flows.inbox import SftpInbox as SftpInbox
from rpu.flows.ingest_reports import IngestSummary, Notify, held_file, report_text, tell_oru
from rpu.flows.plain_text import shown
from rpu.formats.oscour import FileRefused, read_header_fields
from rpu.formats.rules import Finding
from rpu.store.loader import Busy, LoadResult, load_file, local_now, purge_replaced, refuse_unread

log = logging.getLogger(__name__)


def run_ingest(
    conn: psycopg.Connection,
    inbox,
    region: Region,
    *,
    notify: Notify | None = None,
    now: Callable[[], float] = time.time,
    settle_seconds: int | None = None,
) -> IngestSummary:
    """One pass over the whole inbox in one process: the listing, then every establishment's
    files, then the ORU told. Raises on SFTP or database failure; what was committed and moved
    before stays done. (The rpu_ingest DAG runs the same steps as separate tasks:
    ``list_inbox`` once, ``load_establishment`` per establishment, ``tell_oru``.)"""
    started = time.monotonic()
    summary = IngestSummary()
    to_take = list_inbox(conn, inbox, region, summary, now=now, settle_seconds=settle_seconds)
    take_files(conn, inbox, region, [(folder, f) for folder, files in to_take.items() for f in files], summary)
    tell_oru(conn, region, summary, notify)
    summary.seconds = time.monotonic() - started
    return summary


def list_inbox(
    conn: psycopg.Connection,
    inbox,
    region: Region,
    summary: IngestSummary,
    *,
    now: Callable[[], float] = time.time,
    settle_seconds: int | None = None,
) -> dict[str, list[InboxFile]]:
    """The stable files of each registered establishment's ``depot/`` (folder → files, oldest
    first), establishments without one left out. Files still being written are counted in
    ``summary`` (``waiting``), folders no establishment owns in ``summary.unknown_folders``.
    What was seen is remembered, so that the next listing can tell a file that stopped changing.
    Links are swept from each establishment's folder and depot/, and once a day from its archive
    folders (``inbox_sweep``)."""
    clock = time.monotonic()
    registered = {e.finess for e in region.establishments}
    settle_seconds = settle_seconds if settle_seconds is not None else region.settle_seconds
    previous = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT path, size, mtime FROM inbox_listing")}
    backing_off = {row[0]: (row[1], row[2]) for row in conn.execute(
        "SELECT path, size, mtime FROM inbox_failure WHERE next_try_at > now()")}
    swept_lately = {row[0] for row in conn.execute(
        "SELECT folder FROM inbox_sweep WHERE swept_at > now() - %s", (ARCHIVES_SWEPT_EVERY,))}
    conn.commit()
    _resume_truncated(conn, inbox, registered, summary)
    listing: dict[str, InboxFile] = {}
    to_take: dict[str, list[InboxFile]] = {}
    swept: list[str] = []
    server_now = _server_time(inbox, now)
    for folder in inbox.folders():
        if folder not in registered:
            summary.unknown_folders.append(folder)
            continue
        archives = folder not in swept_lately
        for inbox_file in inbox.files(folder, archives=archives):
            if is_temporary_name(posixpath.basename(inbox_file.path)):
                continue
            listing[inbox_file.path] = inbox_file
            if backing_off.get(inbox_file.path) == (inbox_file.size, inbox_file.mtime):
                summary.folder(folder).waiting += 1  # failed before: tried again after its delay
            elif _is_stable(inbox_file, previous.get(inbox_file.path), server_now, settle_seconds):
                to_take.setdefault(folder, []).append(inbox_file)
            else:
                summary.folder(folder).waiting += 1
        if archives:
            swept.append(folder)
    summary.links_removed += getattr(inbox, "links_removed", [])
    _remember_listing(conn, listing, swept)
    purge_replaced(conn, region.keep_replaced_days)
    conn.commit()
    summary.timings["listing"] += time.monotonic() - clock
    return to_take


def load_establishment(conn: psycopg.Connection, inbox, region: Region, folder: str, files: list[InboxFile],
                       summary: IngestSummary) -> None:
    """Take the files ``list_inbox`` found stable in one establishment's ``depot/``: those still
    there unchanged (a retry after a partial run finds the ones already moved gone). A file
    that appeared or changed since the listing waits for the next listing."""
    present = {(f.path, f.size, f.mtime) for f in inbox.files(folder)}
    take_files(conn, inbox, region, [(folder, f) for f in files if (f.path, f.size, f.mtime) in present], summary)


def take_files(conn: psycopg.Connection, inbox, region: Region, to_take: list[tuple[str, InboxFile]],
               summary: IngestSummary) -> None:
    """Download, load and archive each file in order; one file's unexpected error leaves it in
    ``depot/`` (listed in ``summary.failed``) and does not stop the others. Raises when the
    database or the SFTP server is gone."""
    too_large = [(folder, f) for folder, f in to_take if f.size > region.max_file_bytes]
    for folder, inbox_file in too_large:
        _refuse_too_large(conn, inbox, region, folder, inbox_file, summary)
    to_take = [item for item in to_take if item not in too_large]
    with tempfile.TemporaryDirectory(prefix="rpu-ingest-") as workdir:
        for folder, inbox_file, local in _downloaded(inbox, to_take, Path(workdir), summary):
            try:
                _take(conn, inbox, region, folder, inbox_file, local, summary)
            except Busy as busy:  # another load holds the establishment: next run
                conn.rollback()
                log.warning("%s", busy)
                summary.busy.append(shown(inbox_file.path))
                continue
            except Exception as error:  # one file must not stop the others
                if _connection_lost(error) or not _alive(inbox):
                    raise  # the database or the SFTP server is gone: the task retries
                # The file stays in depot/ and is tried again after a growing delay; the ORU is
                # told the first time. No content of the file is logged.
                log.error("%s : échec inattendu (%s), fichier laissé dans depot/", shown(inbox_file.path),
                          type(error).__name__)
                if _record_failure(conn, inbox_file, error):
                    summary.failed.append(shown(inbox_file.path))
                continue
            finally:
                local.unlink(missing_ok=True)


def _server_time(inbox, now: Callable[[], float]) -> float:
    if hasattr(inbox, "server_time"):
        try:
            return inbox.server_time()
        except OSError as error:
            if _connection_lost(error) or not _alive(inbox):
                raise
            log.warning("Horloge du serveur SFTP illisible (%s) : horloge locale utilisée", type(error).__name__)
    return now()


def _connection_lost(error: BaseException) -> bool:
    """The database or the SFTP connection is gone (the run stops, the task retries), as
    opposed to a problem with one path (permissions, a folder that is a file, a file removed
    meanwhile) that must not block the other establishments."""
    return isinstance(error, psycopg.OperationalError | EOFError | paramiko.SSHException | ConnectionError
                      | TimeoutError)


def _alive(inbox) -> bool:
    alive = getattr(inbox, "alive", None)
    return alive() if alive else True


def _is_stable(inbox_file: InboxFile, previous: tuple[int, int] | None, now: float, settle_seconds: int) -> bool:
    if previous == (inbox_file.size, inbox_file.mtime):
        return True
    return now - inbox_file.mtime >= settle_seconds


def _downloaded(inbox, to_take: list[tuple[str, InboxFile]], workdir: Path, summary: IngestSummary):
    """Yield (folder, file, local copy) in order, each file downloaded while the previous one is
    being loaded: on a second SFTP channel of the same connection when the inbox offers one
    (a paramiko SFTP client serves one request at a time), else one after the other. A single
    file (one establishment's night, the usual ``load``) has nothing to overlap: no second channel."""
    ahead = inbox.second_channel() if hasattr(inbox, "second_channel") and len(to_take) > 1 else None
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rpu-download") as pool:
            pending: deque = deque()
            for index, (folder, inbox_file) in enumerate(to_take):
                local = workdir / f"{index}.xml"
                if ahead is not None:
                    pending.append((folder, inbox_file, local, pool.submit(ahead.download, inbox_file.path, local)))
                else:
                    pending.append((folder, inbox_file, local, None))
                if len(pending) < 2 and index + 1 < len(to_take):
                    continue
                yield _wait_for(inbox, pending.popleft(), summary)
            while pending:
                yield _wait_for(inbox, pending.popleft(), summary)
    finally:
        if ahead is not None:
            ahead.close()


def _wait_for(inbox, item, summary: IngestSummary) -> tuple[str, InboxFile, Path]:
    folder, inbox_file, local, future = item
    clock = time.monotonic()
    if future is None:
        inbox.download(inbox_file.path, local)
    else:
        future.result()
    summary.timings["download"] += time.monotonic() - clock  # the wait, not the transfer
    return folder, inbox_file, local


def _refuse_too_large(conn, inbox, region: Region, folder: str, inbox_file: InboxFile,
                      summary: IngestSummary) -> None:
    """A file over ``[intake] max_file_mb`` is refused unread (reading it could take the machine)."""
    name = posixpath.basename(inbox_file.path)
    finding = Finding("FILE_TOO_LARGE", detail=f"{inbox_file.size >> 20} Mo reçus, {region.max_file_bytes >> 20} Mo au plus.")
    result = refuse_unread(conn, name, folder, inbox_file.size, finding)
    conn.commit()
    _archive(conn, inbox, folder, inbox_file, result, summary, extra=[])


def _take(conn, inbox, region: Region, folder: str, inbox_file: InboxFile, local: Path,
          summary: IngestSummary) -> None:
    name = posixpath.basename(inbox_file.path)
    clock = time.monotonic()
    extra = _sender_check(region, folder, local)
    try:
        result = load_file(conn, local, sender=folder, name=name, extra_findings=extra, guard=region.volume_guard,
                           received_at=local_now(region.timezone), limits=region.limits)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    summary.timings["load"] += time.monotonic() - clock
    _archive(conn, inbox, folder, inbox_file, result, summary, extra)


def _archive(conn, inbox, folder: str, inbox_file: InboxFile, result: LoadResult, summary: IngestSummary,
             extra: list[Finding]) -> None:
    name = posixpath.basename(inbox_file.path)
    clock = time.monotonic()
    # Committed: only now does the file leave depot/, if it is still the bytes that were loaded
    # (a version uploaded again during the load stays for the next run).
    now_there = inbox.attributes(inbox_file.path) if hasattr(inbox, "attributes") else inbox_file
    if now_there is None or (now_there.size, now_there.mtime) != (inbox_file.size, inbox_file.mtime):
        log.warning("%s : modifié pendant son chargement, laissé dans depot/ pour le prochain passage",
                    shown(inbox_file.path))
        summary.changed.append(shown(inbox_file.path))
        return
    target_folder = posixpath.join(folder, {"rejected": REJECTED, "held": HELD}.get(result.status, PROCESSED))
    inbox.ensure_folder(target_folder)
    target = free_name(inbox, target_folder, name)
    report = report_text(result)
    if report:
        inbox.write_text(target + REPORT_SUFFIX, report)
    inbox.move(inbox_file.path, target)
    if result.report and result.status == "rejected" and result.report.file_findings[0].rule == "TRUNCATED":
        with conn.transaction():
            conn.execute("INSERT INTO inbox_watch (path, size, mtime, depot_name) VALUES (%s, %s, %s, %s)"
                         " ON CONFLICT (path) DO NOTHING", (target, inbox_file.size, inbox_file.mtime, name))
    with conn.transaction():
        conn.execute("DELETE FROM inbox_failure WHERE path = %s", (inbox_file.path,))
    summary.timings["archive"] += time.monotonic() - clock
    if result.status == "held":
        summary.held.append(held_file(result))
    if result.error:
        summary.technical.append({"file": f"{folder}/{DEPOT}/{shown(name)}", "id": result.received_file_id,
                                  "error": result.error})
    if extra and result.status == "rejected":
        summary.sender_mismatches.append({"file": f"{folder}/{DEPOT}/{shown(name)}", "finess": shown(extra[0].value)})
    folder_summary = summary.folder(folder)
    setattr(folder_summary, result.status, getattr(folder_summary, result.status) + 1)
    folder_summary.visits_loaded += result.loaded_records
    log.info("%s/%s : %s (journal n°%s, %s passages chargés)", folder, shown(name), result.status,
             result.received_file_id, result.loaded_records)


def _sender_check(region: Region, folder: str, local: Path) -> list[Finding]:
    try:
        header = read_header_fields(local)
    except FileRefused:
        return []  # the loader will refuse it with the precise reason
    header_finess = " ".join((header.fields.get("FINESS") or "").split()).upper() if header else ""
    if header_finess and not region.sender_may_send_for(folder, header_finess):
        return [Finding("SENDER_MISMATCH", field="FINESS", value=header_finess,
                        detail=f"Fichier déposé dans le dossier {folder}.")]
    return []


_BACK_OFF = (15, 60, 240, 1440)  # minutes before each new try of a file that failed


def _record_failure(conn, inbox_file: InboxFile, error: BaseException) -> bool:
    """Note a file's failure and when to try it again; True the first time (tell the ORU)."""
    conn.rollback()
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO inbox_failure AS f (path, size, mtime, failures, error, next_try_at)"
            " VALUES (%(path)s, %(size)s, %(mtime)s, 1, %(error)s, now() + make_interval(mins => %(first)s))"
            " ON CONFLICT (path) DO UPDATE SET failures = CASE WHEN (f.size, f.mtime) = (EXCLUDED.size, EXCLUDED.mtime)"
            "   THEN f.failures + 1 ELSE 1 END, size = EXCLUDED.size, mtime = EXCLUDED.mtime, error = EXCLUDED.error,"
            "   next_try_at = now() + make_interval(mins => (%(delays)s::int[])[least(CASE WHEN"
            "   (f.size, f.mtime) = (EXCLUDED.size, EXCLUDED.mtime) THEN f.failures + 1 ELSE 1 END, %(steps)s)]),"
            "   reported_at = CASE WHEN (f.size, f.mtime) = (EXCLUDED.size, EXCLUDED.mtime) THEN f.reported_at END"
            " RETURNING reported_at",
            {"path": inbox_file.path, "size": inbox_file.size, "mtime": inbox_file.mtime,
             "error": type(error).__name__, "first": _BACK_OFF[0], "delays": list(_BACK_OFF),
             "steps": len(_BACK_OFF)}).fetchone()
        if row[0] is not None:
            return False
        conn.execute("UPDATE inbox_failure SET reported_at = now() WHERE path = %s", (inbox_file.path,))
    return True


def _resume_truncated(conn, inbox, registered: set[str], summary: IngestSummary) -> None:
    """A file refused as truncated that changed since (the upload went on after we moved it):
    back to depot/ as a new upload, its report removed. Watched for a day."""
    with conn.transaction():
        watched = conn.execute("SELECT path, size, mtime, depot_name, watched_at < now() - interval '1 day'"
                               " FROM inbox_watch").fetchall()
    for path, size, mtime, depot_name, expired in watched:
        folder = path.split("/", 1)[0]
        now_there = inbox.attributes(path) if hasattr(inbox, "attributes") else None
        if folder in registered and now_there is not None and (now_there.size, now_there.mtime) != (size, mtime):
            target = free_name(inbox, posixpath.join(folder, DEPOT), depot_name)
            inbox.move(path, target)
            if inbox.exists(path + REPORT_SUFFIX):
                inbox.sftp.remove(inbox._path(path + REPORT_SUFFIX))
            summary.resumed.append(shown(path))
            log.info("%s : complété après son rejet comme tronqué, remis dans depot/", shown(path))
        elif not expired and now_there is not None:
            continue
        with conn.transaction():
            conn.execute("DELETE FROM inbox_watch WHERE path = %s", (path,))


def _remember_listing(conn, listing: dict[str, InboxFile], swept: list[str]) -> None:
    with conn.transaction():
        conn.execute("INSERT INTO inbox_sweep (folder, swept_at) SELECT unnest(%s::text[]), now()"
                     " ON CONFLICT (folder) DO UPDATE SET swept_at = EXCLUDED.swept_at", (swept,))
        conn.execute("DELETE FROM inbox_listing")
        with conn.cursor() as cursor, cursor.copy("COPY inbox_listing (path, size, mtime) FROM STDIN") as copy:
            for inbox_file in listing.values():
                copy.write_row((inbox_file.path, inbox_file.size, inbox_file.mtime))

