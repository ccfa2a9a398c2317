# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The COPY row of a visit that needs no finding, checked and written in C.

Most visits of a night are clean: every code already seen valid, both dates already read, the
cross-field tables satisfied, ENTREE inside the period. For them the checks of
``rpu.formats.validation._VisitChecker.check`` and the row of ``rpu.store.copy_in`` cost over
half of a load in Python. ``CleanRows.take`` does the same for such a visit only: it answers
True when the visit is clean (counted in the report as the checker counts it, its line added),
and False for anything else, which then takes the checker's path and gets its findings there.
It never flags nor normalises: a value that would need either is not taken. It looks codes up
in the checker's caches (values already seen valid), which the checker fills. A date in the
exact national spelling is read here from its digits; any other spelling is read by the
checker's own parse_date or parse_datetime (through their caches).

``rpu.store.copy_in`` uses it only if it writes, for a sample of visits, the very lines the
checker's path writes; tests/test_clean_rows.py holds the two paths equal over every producer
variant, every defect and fuzzed visits. Optional: without a C compiler every visit takes the
checker's path (same rows, slower).
"""

from cpython.datetime cimport (
    date_day,
    date_month,
    date_new,
    date_year,
    datetime_hour,
    datetime_minute,
    datetime_new,
    datetime_second,
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
from rpu.store.copy_text import line

import_datetime()

cdef dict seen_days = SEEN_DAYS, seen_clocks = SEEN_CLOCKS, seen_dates = SEEN_DATES
cdef dict communes = _COMMUNES, motifs = _MOTIFS
cdef set cp_seen = _CP_SEEN, cim10_seen = _CIM10_SEEN, ccam_seen = _CCAM_SEEN
cdef dict provenance_by_mode = PROVENANCE_BY_MODE_ENTREE, destination_by_mode = DESTINATION_BY_MODE_SORTIE
cdef dict orient_by_mode = ORIENT_BY_MODE_SORTIE


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


# Dates as numbers. Looking a visit's dates up in the caches above (their halves, then their
# texts) cost about half of a clean visit: the caches are large, and each look-up a few cache
# misses. A date in the exact national spelling is read here from its digits instead, into the
# same numbers a date object would give; any other spelling still goes through the caches and
# the checker's parsers, whose objects are turned into the same numbers.

cdef int[13] _DAYS_IN_MONTH = [0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
cdef int[13] _DAYS_BEFORE_MONTH = [0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334]


cdef struct Moment:
    int year, month, day, hour, minute, second


cdef inline bint _leap(int year):
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


cdef inline bint _valid(Moment* m):
    # As datetime() accepts it.
    if m.year < 1 or m.month < 1 or m.month > 12 or m.day < 1:
        return False
    if m.day > _DAYS_IN_MONTH[m.month] + (1 if m.month == 2 and _leap(m.year) else 0):
        return False
    return 0 <= m.hour <= 23 and 0 <= m.minute <= 59 and 0 <= m.second <= 59


cdef inline long _ordinal(Moment* m):
    # date.toordinal(): days since 1 January of year 1 (day 1).
    cdef long y = m.year - 1
    return (y * 365 + y // 4 - y // 100 + y // 400 + _DAYS_BEFORE_MONTH[m.month]
            + (1 if m.month > 2 and _leap(m.year) else 0) + m.day)


cdef inline long long _seconds(Moment* m):
    return <long long>_ordinal(m) * 86400 + m.hour * 3600 + m.minute * 60 + m.second


cdef inline int _digits(str text, Py_ssize_t at, Py_ssize_t count):
    # The number written by ``count`` ASCII digits from ``at``; -1 if any is not one.
    cdef int value = 0
    cdef Py_UCS4 c
    cdef Py_ssize_t i
    for i in range(at, at + count):
        c = text[i]
        if c < 48 or c > 57:  # not 0 to 9
            return -1
        value = value * 10 + <int>c - 48
    return value


cdef inline bint _read_day(str text, Moment* m):
    # ``dd/mm/yyyy`` exactly (10 characters), into m's day; False for anything else.
    if len(text) < 10 or <Py_UCS4>text[2] != 47 or <Py_UCS4>text[5] != 47:  # '/'
        return False
    m.day, m.month, m.year = _digits(text, 0, 2), _digits(text, 3, 2), _digits(text, 6, 4)
    return m.day >= 0 and m.month >= 0 and m.year >= 0


cdef bint _read_moment(str text, Moment* m):
    # ``dd/mm/yyyy hh:mm`` or ``dd/mm/yyyy hh:mm:ss`` exactly, valid; else through the caches and
    # parse_datetime (any spelling the checker reads); False when neither reads it.
    cdef Py_ssize_t size = len(text)
    m.second = 0
    if (size == 16 or size == 19) and _read_day(text, m) and <Py_UCS4>text[10] == 32 \
            and <Py_UCS4>text[13] == 58:  # ' ', ':'
        m.hour, m.minute = _digits(text, 11, 2), _digits(text, 14, 2)
        if size == 19:
            m.second = _digits(text, 17, 2) if <Py_UCS4>text[16] == 58 else -1
        if m.hour >= 0 and m.minute >= 0 and m.second >= 0:
            return _valid(m)
    halves = _halves(text)
    if halves is None:
        return False
    day, clock = halves
    if time_microsecond(clock):
        return False
    m.year, m.month, m.day = date_year(day), date_month(day), date_day(day)
    m.hour, m.minute, m.second = time_hour(clock), time_minute(clock), time_second(clock)
    return True


cdef bint _read_birth(str text, Moment* m):
    # ``dd/mm/yyyy`` exactly and valid; else as the checker reads it (parse_date, cached).
    m.hour = m.minute = m.second = 0
    if len(text) == 10 and _read_day(text, m):
        return _valid(m)
    birth = seen_dates.get(text)
    if birth is None:
        try:
            birth = parse_date(text)
        except ValueError:
            return False
    m.year, m.month, m.day = date_year(birth), date_month(birth), date_day(birth)
    return True


cdef inline void _put(char* out, int value, int width):
    # ``value`` in ``width`` digits, zero-padded.
    cdef int i
    for i in range(width - 1, -1, -1):
        out[i] = <char>(48 + value % 10)
        value //= 10


cdef inline void _put_day(char* out, Moment* m):
    # date.isoformat(), in 10 characters.
    _put(out, m.year, 4)
    out[4] = b'-'
    _put(out + 5, m.month, 2)
    out[7] = b'-'
    _put(out + 8, m.day, 2)


cdef str _day_text(Moment* m):
    cdef char out[10]
    _put_day(out, m)
    return out[:10].decode("ascii")


cdef str _timestamp(Moment* m):
    # copy_text.timestamp(): date.isoformat(), a space, time.isoformat()
    cdef char out[19]
    _put_day(out, m)
    out[10] = b' '
    _put(out + 11, m.hour, 2)
    out[13] = b':'
    _put(out + 14, m.minute, 2)
    out[16] = b':'
    _put(out + 17, m.second, 2)
    return out[:19].decode("ascii")


cdef long long _seconds_of(value):
    # A datetime's _seconds, its microseconds dropped (ENTREE is whole seconds: ENTREE > value
    # exactly when its _seconds are greater).
    cdef Moment m
    m.year, m.month, m.day = date_year(value), date_month(value), date_day(value)
    m.hour, m.minute, m.second = datetime_hour(value), datetime_minute(value), datetime_second(value)
    return _seconds(&m)


cdef inline object _datetime(Moment* m):
    return datetime_new(m.year, m.month, m.day, m.hour, m.minute, m.second, 0, None)


cdef inline str _array(list items):
    # copy_text.array for codes already seen valid (letters, digits, + and *: nothing to escape).
    return '{"' + '","'.join(items) + '"}' if items else "{}"


cdef long _DAYS_LISTED = 3660  # a period up to ten years: its days in a list


cdef extern from "Python.h":
    int PyUnicode_KIND(object text)
    const void* PyUnicode_DATA(object text)
    int PyUnicode_1BYTE_KIND


cdef bint _plain(str value):
    # True when the value holds nothing COPY's text format would need escaped: no tab, line end,
    # carriage return nor backslash (a COMMUNE or a MOTIF with a backslash, say: the checker's
    # path escapes it). Only the names (COMMUNE, MOTIF) can hold them: every other cell of a clean
    # row is a code matched by its pattern or value set, a number or a date written here.
    cdef Py_ssize_t i
    cdef const unsigned char* text
    cdef unsigned char c
    if PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND:  # beyond Latin-1: rare, read by Python
        return not any(mark in value for mark in "\t\n\r\\")
    text = <const unsigned char*>PyUnicode_DATA(value)
    for i in range(len(value)):
        c = text[i]
        if c == 9 or c == 10 or c == 13 or c == 92:  # tab, line end, carriage return, backslash
            return False
    return True


cdef class CleanRows:
    """For one file: ``take(raw)`` for each of its visits (see the module's text). ``rows`` is the
    loader's batch of lines; ``flush`` is called when it holds ``batch`` lines. Without ``rows``
    (``rpu validate``), a clean visit is only counted."""

    cdef object report, visits_per_day, flush
    cdef list days  # the period's date objects, visits_per_day's keys, made as first met
    cdef dict other_days  # the same, by ordinal, for a file without a period (or a long one)
    cdef list rows
    cdef str file_cell, header_cells
    cdef Py_ssize_t batch
    cdef long first_day, last_day  # the period's ordinals (0: no bound)
    cdef long long extracted_by, first_entree, last_entree, max_stay  # seconds (-1: none yet)
    cdef public Py_ssize_t taken

    def __init__(self, header, report, str file_cell="", list rows=None, flush=None, Py_ssize_t batch=0):
        self.report = report
        self.visits_per_day = report.visits_per_day
        self.first_day = header.period_start.toordinal() if header.period_start else 0
        self.last_day = header.period_end.toordinal() if header.period_end else 0
        span = self.last_day - self.first_day + 1 if self.first_day and self.last_day else 0
        self.days = [None] * span if 0 < span <= _DAYS_LISTED else None
        self.other_days = {}
        self.extracted_by = -1 if header.extracted_by is None else _seconds_of(header.extracted_by)
        self.first_entree = self.last_entree = -1
        self.max_stay = int(MAX_STAY.total_seconds())
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
        cdef Moment entree, sortie, birth
        if entree_text is None or not _read_moment(entree_text, &entree):
            return False
        cdef long day = _ordinal(&entree)
        cdef long long entree_seconds = _seconds(&entree)
        if self.extracted_by >= 0 and entree_seconds > self.extracted_by:
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
            if not commune or not _plain(commune):
                return False
        if motif is not None:
            motif = motifs.get(motif)
            if not motif or not _plain(motif):
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
            if not _read_birth(naissance, &birth):
                return False
            age = entree.year - birth.year
            if not 0 < age <= 120:
                if (entree.month, entree.day) < (birth.month, birth.day):
                    age -= 1
                if not 0 <= age <= 120:
                    return False
            birth_text = _day_text(&birth)
        cdef str sortie_cell = ""
        cdef long long stay
        if sortie_text is not None:
            if not _read_moment(sortie_text, &sortie):
                return False
            stay = _seconds(&sortie) - entree_seconds
            if stay < 0 or stay > self.max_stay:
                return False
            sortie_cell = _timestamp(&sortie)
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
            self._count(&entree, day, entree_seconds)
            return True
        # copy_in's row, cell by cell in RPU_COLUMNS' order; a clean visit has no extension nor flag.
        cdef str row = (
            f"{self.file_cell}\t{raw.position}\t{self.header_cells}\t{cp or ''}\t{commune or ''}\t{birth_text}\t"
            f"{sexe or ''}\t{_timestamp(&entree)}\t{mode_entree or ''}\t"
            f"{provenance or ''}\t{transport or ''}\t{transport_pec or ''}\t{motif or ''}\t{gravite or ''}\t"
            f"{dp or ''}\t{_array(da)}\t{_array(actes)}\t{sortie_cell}\t{mode_sortie or ''}\t"
            f"{destination or ''}\t{orient or ''}\t\t{{}}\n")
        self._count(&entree, day, entree_seconds)
        rows = self.rows
        rows.append(row)
        if len(rows) >= self.batch:
            self.flush()
        return True

    cdef inline void _count(self, Moment* entree, long day, long long seconds):
        # As the checker counts a kept visit without findings: the first and last ENTREE (the
        # objects made only when this path's own first or last moves), the visits per day.
        report = self.report
        if self.first_entree < 0 or seconds < self.first_entree:
            self.first_entree = seconds
            value = _datetime(entree)
            if report.first_entree is None or value < report.first_entree:
                report.first_entree = value
        if seconds > self.last_entree:
            self.last_entree = seconds
            value = _datetime(entree)
            if report.last_entree is None or value > report.last_entree:
                report.last_entree = value
        if self.days is not None:  # a clean visit is inside the period
            key = self.days[day - self.first_day]
            if key is None:
                key = self.days[day - self.first_day] = date_new(entree.year, entree.month, entree.day)
        else:
            key = self.other_days.get(day)
            if key is None:
                key = self.other_days[day] = date_new(entree.year, entree.month, entree.day)
        visits_per_day = self.visits_per_day
        visits_per_day[key] = visits_per_day.get(key, 0) + 1
        self.taken += 1
