-- The former authorities of the days this file now rules.
UPDATE file_day
SET superseded_by = %(file_id)s
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND day = ANY (%(days)s::date[])
  AND superseded_by IS NULL
  AND NOT revoked
  AND received_file_id <> %(file_id)s
