-- The establishments whose data this concentrator forwards (status live).
SELECT finess, ordre, name
FROM establishment
WHERE status = 'live'
ORDER BY finess, ordre
