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

from rpu.loader import LoadResult, load_file
from rpu.oscour import FileRefused, read_header_fields
from rpu.region import Region
from rpu.report import format_report, needs_report
from rpu.rules import Finding

log = logging.getLogger(__name__)

DEPOT, PROCESSED, REJECTED, HELD = "depot", "traites", "rejetes", "attente"
REPORT_SUFFIX = ".rapport.txt"
# Names that producers and SFTP clients use while a file is still being written.
_TEMPORARY_SUFFIXES = (".part", ".tmp", ".temp", ".filepart", ".partial", ".crdownload", "~")
# A file unchanged for this long is complete even if the previous listing did not see it.
SETTLE_SECONDS = 120


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

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts) if self.base else posixpath.join(*parts)

    def folders(self) -> list[str]:
        return sorted(entry.filename for entry in self.sftp.listdir_attr(self.base or ".")
                      if stat.S_ISDIR(entry.st_mode or 0) and not entry.filename.startswith("."))

    def files(self, folder: str) -> list[InboxFile]:
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
            self.sftp.stat(self._path(path))
            return True
        except FileNotFoundError:
            return False

    def ensure_folder(self, path: str) -> None:
        if not self.exists(path):
            self.sftp.mkdir(self._path(path))

    def move(self, source: str, target: str) -> None:
        # posix-rename: atomic, and refuses nothing; the caller has chosen a free name.
        self.sftp.posix_rename(self._path(source), self._path(target))

    def write_text(self, path: str, text: str) -> None:
        temporary = path + ".part"
        self.sftp.putfo(io.BytesIO(text.encode("utf-8")), self._path(temporary))
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
    held: list[LoadResult] = field(default_factory=list)  # files held for the ORU this run
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
            "held": [f"{result.file} (n°{result.received_file_id})" for result in self.held],
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
            for key in ("unknown_folders", "sender_mismatches", "failed"):
                getattr(summary, key).extend(part[key])
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
    settle_seconds: int = SETTLE_SECONDS,
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
    settle_seconds: int = SETTLE_SECONDS,
) -> dict[str, list[InboxFile]]:
    """The stable files of each registered establishment's ``depot/`` (folder → files, oldest
    first), establishments without one left out. Files still being written are counted in
    ``summary`` (``waiting``), folders no establishment owns in ``summary.unknown_folders``.
    What was seen is remembered, so that the next listing can tell a file that stopped changing."""
    clock = time.monotonic()
    registered = {e.finess for e in region.establishments}
    previous = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT path, size, mtime FROM inbox_listing")}
    conn.commit()
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
            if _is_stable(inbox_file, previous.get(inbox_file.path), server_now, settle_seconds):
                to_take.setdefault(folder, []).append(inbox_file)
            else:
                summary.folder(folder).waiting += 1
    _remember_listing(conn, listing)
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
    with tempfile.TemporaryDirectory(prefix="rpu-ingest-") as workdir:
        for folder, inbox_file, local in _downloaded(inbox, to_take, Path(workdir), summary):
            try:
                _take(conn, inbox, region, folder, inbox_file, local, summary)
            except Exception as error:  # one file must not stop the others
                if _connection_lost(error) or not _alive(inbox):
                    raise  # the database or the SFTP server is gone: the task retries
                # The file stays in depot/ and is tried again; the operator is alerted when
                # the task fails. No content of the file is logged.
                log.error("%s : échec inattendu (%s), fichier laissé dans depot/", inbox_file.path,
                          type(error).__name__)
                summary.failed.append(inbox_file.path)
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
    (a paramiko SFTP client serves one request at a time), else one after the other."""
    ahead = inbox.second_channel() if hasattr(inbox, "second_channel") else None
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


def _take(conn, inbox, region: Region, folder: str, inbox_file: InboxFile, local: Path,
          summary: IngestSummary) -> None:
    name = posixpath.basename(inbox_file.path)
    clock = time.monotonic()
    extra = _sender_check(region, folder, local)
    try:
        result = load_file(conn, local, sender=folder, name=name, extra_findings=extra, guard=region.volume_guard)
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    summary.timings["load"] += time.monotonic() - clock
    clock = time.monotonic()
    # Committed: only now does the file leave depot/.
    target_folder = posixpath.join(folder, {"rejected": REJECTED, "held": HELD}.get(result.status, PROCESSED))
    inbox.ensure_folder(target_folder)
    target = _free_name(inbox, target_folder, name)
    report = _report_text(result)
    if report:
        inbox.write_text(target + REPORT_SUFFIX, report)
    inbox.move(inbox_file.path, target)
    summary.timings["archive"] += time.monotonic() - clock
    if result.status == "held":
        summary.held.append(result)
    if extra and result.status == "rejected":
        summary.sender_mismatches.append(f"{folder}/{DEPOT}/{name} : FINESS d'en-tête {extra[0].value}")
    folder_summary = summary.folder(folder)
    setattr(folder_summary, result.status, getattr(folder_summary, result.status) + 1)
    folder_summary.visits_loaded += result.loaded_records
    log.info("%s/%s : %s (journal n°%s, %s passages chargés)", folder, name, result.status,
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


def held_lines(held: list[LoadResult]) -> list[str]:
    """The ORU's part about held files: which, the figures per day, the two commands."""
    lines = ["Fichiers mis en attente (rien n'a été appliqué) : ils retireraient des passages que la base détient."]
    for result in held:
        header = result.report.header
        lines.append(f"  - n°{result.received_file_id} « {result.file} », FINESS {header.finess}/{header.ordre}, "
                     f"période du {header.period_start:%d/%m/%Y} au {header.period_end:%d/%m/%Y} :")
        for day in result.held_days:
            lines.append(f"      {day.day:%d/%m/%Y} : {day.held} passage(s) détenu(s), {day.brought} dans ce fichier")
    lines += ["Vérifiez avec l'établissement (export lancé sur une vue vide ? unité fermée ?), puis :",
              '  rpu files apply N --reason "..."    (appliquer malgré tout, décision journalisée)',
              '  rpu files discard N --reason "..."  (écarter le fichier)', ""]
    return lines


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
    if not (new_unknown or summary.sender_mismatches or summary.held) or notify is None:
        return
    lines = []
    if summary.held:
        lines += held_lines(summary.held)
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
