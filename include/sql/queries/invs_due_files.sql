-- What the daily file to Santé publique France must carry: for every live establishment, the
-- files loaded since it (last) went live that no invs send carries yet. A send that is sent,
-- or built/failed and still to be delivered, carries its covers_files; a cancelled one
-- carries nothing. Files loaded before the switch to live were forwarded by the older
-- concentrator (status parallel) and are never sent from here.
-- Parameters finess and ordre: that establishment only; finess NULL: every one.
SELECT e.finess,
       e.ordre,
       array_agg(r.id ORDER BY r.id) AS file_ids,
       min(r.period_start) AS period_start,
       max(r.period_end) AS period_end
FROM establishment e
JOIN received_file r
  ON r.finess = e.finess AND r.ordre = e.ordre AND r.status = 'loaded'
WHERE e.status = 'live'
  AND (%(finess)s::text IS NULL OR (e.finess = %(finess)s::text AND e.ordre = %(ordre)s::int))
  AND r.processed_at >= coalesce(
        (SELECT max(c.changed_at)
         FROM establishment_status_change c
         WHERE c.finess = e.finess AND c.ordre = e.ordre AND c.new_status = 'live'),
        '-infinity')
  AND NOT EXISTS (
        SELECT 1
        FROM send s
        WHERE s.destination = 'invs'
          AND s.status IN ('built', 'sent', 'failed')
          AND s.covers_files @> ARRAY[r.id])
GROUP BY e.finess, e.ordre
ORDER BY e.finess, e.ordre
