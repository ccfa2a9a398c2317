-- Visits set aside on some days of an establishment (there is no visit identifier in the
-- format: a day is replaced whole), kept for a while in rpu_superseded so that a revoke can
-- restore them. ``own`` false: the visits other files supplied on the days this file now rules
-- (its own are already in); ``own`` true: this file's visits on the days another file rules.
WITH set_aside AS (
    DELETE FROM rpu
    WHERE finess = %(finess)s
      AND ordre = %(ordre)s
      AND entree >= %(first)s
      AND entree < %(after_last)s
      AND entree::date = ANY (%(days)s::date[])
      AND (received_file_id = %(file_id)s) = %(own)s
    RETURNING *
)
INSERT INTO rpu_superseded SELECT * FROM set_aside
