-- Length of stay (SORTIE - ENTREE) per establishment and for the region (finess NULL), FEDORU
-- definition: only stays with 0 < d <= 72 h are kept. bins: {class: RPU} where the classes are
-- cut at the caller's bounds in minutes (width_bucket: class 0 is below the first bound).
-- Parameters: start, end (exclusive), statuses, bounds (float8[] of minutes, ascending).
WITH d AS (
    SELECT r.finess, r.ordre, extract(epoch FROM r.sortie - r.entree) / 60.0 AS minutes
    FROM rpu r
    JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre
    WHERE r.entree >= %(start)s
      AND r.entree < %(end)s
      AND e.status = ANY (%(statuses)s::text[])
),
kept AS (
    SELECT finess, ordre, minutes, width_bucket(minutes, %(bounds)s::float8[]) AS bin
    FROM d
    WHERE minutes > 0 AND minutes <= 72 * 60
),
totals AS (
    SELECT finess, ordre, count(*) AS visits, count(minutes) AS with_sortie
    FROM d
    GROUP BY GROUPING SETS ((finess, ordre), ())
),
stats AS (
    SELECT finess, ordre, count(*) AS kept,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY minutes) AS median_minutes,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY minutes) AS p90_minutes
    FROM kept
    GROUP BY GROUPING SETS ((finess, ordre), ())
),
per_bin AS (
    SELECT finess, ordre, bin, count(*) AS visits
    FROM kept
    GROUP BY GROUPING SETS ((finess, ordre, bin), (bin))
),
bins AS (
    SELECT finess, ordre, jsonb_object_agg(bin::text, visits) AS bins
    FROM per_bin
    GROUP BY finess, ordre
)
SELECT t.finess::text AS finess, t.ordre, t.visits, t.with_sortie, coalesce(s.kept, 0) AS kept,
       s.median_minutes, s.p90_minutes, coalesce(b.bins, '{}'::jsonb) AS bins
FROM totals t
LEFT JOIN stats s ON s.finess IS NOT DISTINCT FROM t.finess AND s.ordre IS NOT DISTINCT FROM t.ordre
LEFT JOIN bins b ON b.finess IS NOT DISTINCT FROM t.finess AND b.ordre IS NOT DISTINCT FROM t.ordre
