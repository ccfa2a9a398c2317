-- 011: when each establishment's archive folders (traites/, rejetes/, attente/) were last
-- swept for symbolic links. Every listing (every 15 minutes) sweeps the establishment's folder
-- and its depot/; the archive folders grow by a file and its report a night (a year: ~730
-- entries each), so they are swept once a day, not at every listing (listing them every time
-- cost 5.2 s a listing for 100 establishments with a year of archives, instead of 0.2 s).
-- Nothing is ever written through a link meanwhile: reports are created exclusively under
-- unpredictable names, then renamed; a name taken by a link is never reused.

CREATE TABLE inbox_sweep (
    folder    text        PRIMARY KEY,   -- the establishment's folder (its FINESS)
    swept_at  timestamptz NOT NULL
);
