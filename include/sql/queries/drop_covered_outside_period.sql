-- Visits of this file dated outside its own period (flagged ENTREE_OUTSIDE_PERIOD) on a day that
-- another loaded file of the establishment covers: that file is the authority for the day, and
-- keeping ours would count those visits twice.
DELETE FROM rpu r
WHERE r.received_file_id = %(file_id)s
  AND 'ENTREE_OUTSIDE_PERIOD' = ANY (r.flags)
  AND EXISTS (
      SELECT 1 FROM received_file f
      WHERE f.status = 'loaded'
        AND f.id <> %(file_id)s
        AND f.finess = %(finess)s
        AND f.ordre = %(ordre)s
        AND r.entree >= f.period_start
        AND r.entree < f.period_end + 1
  )
