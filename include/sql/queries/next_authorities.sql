-- For each day a revoked file ruled: the next file in rank (inside its period first, then the
-- latest EXTRACT, then received last) among the files not revoked, with the visits it brought.
SELECT DISTINCT ON (day) day, received_file_id, visits
FROM file_day
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND day = ANY (%(days)s::date[])
  AND NOT revoked
  AND received_file_id <> %(file_id)s
ORDER BY day, in_period DESC, extract DESC, received_file_id DESC
