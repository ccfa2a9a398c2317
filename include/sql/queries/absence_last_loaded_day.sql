-- The last local day (region time zone) on which a file of an establishment was loaded, before
-- a given day; NULL when it never sent a file that was loaded.
SELECT max((received_at AT TIME ZONE %(tz)s)::date)
FROM received_file
WHERE status = 'loaded'
  AND finess = %(finess)s
  AND ordre = %(ordre)s
  AND received_at < (%(before)s::timestamp AT TIME ZONE %(tz)s)
