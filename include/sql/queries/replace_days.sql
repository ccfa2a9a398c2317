-- The visits other files supplied on the days this file now rules (there is no visit
-- identifier in the format: a day is replaced whole). Its own visits are already in.
DELETE FROM rpu
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND entree >= %(first)s
  AND entree < %(after_last)s
  AND entree::date = ANY (%(days)s::date[])
  AND received_file_id <> %(file_id)s
