"""The schemas of the files we send, and the check every outbound file passes before it leaves.

``include/xsd/oscour.xsd`` (Santé publique France) and ``include/xsd/syrius.xsd`` (ATIH) state
what the national platforms accept (rpu-format.md §2 and §4). A file built from the regional
database is checked against its schema, streamed (constant memory whatever its size), before
it is renamed into place: an invalid file never reaches the outbox, so it is never sent.
"""

from __future__ import annotations

import os
import zipfile
from functools import cache
from pathlib import Path

from lxml import etree

XSD_DIR = Path(os.environ.get("RPU_XSD_DIR", Path(__file__).resolve().parents[3] / "include" / "xsd"))
OSCOUR, SYRIUS = "oscour", "syrius"


class InvalidOutput(Exception):
    """A file we built does not conform to its national schema: it must not be sent."""


@cache
def schema(kind: str) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.XMLSchema(etree.parse(str(XSD_DIR / f"{kind}.xsd"), parser))


def check(source, kind: str) -> int:
    """Validate a file (path or binary stream) against the ``kind`` schema and return its
    number of PATIENT. Raises ``InvalidOutput`` with the first error and its line."""
    count = 0
    try:
        for _event, element in etree.iterparse(source, events=("end",), tag="PATIENT", schema=schema(kind),
                                               resolve_entities=False, no_network=True, huge_tree=True):
            count += 1
            element.clear(keep_tail=False)
            parent = element.getparent()
            while element.getprevious() is not None:
                del parent[0]
    except etree.XMLSyntaxError as error:
        where = f"ligne {error.lineno}" if error.lineno else f"au PATIENT n°{count + 1}"
        raise InvalidOutput(f"fichier {kind.upper()} non conforme au schéma {kind}.xsd, {where} : {error.msg}") from None
    return count


def check_syrius_zip(path: str | os.PathLike) -> int:
    """Validate the single entry of a SYRIUS zip; return its number of PATIENT."""
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if len(names) != 1:
            raise InvalidOutput(f"archive SYRIUS à {len(names)} entrées (une seule attendue)")
        with archive.open(names[0]) as entry:
            return check(entry, SYRIUS)
