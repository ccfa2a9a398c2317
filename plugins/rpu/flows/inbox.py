"""The SFTP inbox of the establishments, as the ingest sees it.

The layout (what an establishment's IT is told)::

    <FINESS>/depot/     the establishment drops its files here
    <FINESS>/traites/   files loaded (or recognised as already received), with their report
    <FINESS>/rejetes/   files refused, each with <name>.rapport.txt saying why
    <FINESS>/attente/   files held for the ORU (they would empty or halve days we hold): nothing
                        applied; the ORU applies them (``rpu files apply``) or sets them aside

The ingest needs any object with the few methods of ``SftpInbox`` (a paramiko SFTP client
wrapped), so it needs no Airflow; symbolic links are never followed, files never overwritten.
"""

from __future__ import annotations

import io
import posixpath
import secrets
import stat
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import paramiko

DEPOT, PROCESSED, REJECTED, HELD = "depot", "traites", "rejetes", "attente"
REPORT_SUFFIX = ".rapport.txt"
# Names that producers and SFTP clients use while a file is still being written.
_TEMPORARY_SUFFIXES = (".part", ".tmp", ".temp", ".filepart", ".partial", ".crdownload", "~")
# A file unchanged for this long is complete even if the previous listing did not see it.
SETTLE_SECONDS = 600  # the default of [intake] settle_seconds (rpu.config.region)
# The archive folders (traites/, rejetes/, attente/) grow by a file and its report a night:
# swept for links this often, not at every listing (see migration 011).
ARCHIVES_SWEPT_EVERY = timedelta(days=1)
# Bytes a download channel lets the server send ahead (paramiko's default, 2 MiB, made each
# download wait on window adjustments: a night's downloads took 2.5 times as long). paramiko
# hands the data to the local file as it comes: this is a bound, not memory held.
DOWNLOAD_WINDOW = 64 << 20


@dataclass(frozen=True)
class InboxFile:
    path: str
    size: int
    mtime: int


class SftpInbox:
    """The inbox over one SFTP session (a paramiko ``SFTPClient``): one session per run."""

    def __init__(self, sftp, base: str = "", downloads=None):
        self.sftp = sftp
        self.base = base.rstrip("/")
        self.links_removed: list[str] = []
        self._downloads = downloads  # the download channel (wide window), else opened at the first download

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.base, *parts) if self.base else posixpath.join(*parts)

    def folders(self) -> list[str]:
        # READDIR gives each entry's own attributes (lstat): a link is never taken for a folder.
        return sorted(entry.filename for entry in self.sftp.listdir_attr(self.base or ".")
                      if stat.S_ISDIR(entry.st_mode or 0) and not entry.filename.startswith("."))

    def files(self, folder: str, *, archives: bool = False) -> list[InboxFile]:
        """The regular files of ``<folder>/depot/``. A symbolic link in the establishment's
        folder or its depot/ (and in traites/, rejetes/ and attente/ with ``archives``) is never
        followed: it is removed (the link only, never what it points to) and listed in
        ``self.links_removed`` for the ORU."""
        # depot/ as the link check just listed it (one round trip fewer per establishment, twice
        # a night): a link removed there was never a regular file.
        entries = self._refuse_links(folder, archives)
        return sorted(
            (InboxFile(posixpath.join(folder, DEPOT, e.filename), e.st_size or 0, int(e.st_mtime or 0))
             for e in entries if stat.S_ISREG(e.st_mode or 0)),
            key=lambda f: (f.mtime, f.path),
        )

    def _refuse_links(self, folder: str, archives: bool) -> list:
        """Remove the links of the establishment's folder and depot/ (and, with ``archives``, of
        its archive folders, which grow by a file a night); returns depot/'s entries ([] when it
        is missing, or was a link: removed with the establishment's own entries, listed first)."""
        depot = []
        for sub in ("", DEPOT) + ((PROCESSED, REJECTED, HELD) if archives else ()):
            directory = posixpath.join(folder, sub) if sub else folder
            try:
                entries = self.sftp.listdir_attr(self._path(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if stat.S_ISLNK(entry.st_mode or 0):
                    self.sftp.remove(self._path(directory, entry.filename))  # unlinks the link itself
                    self.links_removed.append(posixpath.join(directory, entry.filename))
            if sub == DEPOT:
                depot = entries
        return depot

    def second_channel(self) -> SftpInbox:
        """Another SFTP channel over the same SSH connection (downloads run ahead on it)."""
        channel = self._channel()
        return SftpInbox(channel, self.base, downloads=channel)

    def _channel(self) -> paramiko.SFTPClient:
        """A new SFTP channel over the same SSH connection, with a wide window for downloads."""
        transport = self.sftp.get_channel().get_transport()
        return paramiko.SFTPClient.from_transport(transport, window_size=DOWNLOAD_WINDOW)

    def close(self) -> None:
        if self._downloads is not None and self._downloads is not self.sftp:
            self._downloads.close()
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
        if self._downloads is None:
            self._downloads = self._channel()
        self._downloads.get(self._path(path), str(local))

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



def free_name(inbox, folder: str, name: str) -> str:
    """A name not used yet in ``folder``: files there are never overwritten."""
    candidate = posixpath.join(folder, name)
    counter = 1
    while inbox.exists(candidate) or inbox.exists(candidate + REPORT_SUFFIX):
        stem, dot, ext = name.rpartition(".")
        candidate = posixpath.join(folder, f"{stem}.{counter}.{ext}" if dot else f"{name}.{counter}")
        counter += 1
    return candidate
