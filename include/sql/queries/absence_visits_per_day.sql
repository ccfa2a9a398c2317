-- Visits of an establishment per ENTREE date, between two dates inclusive (days without any
-- visit are absent from the result).
SELECT entree::date AS day, count(*) AS visits
FROM rpu
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND entree >= %(first_day)s::date
  AND entree < %(last_day)s::date + 1
GROUP BY 1
ORDER BY 1
