-- The year as Syrius's page shows it: per establishment and month, the files ATIH accepted and
-- the RPU of that month (ENTREE in the month) in the latest of them.
SELECT s.finess,
       s.ordre,
       e.name,
       s.month,
       count(*) AS files,
       (SELECT m.visits
        FROM send l
        JOIN atih_send_month m ON m.send_id = l.id AND m.month = l.month
        WHERE l.destination = 'atih' AND l.status = 'sent'
          AND l.finess = s.finess AND l.ordre = s.ordre AND l.year = s.year AND l.month = s.month
        ORDER BY l.id DESC
        LIMIT 1) AS rpu
FROM send s
LEFT JOIN establishment e ON e.finess = s.finess AND e.ordre = s.ordre
WHERE s.destination = 'atih'
  AND s.status = 'sent'
  AND s.year = %(year)s
GROUP BY s.finess, s.ordre, e.name, s.year, s.month
ORDER BY s.finess, s.ordre, s.month
