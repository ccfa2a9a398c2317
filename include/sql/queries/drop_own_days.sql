-- This file's visits on the days another file rules: they are not applied.
DELETE FROM rpu
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND entree >= %(first)s
  AND entree < %(after_last)s
  AND entree::date = ANY (%(days)s::date[])
  AND received_file_id = %(file_id)s
