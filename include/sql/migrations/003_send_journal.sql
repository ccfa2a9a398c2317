-- 003: the outbound journal. Every file built for a destination, and what became of it.
-- A send is 'sent' only once the destination has the whole file; a 'built' or 'failed' send
-- is retried from its stored file, never rebuilt.

CREATE TABLE send (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    destination      text        NOT NULL CHECK (destination IN ('invs', 'atih', 'ars')),
    kind             text        NOT NULL DEFAULT 'daily' CHECK (kind IN ('daily', 'monthly', 'replay', 'manual')),
    finess           char(9),
    ordre            smallint,
    period_start     date,
    period_end       date,
    year             smallint,             -- ATIH: the year and month of the cumulative file
    month            smallint,
    file_name        text        NOT NULL,
    local_path       text        NOT NULL, -- the built file, kept (owner-only) for retries
    sha256           char(64)    NOT NULL,
    size_bytes       bigint      NOT NULL,
    visit_count      integer     NOT NULL,
    status           text        NOT NULL DEFAULT 'built' CHECK (status IN ('built', 'sent', 'failed', 'cancelled')),
    attempts         integer     NOT NULL DEFAULT 0,
    remote_answer    text,
    covers_files     bigint[]    NOT NULL DEFAULT '{}',  -- intake journal rows this send carries
    requested_by     text,                 -- replays: who asked
    reason           text,                 -- replays: why
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    sent_at          timestamptz
);
CREATE INDEX send_pending ON send (destination, status) WHERE status IN ('built', 'failed');
CREATE INDEX send_establishment ON send (destination, finess, ordre, sent_at);
