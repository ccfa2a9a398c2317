-- The periods (DATEDEBUT..DATEFIN) of the files of an establishment loaded between two local
-- days inclusive (received_from may be -infinity), that overlap a period of visit dates.
SELECT period_start, period_end
FROM received_file
WHERE status = 'loaded'
  AND finess = %(finess)s
  AND ordre = %(ordre)s
  AND period_start <= %(period_end)s
  AND period_end >= %(period_start)s
  AND received_at >= (%(received_from)s::timestamp AT TIME ZONE %(tz)s)
  AND received_at < ((%(received_to)s::date + 1)::timestamp AT TIME ZONE %(tz)s)
ORDER BY period_start
