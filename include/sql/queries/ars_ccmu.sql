-- CCMU (GRAVITE) distribution per establishment and for the region (finess NULL).
-- gravite is '' when not filled, '?' when outside the value set.
-- Parameters: start, end (exclusive), statuses, gravite (value set).
SELECT finess::text AS finess, ordre, gravite, count(*) AS visits
FROM (
    SELECT r.finess, r.ordre,
           CASE WHEN coalesce(r.gravite, '') = '' THEN ''
                WHEN r.gravite = ANY (%(gravite)s::text[]) THEN r.gravite
                ELSE '?' END AS gravite
    FROM rpu r
    JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre
    WHERE r.entree >= %(start)s
      AND r.entree < %(end)s
      AND e.status = ANY (%(statuses)s::text[])
) g
GROUP BY GROUPING SETS ((finess, ordre, gravite), (gravite))
