-- The files of one establishment received over a window (its own header, or its inbox folder
-- when the header could not be read), per status and rule/reason: what it sent and what became
-- of it. The reason of a held or rejected file is the French text the establishment was given.
-- Parameters: finess, ordre, since, until (timestamptz, until exclusive).
SELECT rf.status,
       rf.rule,
       CASE WHEN rf.status IN ('rejected', 'held') THEN rf.reason END AS reason,
       count(*) AS files,
       coalesce(sum(rf.loaded_records), 0) AS loaded_records,
       coalesce(sum(rf.rejected_records), 0) AS rejected_records,
       max(rf.received_at) AS last_received_at
FROM received_file rf
WHERE ((rf.finess = %(finess)s AND rf.ordre = %(ordre)s) OR (rf.finess IS NULL AND rf.sender = %(finess)s))
  AND rf.received_at >= %(since)s
  AND rf.received_at < %(until)s
GROUP BY rf.status, rf.rule, CASE WHEN rf.status IN ('rejected', 'held') THEN rf.reason END
ORDER BY count(*) DESC, rf.status
