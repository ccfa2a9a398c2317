"""What the ingest tells: the report beside each file it moved, and the ORU's e-mail about the
files and folders to check (held files, technical refusals, sender mismatches, unknown
folders, symbolic links); the run's summary that carries them from task to task.

The words are in ``include/templates/`` (``file_report``, ``file_verdict``,
``inbox_check``); values from outside (file names, header values) go through
``plain_text.one_line`` or ``shown`` there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from rpu.config.region import Region
from rpu.flows.days import fr
from rpu.flows.plain_text import render, subject
from rpu.flows.report import format_report, needs_report
from rpu.store.loader import LoadResult

Notify = Callable[[list[str], str, str], None]  # (recipients, subject, body)


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
    sender_mismatches: list[dict] = field(default_factory=list)  # {file, finess}: the FINESS of its header
    failed: list[str] = field(default_factory=list)  # files left in depot/ after an unexpected error
    held: list[dict] = field(default_factory=list)  # for the ORU: each held file and its figures per day
    technical: list[dict] = field(default_factory=list)  # for the ORU: files refused on an unexpected error
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



VERDICTS = {"duplicate": "DOUBLON", "superseded": "DÉPASSÉ", "held": "EN ATTENTE"}


def report_text(result: LoadResult) -> str | None:
    """The report written beside the file, or None when there is nothing to say."""
    report = result.report
    if result.status in VERDICTS:
        return render("file_verdict.txt.j2", file=result.file, verdict=VERDICTS[result.status], reason=result.reason)
    partial = result.status == "loaded" and bool(result.days_not_applied)
    if report and (needs_report(report) or partial):
        return format_report(report, outcome="chargé" if result.status == "loaded" else None,
                             applied=result.reason if result.status == "loaded" else None)
    return None


def held_file(result: LoadResult) -> dict:
    """What the ORU is told about one held file: which, and the figures per day (JSON: it
    travels from the load tasks to the one that tells the ORU)."""
    header = result.report.header
    return {"id": result.received_file_id, "file": result.file, "finess": header.finess, "ordre": header.ordre,
            "start": fr(header.period_start), "end": fr(header.period_end),
            "days": [{"day": fr(day.day), "held": day.held, "brought": day.brought} for day in result.held_days]}


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
    body = render("inbox_check.txt.j2", failed=summary.failed, links_removed=summary.links_removed,
                  held=summary.held, technical=summary.technical, sender_mismatches=summary.sender_mismatches,
                  unknown_folders=new_unknown)
    notify(list(region.operator_emails), subject("inbox_check_subject.txt.j2", region_code=region.code), body)
    with conn.transaction():
        conn.execute("UPDATE inbox_unknown_folder SET notified_at = now() WHERE folder = ANY(%s)", (new_unknown,))
