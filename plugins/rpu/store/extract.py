"""Reading visits back out of the regional store, streamed, for the outbound files.

Every outbound file (OSCOUR for Santé publique France, SYRIUS for ATIH, replays) is rebuilt
from the database, never copied from the inbox. A cumulative December SYRIUS extract holds a
whole year of an establishment, so visits are read through a server-side (named) cursor,
``ITERSIZE`` rows per round trip, and turned into ``Visit`` objects batch by batch: memory
stays flat whatever the period.

Why ``fetchmany`` + ``starmap`` rather than iterating the cursor: iterating a server-side
cursor row by row goes through psycopg's Python ``__next__`` for every row and halves the
throughput; a batch turned into visits by ``itertools.starmap(Visit, rows)`` runs in C.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import date, timedelta
from itertools import starmap

import psycopg

from rpu.formats.model import Visit
from rpu.store.db import query

# Rows fetched per round trip of the named cursor: large enough that the round trips cost
# nothing, small enough to stay a few megabytes.
ITERSIZE = 10_000

_cursor_numbers = itertools.count(1)


def _scope(finess: str, ordre: int, start: date, end: date) -> dict:
    return {"finess": finess, "ordre": ordre, "start": start, "end_exclusive": end + timedelta(days=1)}


def visits_for(conn: psycopg.Connection, finess: str, ordre: int, start: date, end: date, *,
               itersize: int = ITERSIZE, anonymised: bool = False) -> Iterator[Visit]:
    """The visits of one establishment whose ENTREE date is within [start, end] (both
    inclusive), ordered by ENTREE (then by received file and position in it).

    ``Visit.position`` is the visit's position in the file it was received in.
    ``anonymised=True`` reads only what the SYRIUS file is made of: COMMUNE is None and
    ``extensions``/``flags`` are empty (CP and NAISSANCE stay: CODEGEO and AGE come from them).

    Consume the iterator before using ``conn`` for anything else: the cursor lives in a
    transaction (a savepoint when one is already open on ``conn``). Closing the iterator early
    closes the cursor."""
    name = f"rpu_extract_{next(_cursor_numbers)}"
    sql = query("visits_for_syrius" if anonymised else "visits_for")
    # Binary rows: timestamps, dates and arrays decode faster than from text (~10 %).
    with conn.transaction(), conn.cursor(name=name, binary=True) as cursor:
        # The columns of the query are Visit's fields, in Visit's order.
        cursor.execute(sql, _scope(finess, ordre, start, end))
        if anonymised:
            while rows := cursor.fetchmany(itersize):
                yield from starmap(Visit, rows)
            return
        while rows := cursor.fetchmany(itersize):
            for visit in starmap(Visit, rows):
                if visit.extensions is None:  # NULL in the table when the producer sent none
                    visit.extensions = []
                yield visit


def count_visits(conn: psycopg.Connection, finess: str, ordre: int, start: date, end: date) -> int:
    """The number of visits ``visits_for`` would yield."""
    return conn.execute(query("count_visits"), _scope(finess, ordre, start, end)).fetchone()[0]
