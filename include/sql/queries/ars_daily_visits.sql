-- Visits per establishment and ENTREE day (days without visits are absent: the caller fills them).
-- Parameters: start, end (exclusive), statuses.
SELECT r.finess::text AS finess, r.ordre, r.entree::date AS day, count(*) AS visits
FROM rpu r
JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre
WHERE r.entree >= %(start)s
  AND r.entree < %(end)s
  AND e.status = ANY (%(statuses)s::text[])
GROUP BY r.finess, r.ordre, r.entree::date
