-- A send to Santé publique France just delivered: the visits of its establishment and period
-- that no earlier delivery carried get its delivery time (a visit received after it was built
-- waits for the next one).
-- Parameters: send_id.
UPDATE visit_timeliness t
SET invs_send_id = s.id,
    invs_sent_at = s.sent_at
FROM send s
WHERE s.id = %(send_id)s
  AND s.destination = 'invs'
  AND s.status = 'sent'
  AND t.finess = s.finess
  AND t.ordre = s.ordre
  AND t.entree >= s.period_start
  AND t.entree < s.period_end + 1
  AND t.invs_sent_at IS NULL
  AND t.first_received_at <= s.created_at
