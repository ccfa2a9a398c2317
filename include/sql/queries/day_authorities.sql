-- The current authority of each day a file brings: the file that supplies it, how it ranks,
-- and how many visits it holds for the day.
SELECT h.day, h.received_file_id, h.in_period, h.extract, h.visits, f.file_name
FROM file_day h
JOIN received_file f ON f.id = h.received_file_id
WHERE h.finess = %(finess)s
  AND h.ordre = %(ordre)s
  AND h.day = ANY (%(days)s::date[])
  AND h.superseded_by IS NULL
  AND NOT h.revoked
