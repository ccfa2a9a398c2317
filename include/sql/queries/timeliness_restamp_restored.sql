-- After a revocation: on an ENTREE day [start, end) whose visits are the file_id's again, its
-- visits recorded again without a delivery (those the revoked file had dropped: forgotten
-- then, recorded anew now) get the first delivery to Santé publique France that carried that
-- file (send.covers_files), as they got it when it was first delivered; none if it never was.
-- Parameters: file_id, finess, ordre, start, end (end exclusive).
UPDATE visit_timeliness t
SET invs_send_id = first_send.id,
    invs_sent_at = first_send.sent_at
FROM (SELECT s.id, s.sent_at, s.created_at
      FROM send s
      WHERE s.destination = 'invs'
        AND s.status = 'sent'
        AND s.finess = %(finess)s
        AND s.ordre = %(ordre)s
        AND s.covers_files @> ARRAY[%(file_id)s::bigint]
        AND s.period_start < %(end)s
        AND s.period_end >= %(start)s
      ORDER BY s.sent_at
      LIMIT 1) first_send
WHERE t.finess = %(finess)s
  AND t.ordre = %(ordre)s
  AND t.entree >= %(start)s
  AND t.entree < %(end)s
  AND t.last_file_id = %(file_id)s
  AND t.invs_sent_at IS NULL
  AND t.first_received_at <= first_send.created_at
