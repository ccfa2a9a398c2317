"""The records the concentrator handles: a file header and one visit (one RPU, one PATIENT)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

# The PATIENT children in the national order (rpu-format.md §2).
OSCOUR_FIELDS = (
    "CP", "COMMUNE", "NAISSANCE", "SEXE", "ENTREE", "MODE_ENTREE", "PROVENANCE",
    "TRANSPORT", "TRANSPORT_PEC", "MOTIF", "GRAVITE", "DP", "LISTE_DA", "LISTE_ACTES",
    "SORTIE", "MODE_SORTIE", "DESTINATION", "ORIENT",
)


@dataclass(slots=True)
class Header:
    """The ETABLISSEMENT block of an OSCOUR (or SYRIUS) file."""

    root: str = "OSCOUR"
    finess: str | None = None
    ordre: int | None = None
    extract: datetime | None = None
    period_start: date | None = None
    # None while DATEFIN was empty; validation then closes the period on the extraction date.
    period_end: date | None = None
    # EXTRACT gave a day without a time: the extraction is taken to run to the end of that day.
    extract_day_only: bool = False

    @property
    def extracted_by(self) -> datetime | None:
        """The latest moment the extraction can have taken place."""
        if self.extract is None or not self.extract_day_only:
            return self.extract
        return self.extract.replace(hour=23, minute=59, second=59)


@dataclass(slots=True)
class Visit:
    """One emergency visit, typed. Codes are normalised text (trimmed, upper case, no dot);
    a code outside its value set is kept as received and flagged, never dropped."""

    position: int  # 1-based rank of the PATIENT element in its file
    entree: datetime
    cp: str | None = None
    commune: str | None = None
    naissance: date | None = None
    sexe: str | None = None
    mode_entree: str | None = None
    provenance: str | None = None
    transport: str | None = None
    transport_pec: str | None = None
    motif: str | None = None
    gravite: str | None = None
    dp: str | None = None
    da: list[str] = field(default_factory=list)
    actes: list[str] = field(default_factory=list)
    sortie: datetime | None = None
    mode_sortie: str | None = None
    destination: str | None = None
    orient: str | None = None
    # Producer extension elements (HMED, CIRCONSTANCE, *_UHCD...): kept, never a reason to reject,
    # in the order received, as [after, name, value]: ``after`` is the national element they are
    # written after, MOTIF (HMED, CIRCONSTANCE received there) or ORIENT (every other one).
    extensions: list = field(default_factory=list)
    # Rule codes of the quality flags raised on this visit.
    flags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VolumeGuard:
    """When a file is held for the ORU instead of applied (``[intake]`` in region.toml).

    A file is held when, on the days where it would replace what we hold, it would leave a day
    that held visits with none (``hold_when_day_emptied``), or remove more than
    ``hold_when_drop_over`` (a share) of the visits held for those days."""

    hold_when_day_emptied: bool = True
    hold_when_drop_over: float = 0.5


@dataclass(frozen=True)
class Limits:
    """How long one file may take (``[intake]`` in region.toml): waiting for its establishment's
    lock, any one SQL statement, reading the whole file (0: no limit)."""

    lock_seconds: int = 300
    statement_seconds: int = 1800
    read_seconds: int = 1800
