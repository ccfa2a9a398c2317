-- A loaded file of the same establishment, whose period overlaps this file's period, with a
-- later extraction: this file is older news and must not overwrite it.
SELECT id, file_name, received_at
FROM received_file
WHERE status = 'loaded'
  AND finess = %(finess)s
  AND ordre = %(ordre)s
  AND period_start <= %(period_end)s
  AND period_end >= %(period_start)s
  AND extract > %(extract)s
ORDER BY extract DESC
LIMIT 1
