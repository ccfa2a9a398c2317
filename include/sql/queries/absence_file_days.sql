-- Per local day (region time zone): files of an establishment loaded and rejected. A rejected
-- file counts against the folder it was dropped in (its header may be unreadable or wrong).
SELECT (received_at AT TIME ZONE %(tz)s)::date AS day,
       count(*) FILTER (WHERE status = 'loaded' AND finess = %(finess)s AND ordre = %(ordre)s) AS loaded,
       count(*) FILTER (WHERE status = 'rejected') AS rejected
FROM received_file
WHERE ((finess = %(finess)s AND ordre = %(ordre)s) OR (status = 'rejected' AND sender = %(finess)s))
  AND received_at >= (%(first_day)s::timestamp AT TIME ZONE %(tz)s)
  AND received_at < ((%(last_day)s::date + 1)::timestamp AT TIME ZONE %(tz)s)
GROUP BY 1
ORDER BY 1
