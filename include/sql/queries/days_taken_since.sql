-- The days a file brought that another file supplies now, with that file.
SELECT d.day, d.in_period, d.superseded_by, f.file_name, f.extract
FROM file_day d
JOIN received_file f ON f.id = d.superseded_by
WHERE d.received_file_id = %(file_id)s
ORDER BY d.day
