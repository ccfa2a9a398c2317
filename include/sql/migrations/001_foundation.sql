-- 001: the regional store's foundation: establishments, the intake journal, the RPU, the
-- findings on every rejected or flagged record.

CREATE TABLE establishment (
    finess        char(9)     NOT NULL,
    ordre         smallint    NOT NULL DEFAULT 0,
    name          text        NOT NULL,
    legal_finess  char(9),
    status        text        NOT NULL DEFAULT 'onboarding'
                  CHECK (status IN ('onboarding', 'parallel', 'live', 'inactive')),
    it_contacts   text[]      NOT NULL DEFAULT '{}',
    ars_contacts  text[]      NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (finess, ordre)
);

-- Every status change, with its date and author: the lifecycle is auditable.
CREATE TABLE establishment_status_change (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    finess      char(9)     NOT NULL,
    ordre       smallint    NOT NULL,
    old_status  text,
    new_status  text        NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now(),
    changed_by  text        NOT NULL,
    reason      text,
    FOREIGN KEY (finess, ordre) REFERENCES establishment (finess, ordre)
);

-- The intake journal: one row per received file, whatever became of it.
CREATE TABLE received_file (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    file_name          text        NOT NULL,
    sender             text,                 -- the SFTP folder (FINESS) or 'cli'
    sha256             char(64)    NOT NULL,
    size_bytes         bigint      NOT NULL,
    finess             char(9),
    ordre              smallint,
    extract            timestamp,
    period_start       date,
    period_end         date,
    records            integer     NOT NULL DEFAULT 0,
    loaded_records     integer     NOT NULL DEFAULT 0,
    rejected_records   integer     NOT NULL DEFAULT 0,
    flagged_records    integer     NOT NULL DEFAULT 0,
    normalised_values  integer     NOT NULL DEFAULT 0,
    replaced_records   integer     NOT NULL DEFAULT 0,  -- visits of earlier files this one replaced
    status             text        NOT NULL
                       CHECK (status IN ('loading', 'loaded', 'duplicate', 'superseded', 'rejected')),
    rule               text,                 -- the file-level rule of a rejection
    reason             text,                 -- French, for the sender
    same_as            bigint REFERENCES received_file (id),  -- duplicate of / superseded by
    received_at        timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz
);
CREATE INDEX received_file_sha256 ON received_file (sha256);
CREATE INDEX received_file_scope ON received_file (finess, ordre, period_start, period_end) WHERE status = 'loaded';
CREATE INDEX received_file_received_at ON received_file (received_at);

-- One row per visit. The replace scope of a file is (finess, ordre, ENTREE date in its period).
CREATE TABLE rpu (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_file_id  bigint    NOT NULL,   -- integrity kept by the loader (no FK: COPY speed)
    record_no         integer   NOT NULL,   -- PATIENT position in that file
    finess            char(9)   NOT NULL,
    ordre             smallint  NOT NULL,
    cp                text,
    commune           text,
    naissance         date,
    sexe              text,
    entree            timestamp NOT NULL,   -- local time (Europe/Paris), as in the file
    mode_entree       text,
    provenance        text,
    transport         text,
    transport_pec     text,
    motif             text,
    gravite           text,
    dp                text,
    da                text[]    NOT NULL DEFAULT '{}',
    actes             text[]    NOT NULL DEFAULT '{}',
    sortie            timestamp,
    mode_sortie       text,
    destination       text,
    orient            text,
    extensions        jsonb,                -- producer extension elements, kept as received
    flags             text[]    NOT NULL DEFAULT '{}'   -- rule codes of its quality flags
);
CREATE INDEX rpu_scope ON rpu (finess, ordre, entree);

-- Every finding: file-level (record_no NULL), rejected visits and flagged visits.
CREATE TABLE record_issue (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_file_id  bigint   NOT NULL REFERENCES received_file (id),
    record_no         integer,
    entree            text,                 -- ENTREE as received, to name the visit
    rule              text     NOT NULL,
    level             text     NOT NULL CHECK (level IN ('file', 'record', 'flag')),
    field             text,
    raw_value         text,
    message           text     NOT NULL
);
CREATE INDEX record_issue_file ON record_issue (received_file_id);
