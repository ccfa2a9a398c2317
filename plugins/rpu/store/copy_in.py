"""The COPY of one file into the store: its kept visits into ``rpu`` while it is read, its
findings into ``record_issue``, each as lines of COPY's text format joined here (adapting
values one by one through psycopg costs as much as reading the file)."""

from __future__ import annotations

import io
import json

from rpu.formats.model import Header
from rpu.formats.rules import FILE, RULES, Finding
from rpu.formats.validation import FileReport, inspect_file
from rpu.store.copy_text import ESCAPES, array, day_text, line, timestamp

RPU_COLUMNS = (
    "received_file_id", "record_no", "finess", "ordre", "cp", "commune", "naissance", "sexe", "entree",
    "mode_entree", "provenance", "transport", "transport_pec", "motif", "gravite", "dp", "da", "actes",
    "sortie", "mode_sortie", "destination", "orient", "extensions", "flags",
)
ISSUE_COLUMNS = ("received_file_id", "record_no", "entree", "rule", "level", "field", "raw_value", "message")
# NULL is an empty cell: a visit's missing values are "" in its line.
_COPY_RPU = f"COPY rpu ({', '.join(RPU_COLUMNS)}) FROM STDIN (NULL '')"
_COPY_ISSUES = f"COPY record_issue ({', '.join(ISSUE_COLUMNS)}) FROM STDIN"


def copy_visits(conn, path, name, file_id, findings_spool, received_at=None, deadline=None) -> FileReport:
    """Stream the file's kept visits into ``rpu`` with COPY while it is read; the findings go
    to a spool file (a COPY is under way on the connection) and are copied afterwards."""
    with conn.cursor() as cursor, cursor.copy(_COPY_RPU) as copy:
        lines = VisitLines(copy.write, file_id, CleanRows)
        report = inspect_file(path, name, row_sink=lines.row_sink, clean_sink=lines.clean_sink,
                              on_finding=_spooler(file_id, findings_spool), received_at=received_at,
                              deadline=deadline)
        lines.flush()
        return report


def _spooler(file_id, findings_spool):
    def on_finding(finding: Finding) -> None:
        if finding.level != FILE:
            findings_spool.write(_copy_line(_finding_row(file_id, finding)))
    return on_finding


_ROWS_PER_WRITE = 256  # about 64 KiB


class VisitLines:
    """The lines of COPY's text format of one file's kept visits, handed to ``write`` a few
    hundred at a time (every write is a round through psycopg and libpq, which cost more per
    visit than building its line). A visit that needs no finding has its line built in C
    (``clean_rows``: clean_rows.pyx's CleanRows, through ``clean_sink``), any other by
    ``row_sink``'s function (every one of them when ``clean_rows`` is None)."""

    def __init__(self, write, file_id: int, clean_rows=None):
        self.write, self.file_cell, self.clean_rows = write, str(file_id), clean_rows
        self.lines: list[str] = []
        self.clean = None  # the file's CleanRows, if any: how many visits it took

    def flush(self) -> None:
        if self.lines:
            self.write("".join(self.lines).encode())
            self.lines.clear()

    def clean_sink(self, header: Header, report: FileReport):
        if self.clean_rows is None:
            return None
        self.clean = self.clean_rows(header, report, self.file_cell, self.lines, self.flush, _ROWS_PER_WRITE)
        return self.clean.take

    def row_sink(self, header: Header):
        lines, flush, file_cell = self.lines, self.flush, self.file_cell
        header_cells = ("" if header.finess is None else header.finess,
                        "" if header.ordre is None else str(header.ordre))

        def add_row(position, entree, cp, commune, naissance, sexe, mode_entree, provenance, transport,
                    transport_pec, motif, gravite, dp, da, actes, sortie, mode_sortie, destination, orient,
                    extensions, flags) -> None:
            # A missing value is an empty cell (the COPY's NULL): no text value is ever empty.
            lines.append(line((
                file_cell, str(position), *header_cells, cp or "", commune or "",
                "" if naissance is None else day_text(naissance), sexe or "",
                timestamp(entree), mode_entree or "", provenance or "", transport or "", transport_pec or "",
                motif or "", gravite or "", dp or "", array(da) if da else "{}", array(actes) if actes else "{}",
                "" if sortie is None else timestamp(sortie), mode_sortie or "", destination or "", orient or "",
                json.dumps(extensions) if extensions else "", array(flags) if flags else "{}",
            )))
            if len(lines) >= _ROWS_PER_WRITE:
                flush()

        return add_row


def validate_file(path) -> FileReport:
    """What ``rpu validate`` checks: a file as an establishment would send it, read and validated
    by inspect_file, its clean visits counted in C (clean_rows.pyx, when built)."""
    if CleanRows is None:
        return inspect_file(path)
    return inspect_file(path, clean_sink=lambda header, report: CleanRows(header, report).take)


def lines_of(source, clean_rows=None) -> tuple[bytes, FileReport, int]:
    """A file's COPY text for ``rpu`` (file id 0), its report, and how many visits the compiled
    path took: what copy_visits writes, without a database (the self-check below, the tests)."""
    written: list[bytes] = []
    lines = VisitLines(written.append, 0, clean_rows)
    report = inspect_file(source, row_sink=lines.row_sink, clean_sink=lines.clean_sink)
    lines.flush()
    return b"".join(written), report, lines.clean.taken if lines.clean is not None else 0


def counted(report: FileReport) -> tuple:
    """What a report counts of its visits (the compiled path must count as the checker does)."""
    return (report.status, report.records, report.rejected_records, report.flagged_records,
            report.normalised_values, dict(report.rule_counts), dict(report.visits_per_day), report.first_entree,
            report.last_entree)


def _compiled_clean_rows():
    """clean_rows.pyx's CleanRows if it is built and, on a sample, takes visits and writes the
    lines and counts of the checker's path; else None (every visit takes the checker's path)."""
    try:
        from rpu.store.clean_rows import CleanRows as compiled
    except ImportError:
        return None
    text, report, _ = lines_of(io.BytesIO(_SELF_CHECK))  # first: the checker fills its caches
    compiled_text, compiled_report, taken = lines_of(io.BytesIO(_SELF_CHECK), compiled)
    if taken and compiled_text == text and counted(compiled_report) == counted(report):
        return compiled
    return None


_PATIENTS = (
    "<PATIENT><CP>67000</CP><COMMUNE>STRASBOURG</COMMUNE><NAISSANCE>11/03/1948</NAISSANCE><SEXE>F</SEXE>"
    "<ENTREE>20/11/2026 00:00</ENTREE><MODE_ENTREE>8</MODE_ENTREE><PROVENANCE>5</PROVENANCE><TRANSPORT>SMUR"
    "</TRANSPORT><TRANSPORT_PEC>MED</TRANSPORT_PEC><MOTIF>NEURO02</MOTIF><GRAVITE>5</GRAVITE><DP>I639</DP>"
    "<LISTE_DA><DA>N189</DA><DA>E119</DA></LISTE_DA><LISTE_ACTES><ACTE>ZCQM001</ACTE></LISTE_ACTES>"
    "<SORTIE>20/11/2026 05:03:10</SORTIE><MODE_SORTIE>7</MODE_SORTIE><DESTINATION>1</DESTINATION><ORIENT>MED"
    "</ORIENT></PATIENT>"
    "<PATIENT><CP>67201</CP><COMMUNE>SAINT\\DIÉ</COMMUNE><NAISSANCE>17/08/2026</NAISSANCE><SEXE>M</SEXE>"
    "<ENTREE>21/11/2026 23:59</ENTREE><MODE_ENTREE>8</MODE_ENTREE><PROVENANCE>5</PROVENANCE><TRANSPORT>PERSO"
    "</TRANSPORT><TRANSPORT_PEC/><MOTIF>a  b</MOTIF><GRAVITE>2</GRAVITE><DP>j06.9</DP><LISTE_DA/>"
    "<LISTE_ACTES><ACTE>ZCQM001</ACTE><ACTE>DEQP003</ACTE></LISTE_ACTES><SORTIE/><MODE_SORTIE>8</MODE_SORTIE>"
    "<DESTINATION/><ORIENT/></PATIENT>"
    "<PATIENT><NAISSANCE>20/04/1971</NAISSANCE><SEXE>I</SEXE><ENTREE>26/11/2026 10:00</ENTREE>"
    "<MODE_ENTREE>6</MODE_ENTREE><PROVENANCE>1</PROVENANCE><GRAVITE>X</GRAVITE><DP>R51</DP>"
    "<SORTIE>26/11/2026 09:00</SORTIE></PATIENT>"
)
# The header, then each visit twice: the checker's path takes the first (and fills its caches),
# the compiled path may take the second.
_SELF_CHECK = (
    "<OSCOUR><ETABLISSEMENT><FINESS>670780691</FINESS><ORDRE>0</ORDRE><EXTRACT>27/11/2026 02:30:00</EXTRACT>"
    "<DATEDEBUT>20/11/2026</DATEDEBUT><DATEFIN>26/11/2026</DATEFIN></ETABLISSEMENT><PASSAGES>"
    + _PATIENTS * 2 + "</PASSAGES></OSCOUR>").encode()


def _finding_row(file_id: int, finding: Finding) -> tuple:
    return (file_id, finding.record, finding.entree, finding.rule, RULES[finding.rule].level,
            finding.field, finding.value, finding.message)


def _copy_line(row: tuple) -> bytes:
    """One line of COPY's text format."""
    cells = ("\\N" if value is None else str(value).translate(ESCAPES) for value in row)
    return ("\t".join(cells) + "\n").encode("utf-8")


def copy_findings(conn, findings_spool) -> None:
    findings_spool.seek(0)
    with conn.cursor() as cursor, cursor.copy(_COPY_ISSUES) as copy:
        while chunk := findings_spool.read(1 << 20):
            copy.write(chunk)


def insert_findings(conn, file_id: int, findings: list[Finding]) -> None:
    with conn.cursor() as cursor, cursor.copy(_COPY_ISSUES) as copy:
        for finding in findings:
            copy.write_row(_finding_row(file_id, finding))


CleanRows = _compiled_clean_rows()
COMPILED_ROWS = CleanRows is not None  # rpu region check says when it is not
