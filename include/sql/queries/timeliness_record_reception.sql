-- The visits a file just supplied (rpu rows of received_file_id = file_id): a visit seen for the
-- first time gets this file as its first reception; one already known keeps its first reception
-- and gets its latest exit time (SORTIE, else ENTREE). A visit is recognised across files by
-- (FINESS, ORDRE, ENTREE, NAISSANCE, SEXE) and its rank among identical ones (visit_key).
-- Parameters: file_id, finess, ordre, start, end (ENTREE bounds of the file, end exclusive).
INSERT INTO visit_timeliness AS t (finess, ordre, entree, visit_key, exit_at, first_file_id, first_received_at,
                                   last_file_id)
SELECT r.finess, r.ordre, r.entree,
       md5(concat_ws('|', coalesce(r.naissance::text, ''), coalesce(r.sexe, ''))) || ':'
           || row_number() OVER (PARTITION BY r.entree, r.naissance, r.sexe ORDER BY r.record_no),
       coalesce(r.sortie, r.entree), r.received_file_id, f.received_at, r.received_file_id
FROM rpu r
JOIN received_file f ON f.id = r.received_file_id
WHERE r.finess = %(finess)s
  AND r.ordre = %(ordre)s
  AND r.entree >= %(start)s
  AND r.entree < %(end)s
  AND r.received_file_id = %(file_id)s
ON CONFLICT (finess, ordre, entree, visit_key) DO UPDATE
SET exit_at = EXCLUDED.exit_at,
    last_file_id = EXCLUDED.last_file_id
