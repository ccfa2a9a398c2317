-- A file cancels and replaces what we held for its establishment and period, matched on the
-- ENTREE date (there is no visit identifier in the format). Its own visits are already in.
DELETE FROM rpu
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND entree >= %(period_start)s
  AND entree < %(period_end_exclusive)s
  AND received_file_id <> %(file_id)s
