-- The registered establishments, with their lifecycle status (the export scope is a set of statuses).
SELECT finess::text AS finess, ordre, name, status
FROM establishment
ORDER BY finess, ordre
