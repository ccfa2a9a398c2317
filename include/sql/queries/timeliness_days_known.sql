-- Whether visit_timeliness holds any visit of an establishment on ENTREE days [start, end).
-- Parameters: finess, ordre, start, end (end exclusive).
SELECT EXISTS (SELECT 1 FROM visit_timeliness
               WHERE finess = %(finess)s AND ordre = %(ordre)s AND entree >= %(start)s AND entree < %(end)s)
