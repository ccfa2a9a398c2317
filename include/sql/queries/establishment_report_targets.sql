-- The establishments that get a report: live, parallel or onboarding (or the one asked for).
-- Parameters: statuses, finess (NULL: all of the statuses).
SELECT e.finess::text, e.ordre, e.name, e.status, e.it_contacts
FROM establishment e
WHERE e.status = ANY (%(statuses)s::text[])
  AND (%(finess)s::text IS NULL OR e.finess = %(finess)s)
ORDER BY e.finess, e.ordre
