"""FINESS numbers: format and Luhn check digit (rpu-format.md §3)."""

from __future__ import annotations

import re

# Département (01-95, 2A, 2B, 97x/98x overseas) then digits; 9 characters in all.
_FORMAT = re.compile(r"^(?:0[1-9]|[1-8][0-9]|9[0-5]|2[AB]|9[78][0-9])[0-9]{6,7}$")


def is_well_formed(finess: str) -> bool:
    return len(finess) == 9 and bool(_FORMAT.match(finess))


def is_corsican(finess: str) -> bool:
    return finess[:2] in ("2A", "2B")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def check_digit_ok(finess: str) -> bool:
    """True when the Luhn key is right. Corsican numbers (2A/2B) are never refused on the key:
    how the check applies to them is not verified (rpu-format.md §3)."""
    if is_corsican(finess):
        return True
    return finess.isdigit() and luhn_ok(finess)


def with_check_digit(first_eight: str) -> str:
    """Complete 8 characters with their Luhn key (used by the generator and tests)."""
    for key in "0123456789":
        if luhn_ok(first_eight + key):
            return first_eight + key
    raise ValueError(first_eight)
