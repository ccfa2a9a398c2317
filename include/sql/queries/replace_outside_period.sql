-- Visits outside every file's period are replaced day by day by the latest file that brings
-- such visits for that day (a producer selecting visits by exit time re-sends them each night).
DELETE FROM rpu r
WHERE r.finess = %(finess)s
  AND r.ordre = %(ordre)s
  AND r.received_file_id <> %(file_id)s
  AND 'ENTREE_OUTSIDE_PERIOD' = ANY (r.flags)
  AND r.entree::date IN (
      SELECT DISTINCT o.entree::date FROM rpu o
      WHERE o.received_file_id = %(file_id)s AND 'ENTREE_OUTSIDE_PERIOD' = ANY (o.flags)
  )
