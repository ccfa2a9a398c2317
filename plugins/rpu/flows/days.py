"""Days as people read them (« 02/03/2026 », « du 02/03/2026 au 05/03/2026 ») and as the
monitors count them. Pure functions, under both the absence monitor and the replays."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

WEEKDAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")


def fr(day: date | None) -> str:
    return day.strftime("%d/%m/%Y") if day else "?"


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Consecutive days grouped into (first, last) ranges."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and day == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], day)
        else:
            out.append((day, day))
    return out


def ranges_fr(days: Iterable[date]) -> str:
    return ", ".join(fr(a) if a == b else f"du {fr(a)} au {fr(b)}" for a, b in ranges(days))


def days_fr(days: list[date]) -> str:
    """"le 02/03/2026", or "du 02/03/2026 au 04/03/2026" (every day between)."""
    return f"le {fr(days[0])}" if len(days) == 1 else ranges_fr(days)
