-- 010: visit_timeliness made to hold again exactly the visits held in rpu.
--
-- Until now a revocation (`rpu files revoke`) changed rpu but not visit_timeliness: the revoked
-- file's visits stayed counted in the timeliness figures (ARS report, companion CSV,
-- establishment report), the visits restored from the next file were missing, and the rows
-- kept pointed at the revoked file. The code now keeps them in step; this repairs what past
-- revocations left. A visit is matched as at load: (FINESS, ORDRE, ENTREE, digest of NAISSANCE
-- and SEXE, rank among identical ones); each day is held by one file, so the rank ordered by
-- file then record is the rank within the file that holds it.

-- The visits held, with their key: computed once for the three steps below.
CREATE TEMP TABLE held ON COMMIT DROP AS
SELECT r.finess, r.ordre, r.entree,
       hashtextextended(concat_ws('|', coalesce(r.naissance::text, ''), coalesce(r.sexe, '')), 0) AS person,
       row_number() OVER (PARTITION BY r.finess, r.ordre, r.entree, r.naissance, r.sexe
                          ORDER BY r.received_file_id, r.record_no) AS rank,
       coalesce(r.sortie, r.entree) AS exit_at,
       r.received_file_id
FROM rpu r;
ANALYZE held;

-- 1. Rows of a visit still held: pointing at the file that holds it now, with its exit time.
UPDATE visit_timeliness t
SET last_file_id = h.received_file_id,
    exit_at = h.exit_at
FROM held h
WHERE (t.finess, t.ordre, t.entree, t.person, t.rank) = (h.finess, h.ordre, h.entree, h.person, h.rank)
  AND (t.last_file_id, t.exit_at) IS DISTINCT FROM (h.received_file_id, h.exit_at);

-- 2. Rows of a visit no longer held: gone.
DELETE FROM visit_timeliness t
WHERE NOT EXISTS (SELECT 1 FROM held h
                  WHERE (h.finess, h.ordre, h.entree, h.person, h.rank) = (t.finess, t.ordre, t.entree, t.person, t.rank));

-- 3. Visits held without a row (restored by a revocation): first received with the file that
-- holds them (the best known, as in 007), delivered by the first invs send built after it.
WITH missing AS (
    SELECT h.* FROM held h
    WHERE NOT EXISTS (SELECT 1 FROM visit_timeliness t
                      WHERE (t.finess, t.ordre, t.entree, t.person, t.rank) = (h.finess, h.ordre, h.entree, h.person, h.rank))
)
INSERT INTO visit_timeliness (finess, ordre, entree, person, rank, exit_at, first_file_id, first_received_at,
                              last_file_id, invs_send_id, invs_sent_at)
SELECT m.finess, m.ordre, m.entree, m.person, m.rank, m.exit_at, m.received_file_id, f.received_at,
       m.received_file_id, s.id, s.sent_at
FROM missing m
JOIN received_file f ON f.id = m.received_file_id
LEFT JOIN LATERAL (
    SELECT s.id, s.sent_at FROM send s
    WHERE s.destination = 'invs' AND s.status = 'sent' AND s.finess = m.finess AND s.ordre = m.ordre
      AND m.entree >= s.period_start AND m.entree < s.period_end + 1 AND s.created_at >= f.received_at
    ORDER BY s.sent_at LIMIT 1) s ON true;
