"""Loading one OSCOUR file into the regional store: one file, one transaction.

In that transaction: the intake journal row, the visits streamed in with COPY while the file
is read, the findings, and only then the removal of what the file replaces (same FINESS and
ORDRE, ENTREE date within its period). A rejected, duplicate or superseded file changes
nothing but its journal row. A crash at any point leaves the database as it was: PostgreSQL
rolls the transaction back, and the file is still in the inbox for the next run.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from rpu.model import Visit
from rpu.rules import FILE, RULES, Finding
from rpu.store import query
from rpu.timeliness import record_reception
from rpu.validation import FileReport, inspect_file

RPU_COLUMNS = (
    "received_file_id", "record_no", "finess", "ordre", "cp", "commune", "naissance", "sexe", "entree",
    "mode_entree", "provenance", "transport", "transport_pec", "motif", "gravite", "dp", "da", "actes",
    "sortie", "mode_sortie", "destination", "orient", "extensions", "flags",
)
ISSUE_COLUMNS = ("received_file_id", "record_no", "entree", "rule", "level", "field", "raw_value", "message")
_COPY_RPU = f"COPY rpu ({', '.join(RPU_COLUMNS)}) FROM STDIN"
_COPY_ISSUES = f"COPY record_issue ({', '.join(ISSUE_COLUMNS)}) FROM STDIN"


@dataclass
class LoadResult:
    file: str
    status: str  # loaded, duplicate, superseded, rejected
    received_file_id: int
    report: FileReport | None = None
    replaced_records: int = 0
    same_as: int | None = None  # the journal row of the earlier file (duplicate of / superseded by)
    same_as_name: str | None = None
    same_as_at: datetime | None = None
    # Visits dated outside the file's period, on days another file already covers (not loaded).
    outside_period_dropped: int = 0

    @property
    def loaded_records(self) -> int:
        if self.status != "loaded" or not self.report:
            return 0
        return self.report.kept_records - self.outside_period_dropped

    @property
    def reason(self) -> str | None:
        earlier = f"« {self.same_as_name} »" + (f" reçu le {self.same_as_at:%d/%m/%Y à %H:%M}" if self.same_as_at else "")
        if self.status == "duplicate":
            return f"Fichier identique au fichier {earlier} (journal n°{self.same_as}) : rien n'a changé."
        if self.status == "superseded":
            return (f"Extraction plus ancienne que celle du fichier {earlier} (journal n°{self.same_as}), déjà "
                    "appliqué sur une période commune : ce fichier n'a pas été appliqué, rien n'a changé.")
        if self.status == "rejected" and self.report:
            return " ".join(f.message for f in self.report.file_findings)
        return None


def sha256_of(path: str | os.PathLike) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def load_file(
    conn: psycopg.Connection,
    path: str | os.PathLike,
    *,
    sender: str | None = None,
    name: str | None = None,
    extra_findings: list[Finding] | None = None,
) -> LoadResult:
    """Validate and load one file. ``extra_findings`` are file-level findings decided by the
    caller (e.g. ``SENDER_MISMATCH`` by the ingest); any of them rejects the file."""
    name = name or Path(path).name
    sha256, size = sha256_of(path)
    with conn.transaction():
        # A file refused by the caller (SENDER_MISMATCH) is refused even if its bytes are known.
        same = None if extra_findings else conn.execute(query("find_same_file"), {"sha256": sha256}).fetchone()
        if same:
            file_id = _open_journal(conn, name, sender, sha256, size, status="duplicate")
            conn.execute(query("close_duplicate"), {"id": file_id, "same_as": same[0]})
            return LoadResult(name, "duplicate", file_id, same_as=same[0], same_as_name=same[1], same_as_at=same[2])

        file_id = _open_journal(conn, name, sender, sha256, size, status="loading")
        status, same_as, same_as_name, same_as_at, replaced, outside_dropped = "loaded", None, None, None, 0, 0
        with tempfile.TemporaryFile() as findings_spool:
            with conn.transaction():  # a savepoint: the visits go only if the file is applied
                report = _copy_visits(conn, path, name, file_id, findings_spool)
                for finding in extra_findings or ():
                    report.add(finding)
                if report.rejected:
                    status = "rejected"
                    raise psycopg.Rollback()
                # Loads of one establishment are serialised from here to the commit, so that the
                # superseded check and the replacement see every earlier load.
                header = report.header
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{header.finess}/{header.ordre}",))
                scope = _scope(report, file_id)
                newer = conn.execute(query("find_newer_extract"), scope).fetchone()
                if newer:
                    status, same_as, same_as_name, same_as_at = "superseded", *newer
                    raise psycopg.Rollback()
                replaced = conn.execute(query("replace_scope"), scope).rowcount
                if report.rule_counts["ENTREE_OUTSIDE_PERIOD"]:
                    outside_dropped = conn.execute(query("drop_covered_outside_period"), scope).rowcount
                    replaced += conn.execute(query("replace_outside_period"), scope).rowcount
                _copy_findings(conn, findings_spool)
        if status == "rejected":
            _insert_findings(conn, file_id, report.file_findings)
        result = LoadResult(name, status, file_id, report, replaced_records=replaced, same_as=same_as,
                            same_as_name=same_as_name, same_as_at=same_as_at, outside_period_dropped=outside_dropped)
        if status == "loaded":
            record_reception(conn, scope)  # timeliness: the first file that held each visit
        conn.execute(query("close_received_file"), _journal_row(file_id, status, report, result))
        return result


def _open_journal(conn, name, sender, sha256, size, status) -> int:
    row = conn.execute(
        "INSERT INTO received_file (file_name, sender, sha256, size_bytes, status)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (name, sender, sha256, size, status),
    ).fetchone()
    return row[0]


def _journal_row(file_id: int, status: str, report: FileReport | None = None, result: LoadResult | None = None,
                 same_as: int | None = None) -> dict:
    header = report.header if report else None
    file_rule = report.file_findings[0].rule if report and report.rejected else None
    return {
        "id": file_id,
        "status": status,
        "finess": header.finess if header else None,
        "ordre": header.ordre if header else None,
        "extract": header.extract if header else None,
        "period_start": header.period_start if header else None,
        "period_end": header.period_end if header else None,
        "records": report.records if report else 0,
        "loaded_records": result.loaded_records if result else 0,
        "rejected_records": report.rejected_records if report else 0,
        "flagged_records": report.flagged_records if report else 0,
        "normalised_values": report.normalised_values if report else 0,
        "replaced_records": result.replaced_records if result else 0,
        "rule": file_rule,
        "reason": result.reason if result else None,
        "same_as": result.same_as if result else same_as,
    }


def _scope(report: FileReport, file_id: int) -> dict:
    header = report.header
    return {
        "file_id": file_id,
        "finess": header.finess,
        "ordre": header.ordre,
        "extract": header.extract,
        "period_start": header.period_start,
        "period_end": header.period_end,
        "period_end_exclusive": header.period_end + timedelta(days=1),
    }


def _copy_visits(conn, path, name, file_id, findings_spool) -> FileReport:
    """Stream the file's kept visits into ``rpu`` with COPY while it is read; the findings go
    to a spool file (a COPY is under way on the connection) and are copied afterwards."""
    with conn.cursor() as cursor, cursor.copy(_COPY_RPU) as copy:
        write_row = copy.write_row

        def on_visit(visit: Visit, header) -> None:
            write_row((
                file_id, visit.position, header.finess, header.ordre, visit.cp, visit.commune,
                visit.naissance, visit.sexe, visit.entree, visit.mode_entree, visit.provenance,
                visit.transport, visit.transport_pec, visit.motif, visit.gravite, visit.dp, _array(visit.da),
                _array(visit.actes), visit.sortie, visit.mode_sortie, visit.destination, visit.orient,
                Jsonb(visit.extensions) if visit.extensions else None, _array(visit.flags),
            ))

        def on_finding(finding: Finding) -> None:
            if finding.level != FILE:
                findings_spool.write(_copy_line(_finding_row(file_id, finding)))

        return inspect_file(path, name, on_visit=on_visit, on_finding=on_finding)


def _array(items: list[str]) -> str:
    """A text[] literal. psycopg's generic list adaptation costs a third of a load; codes are
    quoted and escaped here, so any value received stays intact."""
    if not items:
        return "{}"
    return "{" + ",".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items) + "}"


def _finding_row(file_id: int, finding: Finding) -> tuple:
    return (file_id, finding.record, finding.entree, finding.rule, RULES[finding.rule].level,
            finding.field, finding.value, finding.message)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_line(row: tuple) -> bytes:
    """One line of COPY's text format."""
    cells = ("\\N" if value is None else str(value).translate(_ESCAPES) for value in row)
    return ("\t".join(cells) + "\n").encode("utf-8")


def _copy_findings(conn, findings_spool) -> None:
    findings_spool.seek(0)
    with conn.cursor() as cursor, cursor.copy(_COPY_ISSUES) as copy:
        while chunk := findings_spool.read(1 << 20):
            copy.write(chunk)


def _insert_findings(conn, file_id: int, findings: list[Finding]) -> None:
    with conn.cursor() as cursor, cursor.copy(_COPY_ISSUES) as copy:
        for finding in findings:
            copy.write_row(_finding_row(file_id, finding))
