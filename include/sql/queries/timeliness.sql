-- Timeliness per establishment and period bucket (ENTREE day or week), per establishment, and
-- for the whole scope (GROUPING SETS: finess NULL = all; bucket NULL = the whole period).
--   arrival  = first reception by the concentrator − exit (SORTIE, else ENTREE; local time of
--              the region), at least 0 (a visit received while still open counts 0);
--   delivery = first delivery to Santé publique France − first reception (visits delivered only).
-- Parameters: start, end (ENTREE dates, end exclusive), timezone, statuses, bucket ('day' or
-- 'week'), finess and ordre (NULL: every establishment of the statuses).
WITH v AS (
    SELECT t.finess::text AS finess,
           t.ordre,
           date_trunc(%(bucket)s, t.entree)::date AS bucket,
           greatest(0, extract(epoch FROM t.first_received_at - (t.exit_at AT TIME ZONE %(timezone)s)) / 3600.0)
               AS arrival_h,
           extract(epoch FROM t.invs_sent_at - t.first_received_at) / 3600.0 AS delivery_h
    FROM visit_timeliness t
    JOIN establishment e ON e.finess = t.finess AND e.ordre = t.ordre
    WHERE t.entree >= %(start)s
      AND t.entree < %(end)s
      AND e.status = ANY (%(statuses)s::text[])
      AND (%(finess)s::text IS NULL OR (t.finess = %(finess)s AND t.ordre = %(ordre)s))
)
SELECT finess,
       ordre,
       bucket,
       count(*)                                                          AS visits,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY arrival_h)            AS arrival_median_h,
       avg((arrival_h <= 24)::int)                                       AS arrival_24h,
       avg((arrival_h <= 48)::int)                                       AS arrival_48h,
       count(delivery_h)                                                 AS delivered,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY delivery_h)           AS delivery_median_h,
       avg((delivery_h <= 24)::int)                                      AS delivery_24h,
       avg((delivery_h <= 48)::int)                                      AS delivery_48h
FROM v
GROUP BY GROUPING SETS ((finess, ordre, bucket), (finess, ordre), (bucket), ())
ORDER BY finess NULLS FIRST, ordre, bucket NULLS FIRST
