-- 006: authority per day, held files, extensions in the order received.
--
-- For each (FINESS, ORDRE, day) the visits held come from one file: among the files that bring
-- the day, the one ranked first by (the day is inside its declared period, EXTRACT, id). Every
-- file accepted records each day it brought, and whether it is that day's authority
-- (superseded_by NULL) or which newer file took the day from it. The result does not depend on
-- the order in which files arrived.

CREATE TABLE file_day (
    received_file_id  bigint    NOT NULL REFERENCES received_file (id),
    finess            char(9)   NOT NULL,
    ordre             smallint  NOT NULL,
    day               date      NOT NULL,
    extract           timestamp NOT NULL,
    in_period         boolean   NOT NULL,   -- false: only visits dated outside the file's period
    visits            integer   NOT NULL,   -- visits the file brought for that day
    superseded_by     bigint REFERENCES received_file (id),  -- NULL: the day's authority
    revoked           boolean   NOT NULL DEFAULT false,  -- `rpu files revoke`: never a candidate again
    PRIMARY KEY (received_file_id, day)
);
-- One authority per day at most.
CREATE UNIQUE INDEX file_day_authority ON file_day (finess, ordre, day) WHERE superseded_by IS NULL AND NOT revoked;

ALTER TABLE received_file DROP CONSTRAINT received_file_status_check;
ALTER TABLE received_file ADD CONSTRAINT received_file_status_check
    CHECK (status IN ('loading', 'loaded', 'duplicate', 'superseded', 'rejected', 'held', 'revoked'));
ALTER TABLE received_file
    ADD COLUMN decided_by       text,          -- `rpu files apply|discard|revoke`: who
    ADD COLUMN decided_reason   text,          -- and why
    ADD COLUMN decided_at       timestamptz;

-- The days of the files already loaded, ranked as the loader now ranks them.
INSERT INTO file_day (received_file_id, finess, ordre, day, extract, in_period, visits)
SELECT f.id, f.finess, f.ordre, d::date, f.extract, true, 0
FROM received_file f, generate_series(f.period_start, f.period_end, interval '1 day') d
WHERE f.status = 'loaded' AND f.extract IS NOT NULL;

INSERT INTO file_day (received_file_id, finess, ordre, day, extract, in_period, visits)
SELECT r.received_file_id, f.finess, f.ordre, r.entree::date, f.extract, false, 0
FROM rpu r JOIN received_file f ON f.id = r.received_file_id
WHERE f.status = 'loaded' AND f.extract IS NOT NULL
  AND (r.entree::date < f.period_start OR r.entree::date > f.period_end)
GROUP BY r.received_file_id, f.finess, f.ordre, r.entree::date, f.extract;

UPDATE file_day fd SET visits = c.n
FROM (SELECT received_file_id, entree::date AS day, count(*)::int AS n FROM rpu GROUP BY 1, 2) c
WHERE c.received_file_id = fd.received_file_id AND c.day = fd.day;

UPDATE file_day fd SET superseded_by = ranked.first
FROM (
    SELECT received_file_id, day,
           first_value(received_file_id) OVER (
               PARTITION BY finess, ordre, day ORDER BY in_period DESC, extract DESC, received_file_id DESC
           ) AS first
    FROM file_day
) ranked
WHERE ranked.received_file_id = fd.received_file_id AND ranked.day = fd.day
  AND ranked.first <> fd.received_file_id;

-- Extensions: an ordered list of [after, name, value], `after` being the national element
-- they are written after (MOTIF or ORIENT). json keeps the order; jsonb re-sorted the keys.
ALTER TABLE rpu RENAME COLUMN extensions TO extensions_unordered;
ALTER TABLE rpu ADD COLUMN extensions json;
UPDATE rpu r SET extensions = (
    SELECT json_agg(json_build_array(
               CASE WHEN e.key IN ('HMED', 'CIRCONSTANCE') THEN 'MOTIF' ELSE 'ORIENT' END, e.key, e.value)
           ORDER BY e.ordinality)
    FROM jsonb_each_text(r.extensions_unordered) WITH ORDINALITY AS e(key, value, ordinality)
)
WHERE r.extensions_unordered IS NOT NULL;
ALTER TABLE rpu DROP COLUMN extensions_unordered;

-- Visits a newer file replaced (or that a file brought for a day a newer file rules), kept for
-- a while so that revoking a wrong file (`rpu files revoke`) restores what the next file in
-- rank held for its days. Purged after [intake] keep_replaced_days.
CREATE TABLE rpu_superseded (LIKE rpu);
ALTER TABLE rpu_superseded ADD COLUMN superseded_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX rpu_superseded_file ON rpu_superseded (received_file_id, entree);
CREATE INDEX rpu_superseded_at ON rpu_superseded (superseded_at);

-- A file that would empty or halve days we hold waits for the ORU: its bytes are kept here
-- (gzip) until `rpu files apply` or `rpu files discard`.
CREATE TABLE held_file (
    received_file_id  bigint PRIMARY KEY REFERENCES received_file (id),
    content_gzip      bytea  NOT NULL,
    days              jsonb  NOT NULL       -- [{day, held, brought}] the figures that held it
);
