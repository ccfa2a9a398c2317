-- Visits no longer held leave the timeliness table too: over the days a file may have replaced,
-- a visit this file did not supply again is gone when the file that last supplied it no longer
-- holds any visit at that ENTREE (it was replaced). Only those rows are probed (rpu_scope index):
-- on the nightly reload of a 7-day window, the visits supplied again are skipped at once.
-- Parameters: file_id, finess, ordre, start, end (ENTREE bounds, end exclusive).
DELETE FROM visit_timeliness t
WHERE t.finess = %(finess)s
  AND t.ordre = %(ordre)s
  AND t.entree >= %(start)s
  AND t.entree < %(end)s
  AND t.last_file_id <> %(file_id)s
  AND NOT EXISTS (SELECT 1 FROM rpu r
                  WHERE r.finess = t.finess AND r.ordre = t.ordre AND r.entree = t.entree
                    AND r.received_file_id = t.last_file_id)
