"""Write an OSCOUR file (rpu-format.md §2) from a header and a stream of visits.

The file is streamed: visits are consumed from any iterable (typically a database cursor) and
written in batches, so memory stays flat whatever the number of visits.

Why text and not lxml: lxml's incremental writer (``etree.xmlfile``) building one small
element per PATIENT runs at ~40,000 visits/s, too slow for a yearly regional extract (millions
of visits). Each PATIENT is therefore formatted as text here, with every value escaped by
``xml_escape`` (``&``, ``<``, ``>``, carriage return, and characters that XML 1.0 cannot carry),
which keeps the output well-formed UTF-8 at ~300,000 visits/s (formatting and writing). The layout is
fixed by the national format and has no attributes or namespaces, so nothing else needs care.

The helpers here (escaping, date formats, output handling) are shared with ``rpu.formats.syrius``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from itertools import islice
from operator import attrgetter
from typing import IO, Any

from lxml import etree

from rpu.formats.model import OSCOUR_FIELDS, Header, Visit

__all__ = ["EXTENSIONS_BEFORE_GRAVITE", "write_oscour", "xml_escape"]

# Producer extension elements that may be written between MOTIF and GRAVITE (when they were
# received there); every other extension (ENTREE_UHCD, MODE_SORTIE_UHCD, DESTINATION_UHCD,
# ORIENT_UHCD, anything unknown) goes after ORIENT. Within each place, the order received is kept.
EXTENSIONS_BEFORE_GRAVITE = frozenset({"HMED", "CIRCONSTANCE"})

# Visits formatted before one write to the output (about 0.6-1 KB each). Small on purpose:
# a batch string under ~128 KB reuses heap memory, while a larger one is mmapped and page-faulted
# afresh at each batch, which costs ~0.5 us per visit.
BATCH = 100

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'

# --- escaping -------------------------------------------------------------------------------

# Everything that cannot appear as is in XML character data: the markup characters, CR (a
# parser would turn a literal CR into LF, so it is written as a character reference), and the
# characters outside the XML 1.0 Char production (C0 controls other than TAB/LF/CR, lone
# surrogates, U+FFFE, U+FFFF), which no reference can carry: those become U+FFFD.
_INVALID = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0xD800, 0xE000), 0xFFFE, 0xFFFF]
_ESCAPES: dict[int, str] = {c: "\ufffd" for c in _INVALID}
_ESCAPES.update({ord("&"): "&amp;", ord("<"): "&lt;", ord(">"): "&gt;", ord("\r"): "&#13;"})
_NEEDS_ESCAPE = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]").search


def xml_escape(value: Any) -> str:
    """Return ``value`` as XML character data (None → empty string)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        value = str(value)
    if _NEEDS_ESCAPE(value) is None:
        return value
    return value.translate(_ESCAPES)


# --- dates ----------------------------------------------------------------------------------

_HHMM = [f"{h:02d}:{m:02d}" for h in range(24) for m in range(60)]
_DAY_CACHE: dict[int, str] = {}
_DAY_CACHE_MAX = 100_000


def fmt_date(d: date | None) -> str:
    """``dd/mm/yyyy`` (empty for None)."""
    if d is None:
        return ""
    key = d.toordinal()
    s = _DAY_CACHE.get(key)
    if s is None:
        s = f"{d.day:02d}/{d.month:02d}/{d.year:04d}"
        if len(_DAY_CACHE) < _DAY_CACHE_MAX:
            _DAY_CACHE[key] = s
    return s


def fmt_datetime_sec(dt: datetime | None) -> str:
    """``dd/mm/yyyy hh:mm:ss`` (the EXTRACT format; empty for None)."""
    if dt is None:
        return ""
    return f"{fmt_date(dt)} {_HHMM[dt.hour * 60 + dt.minute]}:{dt.second:02d}"


# --- output ---------------------------------------------------------------------------------

OutputTarget = str | os.PathLike[str] | IO[bytes]


@contextmanager
def open_output(out: OutputTarget) -> Iterator[IO[bytes]]:
    """Yield a binary stream for ``out``: a path (opened, truncated, closed at the end) or an
    already open binary file object (left open, flushed at the end)."""
    if hasattr(out, "write"):
        yield out  # type: ignore[misc]
        flush = getattr(out, "flush", None)
        if flush is not None:
            flush()
    else:
        with open(os.fspath(out), "wb") as f:  # type: ignore[arg-type]
            yield f


def header_xml(root: str, header: Header) -> str:
    """The declaration, the root start tag and the ETABLISSEMENT block.

    ORDRE None is written ``0`` (the value almost every unit has); a missing EXTRACT,
    DATEDEBUT or DATEFIN is written as an empty element (the caller should set them)."""
    ordre = 0 if header.ordre is None else header.ordre
    return (
        f"{XML_DECLARATION}<{root}>\n<ETABLISSEMENT>"
        f"<FINESS>{xml_escape(header.finess)}</FINESS>"
        f"<ORDRE>{xml_escape(ordre)}</ORDRE>"
        f"<EXTRACT>{fmt_datetime_sec(header.extract)}</EXTRACT>"
        f"<DATEDEBUT>{fmt_date(header.period_start)}</DATEDEBUT>"
        f"<DATEFIN>{fmt_date(header.period_end)}</DATEFIN>"
        "</ETABLISSEMENT>\n"
    )


def write_stream(out: OutputTarget, head: str, tail: str, patients: Iterable[str]) -> int:
    """Write ``head``, the PATIENT texts in batches of ``BATCH``, then ``tail``; return the
    number of PATIENT written."""
    count = 0
    it = iter(patients)
    with open_output(out) as f:
        write = f.write
        write(head.encode("utf-8"))
        while batch := list(islice(it, BATCH)):
            write("".join(batch).encode("utf-8"))
            count += len(batch)
        write(tail.encode("utf-8"))
    return count


# --- extensions -----------------------------------------------------------------------------

_RESERVED = frozenset(OSCOUR_FIELDS) | {"PATIENT", "PASSAGES", "ETABLISSEMENT", "DA", "ACTE", "OSCOUR"}
_CHECKED_NAMES: set[str] = set()


def _check_name(name: str) -> str:
    """``name`` if it can be written as a plain (namespace-less) element name; checked once
    per name with lxml's own name rules."""
    if name not in _CHECKED_NAMES:
        try:
            if not isinstance(name, str) or "{" in name:
                raise ValueError(name)
            etree.Element(name)
        except ValueError:
            raise ValueError(f"extension element name {name!r} is not a writable XML name") from None
        if name in _RESERVED:
            raise ValueError(f"extension element name {name!r} clashes with a national element")
        _CHECKED_NAMES.add(name)
    return name


def _extensions_xml(ext: list) -> tuple[str, str]:
    """(elements between MOTIF and GRAVITE, elements after ORIENT), from Visit.extensions:
    [after, name, value] in the order received."""
    before: list[str] = []
    after: list[str] = []
    for place, name, value in ext:
        _check_name(name)
        target = before if place == "MOTIF" and name in EXTENSIONS_BEFORE_GRAVITE else after
        target.append(f"<{name}>{xml_escape(value)}</{name}>")
    return "".join(before), "".join(after)


# --- OSCOUR ---------------------------------------------------------------------------------


class ElementCache(dict):
    """Raw value → the whole element as XML text (``<TAG>escaped value</TAG>``), built on
    first use. Visits repeat the same codes, postcodes, communes and diagnoses over and over:
    a dict lookup per field replaces escaping and formatting. Created per file written and
    bounded (``MAX`` entries; past it, values are formatted without being kept), so memory
    stays flat even for a free-text field whose values never repeat.

    ``render`` turns the raw value into the element's text (``xml_escape`` by default). An
    empty value (None or ``""``) gives ``""`` when ``omit_empty``, else the element rendered
    as usual (``<TAG></TAG>`` with ``xml_escape``)."""

    __slots__ = ("omit_empty", "render", "tag")
    MAX = 20_000

    def __init__(self, tag: str, render: Callable[[Any], str] = xml_escape, *, omit_empty: bool = False) -> None:
        super().__init__()
        self.tag = tag
        self.render = render
        self.omit_empty = omit_empty

    def __missing__(self, value: Any) -> str:
        if not value and self.omit_empty:
            text = ""
        else:
            text = f"<{self.tag}>{self.render(value)}</{self.tag}>"
        if len(self) < self.MAX:
            self[value] = text
        return text


def list_clean(values: list[str]) -> list[str]:
    """``values`` without empty items, escaped."""
    return [xml_escape(x) for x in values if x]


def items_xml(values: list[str], start: str, sep: str, end: str) -> str:
    """The DA (or ACTE) children of a non-empty list: ``start`` + items joined by ``sep`` +
    ``end``, e.g. ``<DA>``, ``</DA><DA>``, ``</DA>``. Empty items are left out."""
    joined = "".join(values) if "" not in values and None not in values else "\x00"
    # A fast, conservative test: printable (no control character, surrogate or noncharacter)
    # and no markup character. Failing it only sends the items through xml_escape.
    if not (joined.isprintable() and "&" not in joined and "<" not in joined and ">" not in joined):
        values = list_clean(values)
        if not values:
            return ""
    return start + sep.join(values) + end


_OSCOUR_TEXT = attrgetter(
    "cp", "commune", "sexe", "mode_entree", "provenance", "transport", "transport_pec", "motif", "gravite", "dp",
    "mode_sortie", "destination", "orient",
)


def _oscour_formatter() -> Callable[[Visit], str]:
    """A PATIENT formatter with its own element caches (one file's worth)."""
    cp_x, commune_x, sexe_x, mode_entree_x, provenance_x, transport_x, transport_pec_x, motif_x, gravite_x, dp_x, \
        mode_sortie_x, destination_x, orient_x = (
            ElementCache(tag) for tag in (
                "CP", "COMMUNE", "SEXE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT", "TRANSPORT_PEC", "MOTIF",
                "GRAVITE", "DP", "MODE_SORTIE", "DESTINATION", "ORIENT"))
    days = _DAY_CACHE
    hhmm = _HHMM

    def patient(v: Visit) -> str:
        # The hot loop: one attribute fetch, a dict lookup per field, cached date parts.
        cp, commune, sexe, mode_entree, provenance, transport, transport_pec, motif, gravite, dp, \
            mode_sortie, destination, orient = _OSCOUR_TEXT(v)
        da = v.da
        actes = v.actes
        ext = v.extensions
        if ext:
            ext_mid, ext_end = _extensions_xml(ext)
        else:
            ext_mid = ext_end = ""
        d = v.naissance
        naissance = (days.get(d.toordinal()) or fmt_date(d)) if d is not None else ""
        d = v.entree
        entree = f"{days.get(d.toordinal()) or fmt_date(d)} {hhmm[d.hour * 60 + d.minute]}"
        d = v.sortie
        sortie = f"{days.get(d.toordinal()) or fmt_date(d)} {hhmm[d.hour * 60 + d.minute]}" if d is not None else ""
        return (
            f"<PATIENT>{cp_x[cp]}{commune_x[commune]}<NAISSANCE>{naissance}</NAISSANCE>{sexe_x[sexe]}"
            f"<ENTREE>{entree}</ENTREE>{mode_entree_x[mode_entree]}{provenance_x[provenance]}"
            f"{transport_x[transport]}{transport_pec_x[transport_pec]}{motif_x[motif]}{ext_mid}"
            f"{gravite_x[gravite]}{dp_x[dp]}"
            f"<LISTE_DA>{items_xml(da, '<DA>', '</DA><DA>', '</DA>') if da else ''}</LISTE_DA>"
            f"<LISTE_ACTES>{items_xml(actes, '<ACTE>', '</ACTE><ACTE>', '</ACTE>') if actes else ''}</LISTE_ACTES>"
            f"<SORTIE>{sortie}</SORTIE>{mode_sortie_x[mode_sortie]}{destination_x[destination]}"
            f"{orient_x[orient]}{ext_end}</PATIENT>\n"
        )

    return patient


def write_oscour(out: OutputTarget, header: Header, visits: Iterable[Visit]) -> int:
    """Write an OSCOUR file and return the number of PATIENT written.

    ``out`` is a path or a binary file object (left open). The root is always ``OSCOUR``
    (``header.root`` is not used). Every PATIENT has the 18 national children in the national
    order, empty ones as ``<X></X>``; NAISSANCE is ``dd/mm/yyyy``, ENTREE/SORTIE
    ``dd/mm/yyyy hh:mm``, EXTRACT ``dd/mm/yyyy hh:mm:ss``. Extension elements are written
    in the order and place received: HMED and CIRCONSTANCE received between MOTIF and GRAVITE
    there, all others after ORIENT. Empty DA/ACTE items are left out.

    Raises ValueError for an extension name that is not a plain XML name or that clashes
    with a national element (the reader never produces one).
    """
    return write_stream(out, header_xml("OSCOUR", header) + "<PASSAGES>\n", "</PASSAGES>\n</OSCOUR>\n",
                        map(_oscour_formatter(), visits))
