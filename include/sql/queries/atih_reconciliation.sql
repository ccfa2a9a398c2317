-- The reconciliation of one year: per establishment and month, the latest file journaled.
SELECT year, month, finess, ordre, name, files_sent, send_id, file_name, status, visit_count,
       month_visits, attempts, remote_answer, created_at, sent_at
FROM atih_reconciliation
WHERE year = %(year)s
ORDER BY finess, ordre, month
