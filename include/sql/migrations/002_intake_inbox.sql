-- 002: what the ingest remembers of the SFTP inbox between runs.

-- The previous listing of every depot/ folder: a file is taken only once its size and mtime
-- have stayed the same from one listing to the next (or it has not changed for a while).
CREATE TABLE inbox_listing (
    path     text        PRIMARY KEY,
    size     bigint      NOT NULL,
    mtime    bigint      NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now()
);

-- Folders of the inbox that no registered establishment owns: the ORU is told once.
CREATE TABLE inbox_unknown_folder (
    folder       text        PRIMARY KEY,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    notified_at  timestamptz
);
