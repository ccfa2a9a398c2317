-- Age pyramid of the region: sex (M, F, or I for unknown/indeterminate) by 10-year band of the
-- age at ENTREE (band 10 = 100 years and over). band is NULL when the age is unknown or outside
-- 0-120 years (no birth date, a birth after ENTREE, an implausible one).
-- Parameters: start, end (exclusive), statuses.
SELECT sexe, band, count(*) AS visits
FROM (
    SELECT CASE WHEN r.sexe IN ('M', 'F') THEN r.sexe ELSE 'I' END AS sexe,
           CASE WHEN r.naissance <= r.entree::date AND age <= 120 THEN least(age / 10, 10) END AS band
    FROM rpu r
    JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre
    CROSS JOIN LATERAL (
        SELECT extract(year FROM age(r.entree::date, r.naissance))::int AS age
    ) a
    WHERE r.entree >= %(start)s
      AND r.entree < %(end)s
      AND e.status = ANY (%(statuses)s::text[])
) p
GROUP BY sexe, band
