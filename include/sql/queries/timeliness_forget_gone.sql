-- Visits no longer held (the newer file no longer has them) leave the timeliness table too, so
-- that it mirrors rpu over the days a file may have replaced.
-- Parameters: finess, ordre, start, end (ENTREE bounds, end exclusive).
WITH current_visits AS (
    SELECT r.entree,
           md5(concat_ws('|', coalesce(r.naissance::text, ''), coalesce(r.sexe, ''))) || ':'
               || row_number() OVER (PARTITION BY r.entree, r.naissance, r.sexe
                                     ORDER BY r.received_file_id, r.record_no) AS visit_key
    FROM rpu r
    WHERE r.finess = %(finess)s
      AND r.ordre = %(ordre)s
      AND r.entree >= %(start)s
      AND r.entree < %(end)s
)
DELETE FROM visit_timeliness t
WHERE t.finess = %(finess)s
  AND t.ordre = %(ordre)s
  AND t.entree >= %(start)s
  AND t.entree < %(end)s
  AND NOT EXISTS (SELECT 1 FROM current_visits c WHERE c.entree = t.entree AND c.visit_key = t.visit_key)
