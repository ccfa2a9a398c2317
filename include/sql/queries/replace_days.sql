-- The visits other files supplied on the days this file now rules (there is no visit
-- identifier in the format: a day is replaced whole). Its own visits are already in. They are
-- kept aside for a while (rpu_superseded), so that revoking this file can restore them.
WITH replaced AS (
    DELETE FROM rpu
    WHERE finess = %(finess)s
      AND ordre = %(ordre)s
      AND entree >= %(first)s
      AND entree < %(after_last)s
      AND entree::date = ANY (%(days)s::date[])
      AND received_file_id <> %(file_id)s
    RETURNING *
)
INSERT INTO rpu_superseded SELECT * FROM replaced
