-- Episodes waiting for a replay whose period Santé publique France has now received become
-- 'replayed', with the first send that carried it: a replay (rpu_invs_replay), or a daily
-- file that carried a catch-up file of the establishment. The send must be delivered, cover
-- the whole period to replay, and have been built after the episode began.
WITH matched AS (
    SELECT e.id AS episode_id,
           (SELECT s.id
              FROM send s
             WHERE s.destination = 'invs'
               AND s.kind IN ('replay', 'daily')
               AND s.status = 'sent'
               AND s.finess = e.finess
               AND s.ordre = e.ordre
               AND s.period_start <= e.replay_start
               AND s.period_end >= e.replay_end
               AND s.created_at >= e.created_at
             ORDER BY s.sent_at, s.id
             LIMIT 1) AS send_id
    FROM absence_episode e
    WHERE e.state = 'replay_needed'
)
UPDATE absence_episode e
SET state = 'replayed', replay_send_id = m.send_id, closed_at = %(now)s, updated_at = now()
FROM matched m
WHERE e.id = m.episode_id
  AND m.send_id IS NOT NULL
RETURNING e.id, e.finess, e.ordre, e.replay_start, e.replay_end, m.send_id
