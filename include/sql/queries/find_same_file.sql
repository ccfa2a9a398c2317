-- A file with the same bytes already applied, found superseded or held: the new one is a duplicate.
SELECT id, file_name, received_at, status
FROM received_file
WHERE sha256 = %(sha256)s
  AND status IN ('loaded', 'superseded', 'held')
ORDER BY id
LIMIT 1
