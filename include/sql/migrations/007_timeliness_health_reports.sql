-- 007: timeliness of every visit, the flows' last successful runs (rpu health, heartbeat), and
-- the journal of the reports sent back to each establishment.

-- One row per visit held in rpu, filled at load (the first file that held it) and at send (the
-- first delivery to Santé publique France that carried it). The format has no visit identifier:
-- a visit is recognised from one file to the next by (FINESS, ORDRE, ENTREE), a digest of
-- (NAISSANCE, SEXE) (no birth date is stored here) and its rank among identical ones.
CREATE TABLE visit_timeliness (
    finess              char(9)     NOT NULL,
    ordre               smallint    NOT NULL,
    entree              timestamp   NOT NULL,   -- local time, as in rpu
    person              bigint      NOT NULL,   -- hashtextextended(NAISSANCE|SEXE, 0)
    rank                smallint    NOT NULL,   -- 1, 2... among visits with the same key in a file
    exit_at             timestamp   NOT NULL,   -- SORTIE, else ENTREE (local time), as last received
    first_file_id       bigint      NOT NULL,   -- integrity kept by the loader (no FK: load speed)
    first_received_at   timestamptz NOT NULL,   -- when the concentrator took that first file
    last_file_id        bigint      NOT NULL,   -- the latest file that held it
    invs_send_id        bigint,                 -- the send (no FK: load speed)
    invs_sent_at        timestamptz,            -- first delivery to Santé publique France
    PRIMARY KEY (finess, ordre, entree, person, rank)
) WITH (fillfactor = 70);  -- room for the nightly in-place (HOT) updates of exit_at and last_file_id

-- Backfill: visits already held get the reception of the file that holds them now (the best
-- known; their earlier files are not re-read), and the first invs send built after it.
INSERT INTO visit_timeliness (finess, ordre, entree, person, rank, exit_at, first_file_id, first_received_at,
                              last_file_id)
SELECT r.finess, r.ordre, r.entree,
       hashtextextended(concat_ws('|', coalesce(r.naissance::text, ''), coalesce(r.sexe, '')), 0),
       row_number() OVER (PARTITION BY r.finess, r.ordre, r.entree, r.naissance, r.sexe
                          ORDER BY r.received_file_id, r.record_no),
       coalesce(r.sortie, r.entree), r.received_file_id, f.received_at, r.received_file_id
FROM rpu r
JOIN received_file f ON f.id = r.received_file_id;

UPDATE visit_timeliness t
SET (invs_send_id, invs_sent_at) = (
    SELECT s.id, s.sent_at FROM send s
    WHERE s.destination = 'invs' AND s.status = 'sent' AND s.finess = t.finess AND s.ordre = t.ordre
      AND t.entree >= s.period_start AND t.entree < s.period_end + 1 AND s.created_at >= t.first_received_at
    ORDER BY s.sent_at LIMIT 1);

-- The last successful run of each flow (DAG), written by its final task: what `rpu health`
-- reads (tasks never read Airflow's own database).
CREATE TABLE flow_run (
    flow             text        PRIMARY KEY,   -- the DAG id
    last_success_at  timestamptz NOT NULL,
    run_id           text,
    heartbeat_at     timestamptz,               -- last heartbeat answered by [monitoring] heartbeat_url
    heartbeat_error  text                       -- last heartbeat failure (French), NULL when it worked
);

-- The reports sent back to each establishment (rpu_establishment_reports): one row per
-- establishment and period; delivered to its SFTP folder, then e-mailed to its IT contacts.
CREATE TABLE establishment_report (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    finess        char(9)     NOT NULL,
    ordre         smallint    NOT NULL,
    period_start  date        NOT NULL,
    period_end    date        NOT NULL,         -- inclusive
    file_name     text        NOT NULL,
    local_path    text        NOT NULL,
    sha256        char(64)    NOT NULL,
    visits        integer     NOT NULL,
    status        text        NOT NULL DEFAULT 'built' CHECK (status IN ('built', 'delivered', 'failed')),
    attempts      integer     NOT NULL DEFAULT 0,
    remote_path   text,
    error         text,
    emailed_to    text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    emailed_at    timestamptz,
    FOREIGN KEY (finess, ordre) REFERENCES establishment (finess, ordre),
    UNIQUE (finess, ordre, period_start, period_end)
);
