-- 004: absence monitoring. The days an establishment sent nothing, the episodes they form,
-- the flows that collapsed, and what the daily e-mails already said (a second run the same day
-- counts nothing twice and sends nothing twice).
--
-- Days are local dates (Europe/Paris) of reception: a "missing day" D is a day on which no file
-- of the establishment was loaded. Its consequence is on the data of D-1 (each file carries J-1
-- and the six days before), which is why the period to replay is expressed in visit dates.

CREATE TABLE absence_episode (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    finess             char(9)     NOT NULL,
    ordre              smallint    NOT NULL,
    first_missing_day  date        NOT NULL,  -- first reception day with no file loaded
    last_missing_day   date        NOT NULL,  -- last one so far
    days_missing       integer     NOT NULL,
    state              text        NOT NULL DEFAULT 'open'
                       CHECK (state IN ('open', 'healed', 'replay_needed', 'replayed')),
    alerted_at         timestamptz,           -- first e-mail about it
    resumed_on         date,                  -- the day a file was loaded again
    replay_start       date,                  -- replay_needed: visit dates Santé publique France
    replay_end         date,                  --   will never get unless they are replayed
    end_notified_at    timestamptz,           -- the e-mail saying how it ended
    closed_at          timestamptz,           -- healed, or replayed
    replay_send_id     bigint REFERENCES send (id),  -- the replay that closed it
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (finess, ordre) REFERENCES establishment (finess, ordre),
    CHECK (last_missing_day >= first_missing_day),
    CHECK (days_missing = last_missing_day - first_missing_day + 1),
    CHECK ((state IN ('replay_needed', 'replayed')) = (replay_start IS NOT NULL AND replay_end IS NOT NULL)),
    CHECK (replay_end >= replay_start),
    CHECK ((state = 'replayed') = (replay_send_id IS NOT NULL))
);
-- At most one episode open per establishment.
CREATE UNIQUE INDEX absence_episode_open ON absence_episode (finess, ordre) WHERE state = 'open';
CREATE INDEX absence_episode_state ON absence_episode (state, finess, ordre);

-- Each missing day, once: the unit of idempotence of the monitor and of its e-mail.
CREATE TABLE absence_day (
    finess      char(9)     NOT NULL,
    ordre       smallint    NOT NULL,
    day         date        NOT NULL,
    episode_id  bigint      NOT NULL REFERENCES absence_episode (id),
    alerted_at  timestamptz,
    PRIMARY KEY (finess, ordre, day)
);

-- A loaded file whose visits of J-1 are under half the usual level of that weekday.
CREATE TABLE flow_warning (
    finess      char(9)       NOT NULL,
    ordre       smallint      NOT NULL,
    day         date          NOT NULL,   -- the visit date (J-1 of the reception day)
    visits      integer       NOT NULL,
    usual       numeric(10,1) NOT NULL,   -- median of the same weekday over the 8 weeks before
    alerted_at  timestamptz,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (finess, ordre, day),
    FOREIGN KEY (finess, ordre) REFERENCES establishment (finess, ordre)
);

-- The ORU's daily digest (absences, streaks of parallel establishments): once a day.
CREATE TABLE absence_digest (
    day      date        PRIMARY KEY,
    sent_at  timestamptz NOT NULL DEFAULT now()
);
