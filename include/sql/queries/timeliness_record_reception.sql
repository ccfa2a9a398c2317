-- (For days never recorded, store/timeliness.py runs this statement without its conflict clause.)
-- The visits a file just supplied (rpu rows of received_file_id = file_id): a visit seen for the
-- first time gets this file as its first reception; one already known keeps its first reception
-- and gets its latest exit time (SORTIE, else ENTREE). A visit is recognised across files by
-- (FINESS, ORDRE, ENTREE, digest of NAISSANCE and SEXE, rank among identical ones).
-- Parameters: file_id, received_at (of that file), finess, ordre, start, end (ENTREE bounds, end exclusive).
INSERT INTO visit_timeliness AS t (finess, ordre, entree, person, rank, exit_at, first_file_id, first_received_at,
                                   last_file_id)
SELECT r.finess, r.ordre, r.entree,
       hashtextextended(concat_ws('|', coalesce(r.naissance::text, ''), coalesce(r.sexe, '')), 0),
       row_number() OVER (PARTITION BY r.entree, r.naissance, r.sexe ORDER BY r.record_no),
       coalesce(r.sortie, r.entree), r.received_file_id, %(received_at)s, r.received_file_id
FROM rpu r
WHERE r.finess = %(finess)s
  AND r.ordre = %(ordre)s
  AND r.entree >= %(start)s
  AND r.entree < %(end)s
  AND r.received_file_id = %(file_id)s
ON CONFLICT (finess, ordre, entree, person, rank) DO UPDATE
SET exit_at = EXCLUDED.exit_at,
    last_file_id = EXCLUDED.last_file_id
