-- Every establishment with the last file received from it (whatever became of it, including a
-- file refused before its header could be read, found by the folder it was dropped in) and the
-- last time one of its files was loaded.
SELECT e.finess, e.ordre, e.name, e.status,
       last_file.file_name, last_file.status, last_file.received_at,
       (SELECT max(processed_at) FROM received_file r
         WHERE r.finess = e.finess AND r.ordre = e.ordre AND r.status = 'loaded') AS last_loaded_at
FROM establishment e
LEFT JOIN LATERAL (
    SELECT file_name, status, received_at
    FROM received_file r
    WHERE (r.finess = e.finess AND r.ordre = e.ordre) OR (r.finess IS NULL AND r.sender = e.finess)
    ORDER BY received_at DESC, id DESC
    LIMIT 1
) last_file ON true
ORDER BY e.finess, e.ordre
