"""How a synthetic file is written, never what it holds: the variants of real producers
(encodings, layouts, padding, self-closing tags...) and the dates as OSCOUR writes them."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from datetime import date, datetime
from xml.sax.saxutils import escape

# Ways real producers write the same records (rpu-format.md §2). Several can be combined with "+",
# e.g. "latin1+crlf" (at most one of latin1/cp1252/bom/nodecl, one of the passages layouts).
VARIANTS = (
    "standard", "latin1", "cp1252", "bom", "nodecl", "crlf", "seconds", "padding", "selfclosing",
    "extensions", "lowercase", "dotted", "passages_per_patient", "no_passages", "empty_datefin",
    "liste_actes_space",
)


_PAD_PATTERNS = (" {} ", "\n        {}\n      ", "{}  ", "\t{}", "  {}\n")
_LOWER_FIELDS = frozenset({"SEXE", "TRANSPORT", "TRANSPORT_PEC", "GRAVITE", "DP", "DA", "ACTE", "ORIENT",
                           "ORIENT_UHCD"})
_DOTTED_FIELDS = frozenset({"DP", "DA"})
_ENCODINGS = {"standard": ("UTF-8", "utf-8"), "latin1": ("ISO-8859-1", "latin-1"),
              "cp1252": ("windows-1252", "cp1252"), "bom": ("UTF-8", "utf-8-sig"), "nodecl": (None, "ascii")}


class FileStyle:
    """How one file is written; renders elements (tag + text) accordingly."""

    def __init__(self, variant: str):
        parts = [p.strip() for p in variant.split("+") if p.strip()] or ["standard"]
        unknown = [p for p in parts if p not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; expected some of {VARIANTS}")
        names = set(parts)
        encodings = names & {"latin1", "cp1252", "bom", "nodecl"}
        if len(encodings) > 1 or {"passages_per_patient", "no_passages"} <= names:
            raise ValueError(f"incompatible variants: {variant}")
        self.names = names
        self.declared_encoding, self.codec = _ENCODINGS[encodings.pop() if encodings else "standard"]
        self.ascii = "nodecl" in names
        self.typographic = "cp1252" in names
        self.pretty = "crlf" in names
        self.newline = "\r\n" if self.pretty else "\n"
        self.seconds = "seconds" in names
        self.padding = "padding" in names
        self.selfclosing = "selfclosing" in names
        self.extensions = "extensions" in names
        self.lowercase = "lowercase" in names
        self.dotted = "dotted" in names
        self.empty_datefin = "empty_datefin" in names
        self.actes_space = "liste_actes_space" in names
        self.passages = "per" if "passages_per_patient" in names else "none" if "no_passages" in names else "one"
        depth = 1 if self.passages == "none" else 2  # depth of PATIENT
        self.patient_indent = "  " * depth if self.pretty else ""
        self.child_prefix = "\n" + "  " * (depth + 1) if self.pretty else ""
        self.item_prefix = "\n" + "  " * (depth + 2) if self.pretty else ""

    # free text ------------------------------------------------------------------------------
    def text(self, value: str) -> str:
        if self.ascii:
            value = "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c))
        if self.typographic:
            value = value.replace("'", "\u2019")
        return escape(value)

    def code(self, tag: str, value: str) -> str:
        if self.dotted and tag in _DOTTED_FIELDS and len(value) > 3 and value[0].isalpha():
            value = f"{value[:3]}.{value[3:]}"
        if self.lowercase and tag in _LOWER_FIELDS:
            value = value.lower()
        return value

    # elements -------------------------------------------------------------------------------
    def pad(self, tag: str, value: str) -> str:
        if not self.padding:
            return value
        pattern = _PAD_PATTERNS[sum(map(ord, tag)) % len(_PAD_PATTERNS)]
        return pattern.format(value)

    def tags(self, tag: str, prefix: str | None = None) -> tuple[str, str]:
        """Opening and closing strings around a non-empty value (padding included)."""
        prefix = self.child_prefix if prefix is None else prefix
        before, after = self.pad(tag, "\0").split("\0")
        return f"{prefix}<{tag}>{before}", f"{after}</{tag}>"

    def el(self, tag: str, value: str, prefix: str | None = None) -> str:
        prefix = self.child_prefix if prefix is None else prefix
        if value == "":
            if self.selfclosing:
                return f"{prefix}<{tag}/>"
            if self.padding:
                return f"{prefix}<{tag}> </{tag}>"
            return f"{prefix}<{tag}></{tag}>"
        opening, closing = self.tags(tag, prefix)
        return f"{opening}{value}{closing}"

    def liste(self, tag: str, item: str, values: Iterable[str]) -> str:
        items = "".join(self.el(item, self.code(item, v), self.item_prefix) for v in values)
        opening = f"<{tag} >" if tag == "LISTE_ACTES" and self.actes_space else f"<{tag}>"
        if not items:
            if self.selfclosing:
                return f"{self.child_prefix}<{tag}/>"
            return f"{self.child_prefix}{opening}</{tag}>"
        return f"{self.child_prefix}{opening}{items}{self.child_prefix}</{tag}>"


# --- dates -------------------------------------------------------------------------------------

def date_text(day: date) -> str:
    return f"{day.day:02d}/{day.month:02d}/{day.year:04d}"


def datetime_text(moment: datetime) -> str:
    return f"{date_text(moment)} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
