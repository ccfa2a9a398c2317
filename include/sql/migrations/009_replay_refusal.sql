-- 009: replay requests the concentrator refused. A refusal is an answer to the ARS (shown on
-- the run in Airflow), not an incident: no failure e-mail; the ORU reads them once, as lines of
-- its daily digest (digested_at). Values are kept as typed, valid or not.

CREATE TABLE replay_refusal (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    requested_by  text        NOT NULL,
    run_id        text,
    finess        text,
    ordre         text,
    period_start  text,
    period_end    text,
    reason        text,
    refusal       text        NOT NULL,  -- the French answer, as the ARS read it
    digested_at   timestamptz            -- listed in the ORU's daily digest
);

CREATE INDEX replay_refusal_to_digest ON replay_refusal (requested_at) WHERE digested_at IS NULL;
