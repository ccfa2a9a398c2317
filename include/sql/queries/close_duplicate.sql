-- A duplicate's journal row carries the header and counts of the file it repeats, so that
-- "what did we receive from X" finds it.
UPDATE received_file d
SET status = 'duplicate',
    same_as = o.id,
    finess = o.finess,
    ordre = o.ordre,
    extract = o.extract,
    period_start = o.period_start,
    period_end = o.period_end,
    records = o.records,
    processed_at = now()
FROM received_file o
WHERE d.id = %(id)s
  AND o.id = %(same_as)s
