-- A file with the same bytes already applied (or found superseded): the new one is a duplicate.
SELECT id, file_name, received_at
FROM received_file
WHERE sha256 = %(sha256)s
  AND status IN ('loaded', 'superseded')
ORDER BY id
LIMIT 1
