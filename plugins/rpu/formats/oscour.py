"""Streaming reader of OSCOUR files: the header, then one raw record per PATIENT.

The reader is tolerant of what real producers send (rpu-format.md §2) and strict about what is
dangerous: the XML is untrusted, so entities are never resolved, no DTD is loaded, the network
is off, and any document carrying a DOCTYPE is refused before its content is used. Memory does
not grow with the file: each PATIENT is released as soon as it has been read.

The reader only turns XML into text fields; typing and validation live in ``rpu.formats.validation``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import BinaryIO

from lxml import etree

OSCOUR_ROOT, SYRIUS_ROOT = "OSCOUR", "SYRIUS"
ROOTS = (OSCOUR_ROOT, SYRIUS_ROOT)  # the envelopes this reader knows; files received must be OSCOUR
HEADER_TAG = "ETABLISSEMENT"
RECORD_TAG = "PATIENT"
_CHUNK = 1 << 16
_SNIFF_SLICE = 1 << 10
_MAX_GAP = 16 << 20  # bytes without a PATIENT after the header: the file is not made of visits


class FileRefused(Exception):
    """The file cannot be read as an OSCOUR document. ``rule`` is a code of ``rpu.formats.rules``."""

    def __init__(self, rule: str, detail: str | None = None):
        super().__init__(rule)
        self.rule = rule
        self.detail = detail


@dataclass(slots=True)
class RawRecord:
    """One PATIENT as text: the simple fields, the DA and ACTE lists, unknown (extension) elements.

    ``values`` holds the simple fields in the order of ``SIMPLE_FIELDS``, None for a field that
    is absent or empty. ``extensions`` lists the extension elements in file order as
    ``(after, name, value)``, ``after`` being the national element just before it (None when it
    comes first)."""

    position: int
    values: list[str | None] | tuple[str | None, ...]
    da: list[str] = field(default_factory=list)
    actes: list[str] = field(default_factory=list)
    extensions: list[tuple[str | None, str, str]] = field(default_factory=list)



@dataclass(slots=True)
class RawHeader:
    root: str
    fields: dict[str, str]


def _text(element) -> str:
    text = element.text
    return text if text is not None else ""


def _read_record(element, position: int) -> RawRecord:
    # The hot loop of every load. Nearly every PATIENT has the national children in the
    # national order: read by position, in C by the compiled reader (patient_reader.pyx) when
    # it is built, else by the Python one below. Anything else takes the general path.
    national = _read_national(element)
    if national is None:
        return _read_any_record(element, position)
    values, da, actes = national
    return RawRecord(position, values, da, actes)


def _read_national_in_python(element) -> tuple[list, list[str], list[str]] | None:
    """What the compiled reader's read_national gives: ``(values, da, actes)`` when the
    children are the national ones in the national order, else None. One comparison of the
    tags tells; the texts are then read by position (lxml's C iteration, no dict)."""
    children = element[:]
    if list(map(_TAG, children)) != _NATIONAL_TAGS:
        return None
    texts = list(map(_TEXT, children))
    da, actes = children[_DA_AT], children[_ACTES_AT]
    del texts[_DA_AT:_ACTES_AT + 1]
    return (texts, [item.text or "" for item in da if item.tag == "DA"] if len(da) else [],
            [item.text or "" for item in actes if item.tag == "ACTE"] if len(actes) else [])


def _read_any_record(element, position: int) -> RawRecord:
    """A PATIENT in any shape: fields in another order, missing, repeated (the last one
    counts), extension elements."""
    fields: dict[str, str] = {}
    da = actes = None
    for child in element:
        tag = child.tag
        if tag == "LISTE_DA":
            da = [item.text or "" for item in child if item.tag == "DA"]
        elif tag == "LISTE_ACTES":
            actes = [item.text or "" for item in child if item.tag == "ACTE"]
        else:
            fields[tag] = child.text or ""
    extensions = []
    if len(fields) > len(_KNOWN_FIELDS) or not fields.keys() <= _KNOWN_FIELDS:
        extensions = _extensions(element, fields)
    get = fields.get
    return RawRecord(position, tuple(get(name) or None for name in SIMPLE_FIELDS),
                     [] if da is None else da, [] if actes is None else actes, extensions)


def _extensions(element, fields: dict[str, str]) -> list[tuple[str | None, str, str]]:
    """The extension elements in file order, each with the national element it follows (a
    second pass over the PATIENT, only for records that carry extensions)."""
    extensions = []
    after = None
    for child in element:
        tag = child.tag
        if tag in _KNOWN_FIELDS or tag in _LIST_FIELDS:
            after = tag
        elif not isinstance(tag, str) or tag.startswith("{"):
            # One rule at both ends: the national format has no namespace, and what we cannot
            # write back faithfully we do not take in.
            raise FileRefused("NAMESPACE_FORBIDDEN", f"Élément trouvé : <{str(tag)[:60]}>.")
        else:
            fields.pop(tag, None)
            extensions.append((after, tag, child.text or ""))
    return extensions


_KNOWN_FIELDS = frozenset({
    "CP", "COMMUNE", "NAISSANCE", "SEXE", "ENTREE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT",
    "TRANSPORT_PEC", "MOTIF", "GRAVITE", "DP", "SORTIE", "MODE_SORTIE", "DESTINATION", "ORIENT",
    # SYRIUS replaces CP, COMMUNE and NAISSANCE by these.
    "CODEGEO", "AGE", "AGE_JOURS",
})
_LIST_FIELDS = frozenset({"LISTE_DA", "LISTE_ACTES"})
# The PATIENT children of the national format in their order (rpu-format.md §2), and the simple
# fields among them: the order of ``RawRecord.values``.
_NATIONAL_ORDER = (
    "CP", "COMMUNE", "NAISSANCE", "SEXE", "ENTREE", "MODE_ENTREE", "PROVENANCE", "TRANSPORT",
    "TRANSPORT_PEC", "MOTIF", "GRAVITE", "DP", "LISTE_DA", "LISTE_ACTES", "SORTIE", "MODE_SORTIE",
    "DESTINATION", "ORIENT",
)
_NATIONAL_TAGS = list(_NATIONAL_ORDER)  # compared with a list of tags: no tuple built per PATIENT
_DA_AT, _ACTES_AT = _NATIONAL_ORDER.index("LISTE_DA"), _NATIONAL_ORDER.index("LISTE_ACTES")
SIMPLE_FIELDS = tuple(name for name in _NATIONAL_ORDER if name not in _LIST_FIELDS)
_TAG, _TEXT = attrgetter("tag"), attrgetter("text")
# What may stand directly under the root: the header, PASSAGES, or PATIENT without PASSAGES.
_AT_ROOT = (HEADER_TAG, "PASSAGES", RECORD_TAG)


def _compiled_reader():
    """The compiled reader's read_national if it is built and reads a sample of every text
    shape exactly as the Python reader does; else the Python reader."""
    try:
        from rpu.formats.patient_reader import BUILT_WITH_LXML, NATIONAL_ORDER, read_national
    except ImportError:
        return _read_national_in_python
    if BUILT_WITH_LXML != etree.__version__:  # it reads lxml's structures: only those it was built for
        return _read_national_in_python
    sample = etree.fromstring(_SELF_CHECK)
    if NATIONAL_ORDER == _NATIONAL_ORDER and all(
            read_national(patient) == _read_national_in_python(patient) for patient in sample):
        return read_national
    return _read_national_in_python


# PATIENTs of every shape the compiled reader must read as lxml does: empty and absent texts,
# CDATA, character references, text split by a child, accents; and shapes it must hand back.
_SIMPLE_AFTER_DA = "<SORTIE>01/01/2026 12:00</SORTIE><MODE_SORTIE>6</MODE_SORTIE><DESTINATION/><ORIENT></ORIENT>"
_SELF_CHECK = (
    "<PASSAGES><PATIENT><CP>67000</CP><COMMUNE>SÉLESTAT &amp; <![CDATA[<îles>]]></COMMUNE><NAISSANCE/>"
    "<SEXE></SEXE><ENTREE>01/01/2026 10:00</ENTREE><MODE_ENTREE>8</MODE_ENTREE><PROVENANCE> </PROVENANCE>"
    "<TRANSPORT>PERSO<b/>x</TRANSPORT><TRANSPORT_PEC>AUCUN</TRANSPORT_PEC><MOTIF>&#233;&#x9;</MOTIF>"
    "<GRAVITE>2</GRAVITE><DP>J069</DP><LISTE_DA><DA>R509</DA><X>1</X><DA/><DA>a<![CDATA[b]]></DA></LISTE_DA>"
    "<LISTE_ACTES><ACTE>DEQP003</ACTE></LISTE_ACTES>" + _SIMPLE_AFTER_DA + "</PATIENT>"
    "<PATIENT><CP>67000</CP><COMMUNE/><NAISSANCE/><SEXE/><ENTREE/><MODE_ENTREE/><PROVENANCE/><TRANSPORT/>"
    "<TRANSPORT_PEC/><MOTIF/><GRAVITE/><DP/><LISTE_DA/><LISTE_ACTES/>" + _SIMPLE_AFTER_DA + "</PATIENT>"
    "<PATIENT><COMMUNE/><CP>67000</CP></PATIENT><PATIENT xmlns:n='urn:x'><n:CP/></PATIENT></PASSAGES>"
).encode()


_read_national = _compiled_reader()
COMPILED_READER = _read_national is not _read_national_in_python  # rpu region check says when it is not


class OscourReader:
    """Iterate over a file's records; ``header`` is set once the ETABLISSEMENT block is read.

    Usage::

        reader = OscourReader(path)
        for record in reader:        # RawRecord, in file order
            ...
        reader.header                # RawHeader (None if the file has no ETABLISSEMENT)

    Raises ``FileRefused`` for an empty, non-XML, truncated, DOCTYPE-carrying or wrong-root
    document, and for a header placed after the records.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO, roots: tuple[str, ...] = (OSCOUR_ROOT,),
                 deadline: float | None = None):
        self._source = source
        self._deadline = deadline
        self._roots = roots
        self.header: RawHeader | None = None
        self.root: str | None = None
        self.records = 0
        self._lines = 1  # lines fed to the parser so far
        self._tree_root = None  # the root element of the main parser's tree
        self._since_record = 0  # bytes fed since the last PATIENT
        self._released_in = None  # the parent of the last record released, and what may stand in it
        self._released_known: tuple[str, ...] = _AT_ROOT
        self.unknown = 0  # elements found where a PATIENT may stand, that are not PATIENT
        self.unknown_first: str | None = None

    def __iter__(self) -> Iterator[RawRecord]:
        if isinstance(self._source, str | os.PathLike):
            with open(self._source, "rb") as stream:
                yield from self._parse(stream)
        else:
            yield from self._parse(self._source)

    def _parse(self, stream: BinaryIO) -> Iterator[RawRecord]:
        # Only the end of ETABLISSEMENT, PATIENT and PASSAGES produce events: asking for every
        # element's events costs half the reading time, and start events would add one per
        # PATIENT for nothing (the tree's root is what close() returns). The root and any
        # DOCTYPE are checked first, by a small parser that reads no further than the root's
        # start tag.
        parser = etree.XMLPullParser(
            events=("end",),
            tag=(*ROOTS, HEADER_TAG, RECORD_TAG, "PASSAGES"),
            resolve_entities=False,
            load_dtd=False,
            no_network=True,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        sniffer = etree.XMLPullParser(events=("start",), resolve_entities=False, load_dtd=False,
                                      no_network=True, huge_tree=False)
        fed = 0
        while True:
            chunk = stream.read(_CHUNK)
            if not chunk:
                break
            fed += len(chunk)
            self._lines += chunk.count(b"\n")
            if self._deadline is not None and time.monotonic() > self._deadline:
                raise FileRefused("FILE_TOO_SLOW", f"Lu jusqu'à {fed >> 20} Mo.")
            if fed == len(chunk) and _prolog_has_doctype(chunk):
                # Refused on the bytes, before any parser sees the declarations.
                raise FileRefused("DTD_FORBIDDEN")
            try:
                if self.root is None:
                    self._sniff(sniffer, chunk)
                parser.feed(chunk)
                records_before = self.records
                yield from self._records(parser)
                self._since_record = 0 if self.records > records_before else self._since_record + len(chunk)
                if self.header is not None and self._since_record > _MAX_GAP:
                    # Megabytes without a PATIENT: elements of another name pile up in memory.
                    raise FileRefused("UNKNOWN_ELEMENT", f"Aucun passage <PATIENT> dans {_MAX_GAP >> 20} Mo du fichier.")
            except etree.XMLSyntaxError as error:
                raise self._syntax_refusal(error, stream) from None
        if fed == 0:
            raise FileRefused("EMPTY_FILE")
        try:
            if self.root is None:
                sniffer.close()
            root = parser.close()
            yield from self._records(parser)
        except etree.XMLSyntaxError as error:
            raise self._syntax_refusal(error, stream, at_end=True) from None
        if self.root is None:  # a document too short for the sniffer to have seen its root
            self._check_root(root)
        self._tree_root = root
        self._check_unknown_elements()

    def _check_unknown_elements(self) -> None:
        """Elements that are neither the header nor PATIENT (records named <Patient> or
        <PASSAGE>, say) are counted as they are released; any of them means that the file's
        visits cannot all be read: the file is refused with the count, never read as fewer
        visits (or an empty period, which would erase)."""
        root = self._tree_root
        if root is not None:  # what no PATIENT released: after the last one, or a file without any
            for child in root:
                if child.tag == "PASSAGES":
                    for grandchild in child:
                        self._count_unknown(grandchild, ("PATIENT",))
                else:
                    self._count_unknown(child, _AT_ROOT)
        if self.unknown:
            tag, count = self.unknown_first, self.unknown
            raise FileRefused("UNKNOWN_ELEMENT", f"{count} élément{'s' if count > 1 else ''} inconnu{'s' if count > 1 else ''}"
                                                 f" à la place d'un passage, le premier : <{tag[:40]}>.")

    def _count_unknown(self, element, known: tuple[str, ...]) -> None:
        tag = element.tag
        if tag in known:
            return
        self.unknown += 1
        if self.unknown_first is None:
            self.unknown_first = tag if isinstance(tag, str) else "?"

    def _release(self, element) -> None:
        """Free a PATIENT (or a finished PASSAGES) and everything already read before it, at
        every level up to the root, so that a file of any size is read in constant memory and
        linear time; unknown elements freed on the way are counted."""
        element.clear(keep_tail=False)
        parent = element.getparent()
        if parent is not None and parent is self._released_in:
            # The parent's earlier siblings and ancestors' were released with its first record,
            # and the parser never adds anything before an element it has started: only this
            # record's own earlier siblings are left (the usual case: the previous PATIENT).
            known = self._released_known
            while element.getprevious() is not None:
                first = parent[0]
                if first.tag not in known:  # the previous PATIENT, nearly always
                    self._count_unknown(first, known)
                del parent[0]
            return
        # lxml hands back the same proxy for a node while one is referenced: keeping the parent
        # lets the next record of the same PASSAGES take the short path above.
        self._released_in = parent
        self._released_known = _AT_ROOT if parent is None or parent.getparent() is None else ("PATIENT",)
        node = element
        while node is not None:
            parent = node.getparent()
            if parent is None:
                break
            known = _AT_ROOT if parent.getparent() is None else ("PATIENT",)
            while node.getprevious() is not None:
                first = parent[0]
                if first.tag == "PASSAGES":
                    for child in first:
                        self._count_unknown(child, ("PATIENT",))
                else:
                    self._count_unknown(first, known)
                del parent[0]
            node = parent

    def _sniff(self, sniffer, chunk: bytes) -> None:
        # Fed a little at a time: the sniffer reports every element's start, and a whole first
        # chunk (hundreds of visits) cost it ~5 ms a file, twice (routing, then loading).
        for offset in range(0, len(chunk), _SNIFF_SLICE):
            sniffer.feed(chunk[offset:offset + _SNIFF_SLICE])
            for _event, element in sniffer.read_events():
                self._check_root(element)
                return

    def _records(self, parser) -> Iterator[RawRecord]:
        for _event, element in parser.read_events():
            tag = element.tag
            if tag == RECORD_TAG:
                if self.header is None:
                    raise FileRefused("HEADER_MISSING")
                self.records += 1
                record = _read_record(element, self.records)
                self._release(element)
                yield record
            elif tag == "PASSAGES":
                if self.header is not None:
                    for child in element:
                        self._count_unknown(child, ("PATIENT",))
                    self._release(element)
            elif self.header is None and element.getparent() is not None \
                    and element.getparent().getparent() is None:
                self.header = RawHeader(self.root, {child.tag: _text(child) for child in element
                                                    if isinstance(child.tag, str)})

    def _check_root(self, element) -> None:
        tree = element.getroottree()
        # A DOCTYPE is how entity attacks (XXE, billion laughs) arrive; entities are never
        # expanded here, and the document is refused outright.
        if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
            raise FileRefused("DTD_FORBIDDEN")
        self.root = element.tag if isinstance(element.tag, str) else ""
        if self.root not in self._roots:
            raise FileRefused("WRONG_ROOT", f"Élément racine trouvé : <{self.root[:40]}>.")

    def _syntax_refusal(self, error, stream, at_end: bool = False) -> FileRefused:
        message = (error.msg or "").split(", line")[0]
        if "text node" in message.lower():  # libxml2 limits one text node to 10 MB (without huge_tree)
            return FileRefused("VALUE_TOO_LARGE", f"Ligne {error.lineno}.")
        if self.root is None and "DOCTYPE" in message.upper():
            return FileRefused("DTD_FORBIDDEN")
        # An error on the last line of a started document, with all of it read: the file stops
        # before its end (an interrupted transfer), whatever the parser's wording.
        exhausted = at_end or _stream_exhausted(stream)
        if self.root is not None and exhausted and (error.lineno or 0) >= self._lines \
                and "Extra content" not in message:
            return FileRefused("TRUNCATED", f"Le fichier s'arrête à la ligne {error.lineno}.")
        if self.root is None and not _has_content(stream):
            return FileRefused("EMPTY_FILE")
        return FileRefused("NOT_XML", f"Première erreur à la ligne {error.lineno} (détail technique : {message}).")


def _prolog_has_doctype(chunk: bytes) -> bool:
    """Whether a DOCTYPE comes before the root element in the first bytes of a document
    (ASCII-compatible encodings: those of OSCOUR files)."""
    text = chunk.removeprefix(b"\xef\xbb\xbf")
    position = 0
    while (position := text.find(b"<", position)) != -1:
        rest = text[position:position + 9]
        if rest.upper().startswith(b"<!DOCTYPE"):
            return True
        if rest.startswith(b"<?"):
            position = text.find(b"?>", position)
        elif rest.startswith(b"<!--"):
            position = text.find(b"-->", position)
        else:
            return False  # the root element: no DOCTYPE can follow
        if position == -1:
            return False
    return False


def _stream_exhausted(stream) -> bool:
    try:
        return stream.read(1) == b""
    except (OSError, ValueError):
        return False


def _has_content(stream) -> bool:
    try:
        stream.seek(0)
        return bool(stream.read(4096).strip())
    except (OSError, ValueError):
        return True


def read_header_fields(source) -> RawHeader | None:
    """The header alone, reading no further than needed (used to route a file)."""
    reader = OscourReader(source)
    iterator = iter(reader)
    try:
        next(iterator, None)
    finally:
        iterator.close()
    return reader.header
