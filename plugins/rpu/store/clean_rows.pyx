# cython: language_level=3, boundscheck=False, wraparound=False
"""The COPY row of a visit that needs no finding, checked and written in C.

Most visits of a night are clean: every code already seen valid, both dates already read, the
cross-field tables satisfied, ENTREE inside the period. For them the checks of
``rpu.formats.validation._VisitChecker.check`` and the row of ``rpu.store.copy_in`` cost over
half of a load in Python. ``CleanRows.take`` does the same for such a visit only: it answers
True when the visit is clean (counted in the report as the checker counts it, its line added),
and False for anything else, which then takes the checker's path and gets its findings there.
It never flags nor normalises: a value that would need either is not taken. It looks up the
checker's caches (values already seen valid, dates already read), which the checker fills; a
date not read yet is read here by the checker's own parse_date or parse_datetime.

``rpu.store.copy_in`` uses it only if it writes, for a sample of visits, the very lines the
checker's path writes; tests/test_clean_rows.py holds the two paths equal over every producer
variant, every defect and fuzzed visits. Optional: without a C compiler every visit takes the
checker's path (same rows, slower).
"""

from cpython.datetime cimport (
    date_day,
    date_month,
    date_year,
    datetime_new,
    import_datetime,
    time_hour,
    time_microsecond,
    time_minute,
    time_second,
)

from rpu.formats.dates import SEEN_CLOCKS, SEEN_DATES, SEEN_DAYS, parse_date, parse_datetime
from rpu.formats.nomenclature import DESTINATION_BY_MODE_SORTIE, ORIENT_BY_MODE_SORTIE, PROVENANCE_BY_MODE_ENTREE
from rpu.formats.validation import (
    MAX_STAY,
    _CCAM_SEEN,
    _CIM10_SEEN,
    _COMMUNES,
    _CP_SEEN,
    _DESTINATIONS,
    _DESTINATIONS_OR_NONE,
    _GRAVITES,
    _MODES_ENTREE,
    _MODES_SORTIE,
    _MOTIFS,
    _ORIENTS,
    _ORIENTS_OR_NONE,
    _PROVENANCES,
    _PROVENANCES_OR_NONE,
    _SEXES,
    _TRANSPORTS,
    _TRANSPORTS_PEC,
)
from rpu.store.copy_text import CLOCK_TEXT, DAY_TEXT, clock_text, day_text, line

import_datetime()

cdef dict seen_days = SEEN_DAYS, seen_clocks = SEEN_CLOCKS, seen_dates = SEEN_DATES
cdef dict communes = _COMMUNES, motifs = _MOTIFS
cdef set cp_seen = _CP_SEEN, cim10_seen = _CIM10_SEEN, ccam_seen = _CCAM_SEEN
cdef dict provenance_by_mode = PROVENANCE_BY_MODE_ENTREE, destination_by_mode = DESTINATION_BY_MODE_SORTIE
cdef dict orient_by_mode = ORIENT_BY_MODE_SORTIE
cdef dict day_texts = DAY_TEXT, clock_texts = CLOCK_TEXT
cdef Py_ssize_t _TABS = 23  # between the 24 cells of a row


cdef inline bint _all_in(list items, set seen):
    for item in items:
        if item not in seen:
            return False
    return True


cdef tuple _halves(str text):
    # (day, time of day) of an ENTREE or a SORTIE: its halves already read, or read now by the
    # checker's parse_datetime, which puts the halves of a text in the national spelling in the
    # caches (keys without surrounding whitespace); None for anything else (not taken).
    cdef str day_key = text[:10], clock_key = text[10:]
    day, clock = seen_days.get(day_key), seen_clocks.get(clock_key)
    if day is None or clock is None:
        try:
            parse_datetime(text)
        except ValueError:
            return None
        day, clock = seen_days.get(day_key), seen_clocks.get(clock_key)
        if day is None or clock is None:
            return None
    return day, clock


cdef inline str _timestamp(day, clock):
    # copy_text.timestamp, its caches looked up here.
    return (day_texts.get(day) or day_text(day)) + (clock_texts.get(clock) or clock_text(clock))


cdef inline object _combine(day, clock):
    # datetime.combine of a naive time, through the C API.
    return datetime_new(date_year(day), date_month(day), date_day(day), time_hour(clock), time_minute(clock),
                        time_second(clock), time_microsecond(clock), None)


cdef inline str _array(list items):
    # copy_text.array for codes already seen valid (letters, digits, + and *: nothing to escape).
    return '{"' + '","'.join(items) + '"}' if items else "{}"


cdef class CleanRows:
    """For one file: ``take(raw)`` for each of its visits (see the module's text). ``rows`` is the
    loader's batch of lines; ``flush`` is called when it holds ``batch`` lines. Without ``rows``
    (``rpu validate``), a clean visit is only counted."""

    cdef object report, visits_per_day, first_day, last_day, extracted_by, flush
    cdef list rows
    cdef str file_cell, header_cells
    cdef Py_ssize_t batch
    cdef public Py_ssize_t taken

    def __init__(self, header, report, str file_cell="", list rows=None, flush=None, Py_ssize_t batch=0):
        self.report = report
        self.visits_per_day = report.visits_per_day
        self.first_day, self.last_day = header.period_start, header.period_end
        self.extracted_by = header.extracted_by
        self.rows, self.flush, self.batch = rows, flush, batch
        self.file_cell = file_cell
        self.header_cells = line(("" if header.finess is None else header.finess,
                                  "" if header.ordre is None else str(header.ordre)))[:-1]
        self.taken = 0

    def take(self, raw):
        if raw.extensions:
            return False
        (cp, commune, naissance, sexe, entree_text, mode_entree, provenance, transport, transport_pec, motif,
         gravite, dp, sortie_text, mode_sortie, destination, orient) = raw.values
        if entree_text is None:
            return False
        halves = _halves(entree_text)
        if halves is None:
            return False
        day, clock = halves
        entree = _combine(day, clock)
        if self.extracted_by is not None and entree > self.extracted_by:
            return False
        if sexe not in _SEXES or mode_entree not in _MODES_ENTREE or provenance not in _PROVENANCES_OR_NONE \
                or transport not in _TRANSPORTS or transport_pec not in _TRANSPORTS_PEC or gravite not in _GRAVITES \
                or mode_sortie not in _MODES_SORTIE or destination not in _DESTINATIONS_OR_NONE \
                or orient not in _ORIENTS_OR_NONE:
            return False
        if cp is not None and cp not in cp_seen:
            return False
        if commune is not None:
            commune = communes.get(commune)
            if not commune:
                return False
        if motif is not None:
            motif = motifs.get(motif)
            if not motif:
                return False
        if dp is not None and dp not in cim10_seen:
            return False
        cdef list da = raw.da, actes = raw.actes
        if da and not _all_in(da, cim10_seen):
            return False
        if actes and not _all_in(actes, ccam_seen):
            return False
        cdef int age
        cdef str birth_text = ""
        if naissance is not None:
            birth = seen_dates.get(naissance)
            if birth is None:  # a birth date not read yet (most of a small file's): as the checker reads it
                try:
                    birth = parse_date(naissance)
                except ValueError:
                    return False
            age = date_year(day) - date_year(birth)
            if not 0 < age <= 120:
                if (date_month(day), date_day(day)) < (date_month(birth), date_day(birth)):
                    age -= 1
                if not 0 <= age <= 120:
                    return False
            birth_text = day_texts.get(birth) or day_text(birth)
        cdef str sortie_cell = ""
        if sortie_text is not None:
            halves = _halves(sortie_text)
            if halves is None:
                return False
            sortie_day, sortie_clock = halves
            if sortie_day is day:  # the same day (one object per day read): no stay can be too long
                if sortie_clock < clock:
                    return False
            else:
                sortie = _combine(sortie_day, sortie_clock)
                if sortie < entree or sortie - entree > MAX_STAY:
                    return False
            sortie_cell = _timestamp(sortie_day, sortie_clock)
        allowed = provenance_by_mode.get(mode_entree)
        if allowed and provenance in _PROVENANCES and provenance not in allowed:
            return False
        if mode_sortie is not None:
            allowed = destination_by_mode.get(mode_sortie)
            if allowed and destination in _DESTINATIONS and destination not in allowed:
                return False
            allowed = orient_by_mode.get(mode_sortie)
            if allowed and orient in _ORIENTS and orient not in allowed:
                return False
        if (self.first_day and day < self.first_day) or (self.last_day and day > self.last_day):
            return False
        if self.rows is None:
            self._count(day, entree)
            return True
        # copy_in's row, cell by cell in RPU_COLUMNS' order; a clean visit has no extension nor flag.
        cdef str row = (
            f"{self.file_cell}\t{raw.position}\t{self.header_cells}\t{cp or ''}\t{commune or ''}\t{birth_text}\t"
            f"{sexe or ''}\t{_timestamp(day, clock)}\t{mode_entree or ''}\t"
            f"{provenance or ''}\t{transport or ''}\t{transport_pec or ''}\t{motif or ''}\t{gravite or ''}\t"
            f"{dp or ''}\t{_array(da)}\t{_array(actes)}\t{sortie_cell}\t{mode_sortie or ''}\t"
            f"{destination or ''}\t{orient or ''}\t\t{{}}\n")
        # Its tabs exactly the separators, and nothing COPY's text format would need escaped
        # (a COMMUNE or a MOTIF with a backslash, say: the checker's path escapes it).
        if row.count("\t") != _TABS or row.count("\n") != 1 or "\\" in row or "\r" in row:
            return False
        self._count(day, entree)
        rows = self.rows
        rows.append(row)
        if len(rows) >= self.batch:
            self.flush()
        return True

    cdef inline void _count(self, day, entree):
        # As the checker counts a kept visit without findings.
        report = self.report
        if report.first_entree is None or entree < report.first_entree:
            report.first_entree = entree
        if report.last_entree is None or entree > report.last_entree:
            report.last_entree = entree
        visits_per_day = self.visits_per_day
        visits_per_day[day] = visits_per_day.get(day, 0) + 1
        self.taken += 1
