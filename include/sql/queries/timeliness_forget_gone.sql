-- Visits no longer held leave the timeliness table too: over the days a file may have replaced,
-- a visit this file did not supply again is gone when the file that last supplied it no longer
-- holds any visit at that ENTREE (it was replaced). Only those rows are probed (rpu_scope index):
-- on the nightly reload of a 7-day window, the visits supplied again are skipped at once.
-- After a revocation, file_id is the file whose visits are back on the day, or NULL when no
-- file brings the day any more (then every visit of the day is probed).
-- Parameters: file_id (or NULL), finess, ordre, start, end (ENTREE bounds, end exclusive).
DELETE FROM visit_timeliness t
WHERE t.finess = %(finess)s
  AND t.ordre = %(ordre)s
  AND t.entree >= %(start)s
  AND t.entree < %(end)s
  AND t.last_file_id IS DISTINCT FROM %(file_id)s::bigint
  AND NOT EXISTS (SELECT 1 FROM rpu r
                  WHERE r.finess = t.finess AND r.ordre = t.ordre AND r.entree = t.entree
                    AND r.received_file_id = t.last_file_id)
