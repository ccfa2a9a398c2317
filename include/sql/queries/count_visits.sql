-- How many visits of one establishment have ENTREE in [start, end_exclusive).
SELECT count(*)
FROM rpu
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND entree >= %(start)s
  AND entree < %(end_exclusive)s
