"""The COPY of one file into the store: its kept visits into ``rpu`` while it is read, its
findings into ``record_issue``, each as lines of COPY's text format joined here (adapting
values one by one through psycopg costs as much as reading the file)."""

from __future__ import annotations

import json
from datetime import date, datetime, time

from rpu.formats.model import Header
from rpu.formats.rules import FILE, RULES, Finding
from rpu.formats.validation import FileReport, inspect_file

RPU_COLUMNS = (
    "received_file_id", "record_no", "finess", "ordre", "cp", "commune", "naissance", "sexe", "entree",
    "mode_entree", "provenance", "transport", "transport_pec", "motif", "gravite", "dp", "da", "actes",
    "sortie", "mode_sortie", "destination", "orient", "extensions", "flags",
)
ISSUE_COLUMNS = ("received_file_id", "record_no", "entree", "rule", "level", "field", "raw_value", "message")
# NULL is an empty cell: the visit's lines are joined in copy_visits, where a missing value is "".
_COPY_RPU = f"COPY rpu ({', '.join(RPU_COLUMNS)}) FROM STDIN (NULL '')"
_COPY_ISSUES = f"COPY record_issue ({', '.join(ISSUE_COLUMNS)}) FROM STDIN"


def copy_visits(conn, path, name, file_id, findings_spool, received_at=None, deadline=None) -> FileReport:
    """Stream the file's kept visits into ``rpu`` with COPY while it is read; the findings go
    to a spool file (a COPY is under way on the connection) and are copied afterwards."""
    with conn.cursor() as cursor, cursor.copy(_COPY_RPU) as copy:
        # Rows go to the connection a few hundred at a time: every copy.write() is a round
        # through psycopg and libpq, which cost more per visit than building its row.
        rows: list[tuple[str, ...]] = []
        file_cell = str(file_id)

        def row_sink(header: Header):
            header_cells = ("" if header.finess is None else header.finess,
                            "" if header.ordre is None else str(header.ordre))

            def add_row(position, entree, cp, commune, naissance, sexe, mode_entree, provenance, transport,
                        transport_pec, motif, gravite, dp, da, actes, sortie, mode_sortie, destination, orient,
                        extensions, flags) -> None:
                # One row of COPY's text format per visit, a tuple of cells joined by batch:
                # adapting 24 values one by one (write_row) cost as much as validating the visit.
                # A missing value is an empty cell (the COPY's NULL): no text value is ever empty.
                rows.append((
                    file_cell, str(position), *header_cells, cp or "", commune or "",
                    "" if naissance is None else _DAY_TEXT.get(naissance) or _day_text(naissance), sexe or "",
                    _timestamp(entree), mode_entree or "", provenance or "", transport or "", transport_pec or "", motif or "",
                    gravite or "", dp or "", _array(da) if da else "{}", _array(actes) if actes else "{}",
                    "" if sortie is None else _timestamp(sortie), mode_sortie or "", destination or "", orient or "",
                    json.dumps(extensions) if extensions else "", _array(flags) if flags else "{}",
                ))
                if len(rows) >= _ROWS_PER_WRITE:
                    copy.write(_copy_text(rows))
                    rows.clear()

            return add_row

        def on_finding(finding: Finding) -> None:
            if finding.level != FILE:
                findings_spool.write(_copy_line(_finding_row(file_id, finding)))

        report = inspect_file(path, name, row_sink=row_sink, on_finding=on_finding, received_at=received_at,
                              deadline=deadline)
        if rows:
            copy.write(_copy_text(rows))
        return report


_TABS = len(RPU_COLUMNS) - 1
_ROWS_PER_WRITE = 256  # about 64 KiB


def _copy_text(rows: list[tuple[str, ...]]) -> bytes:
    """Rows as COPY text lines. Values are received text: a batch whose tabs and line ends are
    exactly the separators, and that holds no backslash nor carriage return, goes as joined
    (four scans of the batch in C); otherwise each row is checked and the odd one escaped."""
    text = "\n".join(map("\t".join, rows)) + "\n"
    if not _plain(text, len(rows)):
        text = "".join(_line(cells) for cells in rows)
    return text.encode()


def _line(cells: tuple[str, ...]) -> str:
    line = "\t".join(cells) + "\n"
    return line if _plain(line, 1) else "\t".join(cell.translate(_ESCAPES) for cell in cells) + "\n"


def _plain(text: str, lines: int) -> bool:
    """Whether ``lines`` joined rows need no escaping: their tabs and line ends are exactly the
    separators, and no backslash nor carriage return is in them."""
    return text.count("\t") == _TABS * lines and text.count("\n") == lines and "\\" not in text and "\r" not in text


# Days and times of day as COPY text, remembered: str() of a datetime costs as much as checking
# a code, and a file's days and times of day repeat (bounded: 1,440 minutes, a few years of days).
_DAY_TEXT: dict[date, str] = {}
_CLOCK_TEXT: dict[time, str] = {}
_TEXTS_KEPT = 1 << 16


def _day_text(day: date) -> str:
    text = day.isoformat()
    if len(_DAY_TEXT) < _TEXTS_KEPT:
        _DAY_TEXT[day] = text
    return text


def _timestamp(value: datetime) -> str:
    day, clock = value.date(), value.time()
    return (_DAY_TEXT.get(day) or _day_text(day)) + (_CLOCK_TEXT.get(clock) or _clock_text(clock))


def _clock_text(clock: time) -> str:
    text = " " + clock.isoformat()
    if len(_CLOCK_TEXT) < _TEXTS_KEPT:
        _CLOCK_TEXT[clock] = text
    return text


def _array(items: list[str]) -> str:
    """A text[] literal. psycopg's generic list adaptation costs a third of a load; codes are
    quoted and escaped here, so any value received stays intact."""
    if not items:
        return "{}"
    joined = '","'.join(items)
    if "\\" in joined or '"' in joined:  # rare: each item escaped
        joined = '","'.join(item.replace("\\", "\\\\").replace('"', '\\"') for item in items)
    return '{"' + joined + '"}'


def _finding_row(file_id: int, finding: Finding) -> tuple:
    return (file_id, finding.record, finding.entree, finding.rule, RULES[finding.rule].level,
            finding.field, finding.value, finding.message)


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_line(row: tuple) -> bytes:
    """One line of COPY's text format."""
    cells = ("\\N" if value is None else str(value).translate(_ESCAPES) for value in row)
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
