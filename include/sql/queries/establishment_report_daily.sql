-- Visits of one establishment per ENTREE day (days without visits are absent: the caller fills
-- them), and the first day it ever had a visit (days before are not "days without visits").
-- Parameters: finess, ordre, start, end (exclusive).
SELECT r.entree::date AS day, count(*) AS visits
FROM rpu r
WHERE r.finess = %(finess)s
  AND r.ordre = %(ordre)s
  AND r.entree >= %(start)s
  AND r.entree < %(end)s
GROUP BY r.entree::date
