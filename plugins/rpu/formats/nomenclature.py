"""Value sets and coherence tables of the OSCOUR format (rpu-format.md §2 and §3)."""

from __future__ import annotations

import re

VALUE_SETS: dict[str, frozenset[str]] = {
    "SEXE": frozenset({"M", "F", "I"}),
    "MODE_ENTREE": frozenset({"6", "7", "8"}),
    "PROVENANCE": frozenset({"1", "2", "3", "4", "5", "6", "7", "8"}),
    "TRANSPORT": frozenset({"PERSO", "AMBU", "VSAB", "SMUR", "HELI", "FO"}),
    "TRANSPORT_PEC": frozenset({"MED", "PARAMED", "AUCUN"}),
    "GRAVITE": frozenset({"1", "P", "2", "3", "4", "5", "D"}),
    "MODE_SORTIE": frozenset({"6", "7", "8", "9"}),
    "DESTINATION": frozenset({"1", "2", "3", "4", "6", "7"}),
    "ORIENT": frozenset({"HDT", "HO", "SC", "SI", "REA", "UHCD", "MED", "CHIR", "OBST", "FUGUE", "SCAM", "PSA", "REO"}),
}

# ORIENT values after a mutation/transfer (6/7) and after a return home (8).
ORIENT_AFTER_TRANSFER = frozenset({"HDT", "HO", "SC", "SI", "REA", "UHCD", "MED", "CHIR", "OBST"})
ORIENT_AFTER_HOME = frozenset({"FUGUE", "SCAM", "PSA", "REO"})

# Coherence of PROVENANCE with MODE_ENTREE: 6/7 come from a facility, 8 from home (6 and 7,
# HAD and médico-social, are tolerated after 8 since their addition in 2013).
PROVENANCE_BY_MODE_ENTREE = {
    "6": frozenset({"1", "2", "3", "4"}),
    "7": frozenset({"1", "2", "3", "4"}),
    "8": frozenset({"5", "8", "6", "7"}),
}
DESTINATION_BY_MODE_SORTIE = {
    "6": frozenset({"1", "2", "3", "4"}),
    "7": frozenset({"1", "2", "3", "4"}),
    "8": frozenset({"", "6", "7"}),
    "9": frozenset({""}),
}
ORIENT_BY_MODE_SORTIE = {
    "6": ORIENT_AFTER_TRANSFER,
    "7": ORIENT_AFTER_TRANSFER,
    "8": ORIENT_AFTER_HOME | {""},
    "9": frozenset({""}),
}

# \Z, not $: $ also matches before a final line end, and "J069\n" would pass as is.
CP_FORMAT = re.compile(r"^[0-9]{5}\Z")
# CIM-10 without the dot: a letter, two digits, up to three more characters (R53+1 exists).
CIM10_FORMAT = re.compile(r"^[A-Z][0-9]{2}[0-9A-Z+*]{0,3}\Z")
CCAM_FORMAT = re.compile(r"^[A-Z]{4}[0-9]{3}\Z")
