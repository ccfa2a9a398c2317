-- The local days (region time zone) on which at least one file of an establishment was loaded,
-- between two days inclusive.
SELECT DISTINCT (received_at AT TIME ZONE %(tz)s)::date AS day
FROM received_file
WHERE status = 'loaded'
  AND finess = %(finess)s
  AND ordre = %(ordre)s
  AND received_at >= (%(first_day)s::timestamp AT TIME ZONE %(tz)s)
  AND received_at < ((%(last_day)s::date + 1)::timestamp AT TIME ZONE %(tz)s)
ORDER BY day
