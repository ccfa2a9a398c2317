-- 005: the ATIH reconciliation, and the lookup the daily InVS build does on covers_files.

-- What each cumulative SYRIUS file holds, month by month (ENTREE month), counted while the file
-- is written: Syrius's page shows RPU per establishment and month, and the ORU compares them.
CREATE TABLE atih_send_month (
    send_id  bigint   NOT NULL REFERENCES send (id),
    month    smallint NOT NULL CHECK (month BETWEEN 1 AND 12),
    visits   integer  NOT NULL,
    PRIMARY KEY (send_id, month)
);

-- Per establishment and month of a year, the latest ATIH file journaled (a re-run month
-- shows its newest file; cancelled files are never the latest), with how many files of that
-- month ATIH accepted, and the RPU of the month itself in the file.
CREATE VIEW atih_reconciliation AS
WITH latest AS (
    SELECT DISTINCT ON (finess, ordre, year, month) *
    FROM send
    WHERE destination = 'atih' AND status <> 'cancelled'
    ORDER BY finess, ordre, year, month, id DESC
)
SELECT l.year,
       l.month,
       l.finess,
       l.ordre,
       e.name,
       (SELECT count(*)
        FROM send s
        WHERE s.destination = 'atih' AND s.status = 'sent'
          AND s.finess = l.finess AND s.ordre = l.ordre AND s.year = l.year AND s.month = l.month
       ) AS files_sent,
       l.id AS send_id,
       l.file_name,
       l.status,
       l.visit_count,
       m.visits AS month_visits,
       l.attempts,
       l.remote_answer,
       l.created_at,
       l.sent_at
FROM latest l
LEFT JOIN establishment e ON e.finess = l.finess AND e.ordre = l.ordre
LEFT JOIN atih_send_month m ON m.send_id = l.id AND m.month = l.month;

-- The daily InVS build asks, for every file loaded, whether a send already carries it.
CREATE INDEX send_covers_files ON send USING gin (covers_files);
