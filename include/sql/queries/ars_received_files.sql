-- Files received per establishment and status over a window (the intake journal). A file counts
-- for the registered establishment named in its header; failing that (no readable header, a
-- misspelt FINESS, a duplicate) for the establishment whose inbox folder it came from (sender).
-- records_rejected: visits rejected inside the files (ENTREE missing or unreadable).
-- Parameters: since, until (timestamptz, until exclusive), statuses.
SELECT e.finess::text AS finess, e.ordre, rf.status,
       count(*) AS files,
       coalesce(sum(rf.rejected_records), 0) AS records_rejected,
       max(rf.received_at) AS last_received_at
FROM received_file rf
LEFT JOIN establishment h ON h.finess = rf.finess AND h.ordre = rf.ordre
JOIN establishment e
  ON (h.finess IS NOT NULL AND e.finess = h.finess AND e.ordre = h.ordre)
  OR (h.finess IS NULL AND e.finess::text = rf.sender AND e.ordre = coalesce(rf.ordre, e.ordre))
WHERE rf.received_at >= %(since)s
  AND rf.received_at < %(until)s
  AND e.status = ANY (%(statuses)s::text[])
GROUP BY e.finess, e.ordre, rf.status
