-- The first day each establishment of the scope sent: the earliest DATEDEBUT of its loaded
-- files, or its earliest ENTREE when a visit is older (least() skips NULL). NULL: it never
-- sent anything. The days before it are not a break in the flow: it was not sending yet.
-- Parameters: statuses.
SELECT e.finess::text AS finess, e.ordre, least(f.first_day, v.first_day) AS first_day
FROM establishment e
LEFT JOIN LATERAL (
    SELECT min(rf.period_start) AS first_day
    FROM received_file rf
    WHERE rf.status = 'loaded' AND rf.finess = e.finess AND rf.ordre = e.ordre
) f ON true
LEFT JOIN LATERAL (
    SELECT min(r.entree)::date AS first_day
    FROM rpu r
    WHERE r.finess = e.finess AND r.ordre = e.ordre
) v ON true
WHERE e.status = ANY (%(statuses)s::text[])
