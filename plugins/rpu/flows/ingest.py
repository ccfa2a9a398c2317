"""The ingest use case: establishments' files from the SFTP inbox into the regional store.

The inbox layout (what an establishment's IT is told)::

    <FINESS>/depot/     the establishment drops its files here
    <FINESS>/traites/   files loaded (or recognised as already received), with their report
    <FINESS>/rejetes/   files refused, each with <name>.rapport.txt saying why
    <FINESS>/attente/   files held for the ORU (they would empty or halve days we hold): nothing
                        applied; the ORU applies them (``rpu files apply``) or sets them aside

For each stable file of each registered establishment's ``depot/``: download, check the
sender, load it in one transaction, and only after the commit move it to ``traites/`` or
``rejetes/`` (never overwriting), with a French report beside it when there is something to
say. A failure anywhere leaves each file either loaded and moved, or still in ``depot/``; a
file loaded but not yet moved is recognised by its checksum on the next run (``duplicate``)
and moved then, never loaded twice.

The SFTP side is any object with the few methods of ``Inbox`` (a paramiko SFTP client
wrapped by ``SftpInbox``), so this module needs no Airflow.
"""

from __future__ import annotations

import io
import logging
import posixpath
import secrets
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import psycopg

from rpu.config.region import Region
from rpu.flows.report import format_report, needs_report
from rpu.formats.oscour import FileRefused, read_header_fields
from rpu.formats.rules import Finding
from rpu.store.loader import Busy, LoadResult, load_file, local_now, purge_replaced, refuse_unread

log = logging.getLogger(__name__)

DEPOT, PROCESSED, REJECTED, HELD = "depot", "traites", "rejetes", "attente"
REPORT_SUFFIX = ".rapport.txt"
# Names that producers and SFTP clients use while a file is still being written.
_TEMPORARY_SUFFIXES = (".part", ".tmp", ".temp", ".filepart", ".partial", ".crdownload", "~")
# A file unchanged for this long is complete even if the previous listing did not see it.
SETTLE_SECONDS = 600  # the default of [intake] settle_seconds (rpu.config.region)


@dataclass(frozen=True)
class InboxFile:
    path: str
    size: int
    mtime: int


class SftpInbox:
    """The inbox over one SFTP session (a paramiko ``SFTPClient``): one session per run."""

    def __init__(self, sftp, base: str = ""):
        self.sftp = sftp
        self.base = base.rstrip("/")
        self.links_removed: list[str] = []

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts) if self.base else posixpath.join(*parts)

    def folders(self) -> list[str]:
        # READDIR gives each entry's own attributes (lstat): a link is never taken for a folder.
        return sorted(entry.filename for entry in self.sftp.listdir_attr(self.base or ".")
                      if stat.S_ISDIR(entry.st_mode or 0) and not entry.filename.startswith("."))

    def files(self, folder: str) -> list[InboxFile]:
        """The regular files of ``<folder>/depot/``. A symbolic link anywhere in the
        establishment's folders is never followed: it is removed (the link only, never what it
        points to) and listed in ``self.links_removed`` for the ORU."""
        self._refuse_links(folder)
        directory = self._path(folder, DEPOT)
        try:
            entries = self.sftp.listdir_attr(directory)
        except FileNotFoundError:
            return []
        return sorted(
            (InboxFile(posixpath.join(folder, DEPOT, e.filename), e.st_size or 0, int(e.st_mtime or 0))
             for e in entries if stat.S_ISREG(e.st_mode or 0)),
            key=lambda f: (f.mtime, f.path),
        )

    def _refuse_links(self, folder: str) -> None:
        for sub in ("", DEPOT, PROCESSED, REJECTED, HELD):
            directory = posixpath.join(folder, sub) if sub else folder
            try:
                entries = self.sftp.listdir_attr(self._path(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if stat.S_ISLNK(entry.st_mode or 0):
                    self.sftp.remove(self._path(directory, entry.filename))  # unlinks the link itself
                    self.links_removed.append(posixpath.join(directory, entry.filename))

    def second_channel(self) -> SftpInbox:
        """Another SFTP channel over the same SSH connection (downloads run ahead on it)."""
        transport = self.sftp.get_channel().get_transport()
        return SftpInbox(paramiko.SFTPClient.from_transport(transport), self.base)

    def close(self) -> None:
        self.sftp.close()

    def alive(self) -> bool:
        """Whether the SFTP session still answers (an error was about one path, not the link)."""
        try:
            self.sftp.stat(self.base or ".")
            return True
        except OSError:
            return False

    def server_time(self) -> float:
        """The SFTP server's clock (the mtime of a probe file written now): file ages are
        measured against it, so a worker whose clock is ahead never takes a file still growing."""
        probe = self._path(".rpu-horloge")
        self.sftp.putfo(io.BytesIO(b""), probe)
        try:
            return float(self.sftp.stat(probe).st_mtime)
        finally:
            self.sftp.remove(probe)

    def download(self, path: str, local: Path) -> None:
        self.sftp.get(self._path(path), str(local))

    def exists(self, path: str) -> bool:
        try:
            self.sftp.lstat(self._path(path))  # a link counts as taken, never followed
            return True
        except FileNotFoundError:
            return False

    def attributes(self, path: str) -> InboxFile | None:
        """The file as it is now (its own attributes, never a link's target), or None."""
        try:
            attrs = self.sftp.lstat(self._path(path))
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(attrs.st_mode or 0):
            return None
        return InboxFile(path, attrs.st_size or 0, int(attrs.st_mtime or 0))

    def ensure_folder(self, path: str) -> None:
        try:
            attrs = self.sftp.lstat(self._path(path))
        except FileNotFoundError:
            self.sftp.mkdir(self._path(path))
            return
        if not stat.S_ISDIR(attrs.st_mode or 0):  # a link or a file planted in place of the folder
            raise NotADirectoryError(f"{path!r} n'est pas un dossier")

    def move(self, source: str, target: str) -> None:
        # posix-rename: atomic; it replaces a link planted at the target, never follows it.
        self.sftp.posix_rename(self._path(source), self._path(target))

    def write_text(self, path: str, text: str) -> None:
        # An unpredictable name, created exclusively (O_EXCL never follows a link), then renamed.
        temporary = f"{path}.{secrets.token_hex(8)}.part"
        with self.sftp.open(self._path(temporary), "wbx") as stream:
            stream.write(text.encode("utf-8"))
        self.sftp.posix_rename(self._path(temporary), self._path(path))


def is_temporary_name(name: str) -> bool:
    lower = name.lower()
    return name.startswith(".") or lower.endswith(_TEMPORARY_SUFFIXES) or lower.endswith(REPORT_SUFFIX)


@dataclass
class FolderSummary:
    loaded: int = 0
    rejected: int = 0
    duplicate: int = 0
    superseded: int = 0
    held: int = 0
    visits_loaded: int = 0
    waiting: int = 0  # files still being written, left for the next run

    @property
    def taken(self) -> int:
        return self.loaded + self.rejected + self.duplicate + self.superseded + self.held


@dataclass
class IngestSummary:
    folders: dict[str, FolderSummary] = field(default_factory=dict)
    unknown_folders: list[str] = field(default_factory=list)
    sender_mismatches: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # files left in depot/ after an unexpected error
    held: list[str] = field(default_factory=list)  # for the ORU: each held file and its figures per day
    technical: list[str] = field(default_factory=list)  # for the ORU: files refused on an unexpected error
    busy: list[str] = field(default_factory=list)  # files left for the next run (establishment busy)
    changed: list[str] = field(default_factory=list)  # uploaded again during their load: next run
    links_removed: list[str] = field(default_factory=list)  # symbolic links found in the inbox
    resumed: list[str] = field(default_factory=list)  # truncated uploads that went on: back in depot/
    seconds: float = 0.0
    # Where the run's time went: listing, download, load (validation + database), archive.
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("listing", "download", "load", "archive"), 0.0))

    def folder(self, name: str) -> FolderSummary:
        return self.folders.setdefault(name, FolderSummary())

    @property
    def files_taken(self) -> int:
        return sum(f.taken for f in self.folders.values())

    @property
    def visits_loaded(self) -> int:
        return sum(f.visits_loaded for f in self.folders.values())

    def totals(self) -> dict:
        keys = ("loaded", "rejected", "duplicate", "superseded", "held", "visits_loaded", "waiting")
        return {k: sum(getattr(f, k) for f in self.folders.values()) for k in keys}

    def as_dict(self) -> dict:
        return {
            "totals": self.totals(),
            "held": self.held,
            "technical": self.technical,
            "busy": self.busy,
            "changed": self.changed,
            "links_removed": self.links_removed,
            "resumed": self.resumed,
            "establishments": {name: vars(summary) for name, summary in sorted(self.folders.items()) if summary.taken
                               or summary.waiting},
            "unknown_folders": self.unknown_folders,
            "sender_mismatches": self.sender_mismatches,
            "failed": self.failed,
            "seconds": round(self.seconds, 2),
            "timings": {step: round(seconds, 2) for step, seconds in self.timings.items()},
        }

    @classmethod
    def merged(cls, parts) -> IngestSummary:
        """One summary from several ``as_dict()`` (the establishments' loads of one run)."""
        summary = cls()
        for part in parts:
            for name, counts in part["establishments"].items():
                folder = summary.folder(name)
                for key, value in counts.items():
                    setattr(folder, key, getattr(folder, key) + value)
            for key in ("unknown_folders", "sender_mismatches", "failed", "held", "technical", "busy", "changed",
                        "links_removed", "resumed"):
                getattr(summary, key).extend(part.get(key, ()))
            summary.seconds = max(summary.seconds, part["seconds"])  # they ran side by side
            for step, seconds in part["timings"].items():
                summary.timings[step] = summary.timings.get(step, 0.0) + seconds
        return summary

    def lines(self) -> list[str]:
        totals = self.totals()
        out = [f"{self.files_taken} fichier(s) traité(s) : {totals['loaded']} chargé(s), {totals['rejected']} rejeté(s), "
               f"{totals['duplicate']} doublon(s), {totals['superseded']} dépassé(s), {totals['held']} en attente ; "
               f"{totals['visits_loaded']} passages chargés ; {totals['waiting']} en cours de dépôt ; {self.seconds:.1f} s",
               "durées : " + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.timings.items())]
        for name, f in sorted(self.folders.items()):
            if f.taken or f.waiting:
                out.append(f"  {name}: chargés {f.loaded}, rejetés {f.rejected}, doublons {f.duplicate}, "
                           f"dépassés {f.superseded}, passages {f.visits_loaded}, en cours {f.waiting}")
        return out


Notify = Callable[[list[str], str, str], None]  # (recipients, subject, body)


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
    What was seen is remembered, so that the next listing can tell a file that stopped changing."""
    clock = time.monotonic()
    registered = {e.finess for e in region.establishments}
    settle_seconds = settle_seconds if settle_seconds is not None else region.settle_seconds
    previous = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT path, size, mtime FROM inbox_listing")}
    backing_off = {row[0]: (row[1], row[2]) for row in conn.execute(
        "SELECT path, size, mtime FROM inbox_failure WHERE next_try_at > now()")}
    conn.commit()
    _resume_truncated(conn, inbox, registered, summary)
    listing: dict[str, InboxFile] = {}
    to_take: dict[str, list[InboxFile]] = {}
    server_now = _server_time(inbox, now)
    for folder in inbox.folders():
        if folder not in registered:
            summary.unknown_folders.append(folder)
            continue
        for inbox_file in inbox.files(folder):
            if is_temporary_name(posixpath.basename(inbox_file.path)):
                continue
            listing[inbox_file.path] = inbox_file
            if backing_off.get(inbox_file.path) == (inbox_file.size, inbox_file.mtime):
                summary.folder(folder).waiting += 1  # failed before: tried again after its delay
            elif _is_stable(inbox_file, previous.get(inbox_file.path), server_now, settle_seconds):
                to_take.setdefault(folder, []).append(inbox_file)
            else:
                summary.folder(folder).waiting += 1
    summary.links_removed += getattr(inbox, "links_removed", [])
    _remember_listing(conn, listing)
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
    target = _free_name(inbox, target_folder, name)
    report = _report_text(result)
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
        summary.held += held_lines(result)
    if result.error:
        summary.technical.append(f"{folder}/{DEPOT}/{shown(name)} (journal n°{result.received_file_id}) :\n{result.error}")
    if extra and result.status == "rejected":
        summary.sender_mismatches.append(f"{folder}/{DEPOT}/{shown(name)} : FINESS d'en-tête {shown(extra[0].value)}")
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


def _report_text(result: LoadResult) -> str | None:
    report = result.report
    verdicts = {"duplicate": "DOUBLON", "superseded": "DÉPASSÉ", "held": "EN ATTENTE"}
    if result.status in verdicts:
        return f"Fichier : {result.file}\n\nVerdict : {verdicts[result.status]}\n{result.reason}\n"
    partial = result.status == "loaded" and bool(result.days_not_applied)
    if report and (needs_report(report) or partial):
        return format_report(report, outcome="chargé" if result.status == "loaded" else None,
                             applied=result.reason if result.status == "loaded" else None)
    return None


def held_lines(result: LoadResult) -> list[str]:
    """The ORU's lines about one held file: which, and the figures per day."""
    header = result.report.header
    lines = [f"  - n°{result.received_file_id} {shown(result.file)}, FINESS {header.finess}/{header.ordre}, "
             f"période du {header.period_start:%d/%m/%Y} au {header.period_end:%d/%m/%Y} :"]
    for day in result.held_days:
        lines.append(f"      {day.day:%d/%m/%Y} : {day.held} passage(s) détenu(s), {day.brought} dans ce fichier")
    return lines


def shown(name: str) -> str:
    """A name that came from outside, as it may be written in a log or an e-mail: quoted and
    escaped when it holds anything but printable characters (a newline would forge a line)."""
    return name if name.isprintable() else repr(name)


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
            target = _free_name(inbox, posixpath.join(folder, DEPOT), depot_name)
            inbox.move(path, target)
            if inbox.exists(path + REPORT_SUFFIX):
                inbox.sftp.remove(inbox._path(path + REPORT_SUFFIX))
            summary.resumed.append(shown(path))
            log.info("%s : complété après son rejet comme tronqué, remis dans depot/", shown(path))
        elif not expired and now_there is not None:
            continue
        with conn.transaction():
            conn.execute("DELETE FROM inbox_watch WHERE path = %s", (path,))


def _free_name(inbox, folder: str, name: str) -> str:
    """A name not used yet in ``folder``: files there are never overwritten."""
    candidate = posixpath.join(folder, name)
    counter = 1
    while inbox.exists(candidate) or inbox.exists(candidate + REPORT_SUFFIX):
        stem, dot, ext = name.rpartition(".")
        candidate = posixpath.join(folder, f"{stem}.{counter}.{ext}" if dot else f"{name}.{counter}")
        counter += 1
    return candidate


def _remember_listing(conn, listing: dict[str, InboxFile]) -> None:
    with conn.transaction():
        conn.execute("DELETE FROM inbox_listing")
        with conn.cursor() as cursor, cursor.copy("COPY inbox_listing (path, size, mtime) FROM STDIN") as copy:
            for inbox_file in listing.values():
                copy.write_row((inbox_file.path, inbox_file.size, inbox_file.mtime))


def tell_oru(conn, region: Region, summary: IngestSummary, notify: Notify | None) -> None:
    """Sender mismatches every time; a folder no establishment owns, once (marked only after
    the e-mail went, so a failed e-mail is sent again next run)."""
    with conn.transaction():
        for folder in summary.unknown_folders:
            conn.execute("INSERT INTO inbox_unknown_folder (folder) VALUES (%s) ON CONFLICT (folder) DO NOTHING",
                         (folder,))
        new_unknown = [row[0] for row in conn.execute(
            "SELECT folder FROM inbox_unknown_folder WHERE notified_at IS NULL AND folder = ANY(%s) ORDER BY folder",
            (summary.unknown_folders,))]
    if not (new_unknown or summary.sender_mismatches or summary.held or summary.technical or summary.failed
            or summary.links_removed) or notify is None:
        return
    lines = []
    if summary.failed:
        lines.append("Fichiers qui n'ont pas pu être pris (laissés dans depot/, réessayés avec un délai croissant ; "
                     "ce message n'est envoyé qu'une fois par fichier) :")
        lines += [f"  - {path}" for path in summary.failed]
        lines.append("Vérifiez les droits du fichier sur le serveur SFTP, ou demandez à l'établissement de le redéposer.")
        lines.append("")
    if summary.links_removed:
        lines.append("Liens symboliques trouvés dans des dossiers d'établissement, supprimés sans être suivis :")
        lines += [f"  - {shown(path)}" for path in summary.links_removed]
        lines.append("Un compte SFTP ne devrait pas pouvoir en créer : vérifiez la configuration du serveur.")
        lines.append("")
    if summary.held:
        lines.append("Fichiers mis en attente (rien n'a été appliqué) : ils retireraient des passages que la base détient.")
        lines += summary.held
        lines += ["Vérifiez avec l'établissement (export lancé sur une vue vide ? unité fermée ?), puis :",
                  '  rpu files apply N --reason "..."    (appliquer malgré tout, décision journalisée)',
                  '  rpu files discard N --reason "..."  (écarter le fichier)', ""]
    if summary.technical:
        lines.append("Fichiers refusés sur une erreur technique du concentrateur (déplacés dans rejetes/ ; "
                     "l'établissement lit « erreur technique, l'ORU est prévenu ») :")
        lines += summary.technical
        lines.append("")
    if summary.sender_mismatches:
        lines.append("Fichiers rejetés car leur FINESS d'en-tête n'est pas celui du dossier de dépôt (SENDER_MISMATCH) :")
        lines += [f"  - {item}" for item in summary.sender_mismatches]
        lines.append("Vérifiez avec l'établissement le paramétrage de son export ; le rapport est dans rejetes/.")
        lines.append("")
    if new_unknown:
        lines.append("Dossiers du serveur de dépôt qu'aucun établissement déclaré ne possède (fichiers laissés en place) :")
        lines += [f"  - {folder}/" for folder in new_unknown]
        lines.append("Déclarez l'établissement dans la configuration de la région, ou supprimez le dossier.")
    notify(list(region.operator_emails), f"[RPU {region.code}] Dépôts à vérifier", "\n".join(lines))
    with conn.transaction():
        conn.execute("UPDATE inbox_unknown_folder SET notified_at = now() WHERE folder = ANY(%s)", (new_unknown,))
