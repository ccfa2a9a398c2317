-- This file's visits on the days another file rules: not applied, kept aside for a while
-- (rpu_superseded) in case that other file is revoked.
WITH not_applied AS (
    DELETE FROM rpu
    WHERE finess = %(finess)s
      AND ordre = %(ordre)s
      AND entree >= %(first)s
      AND entree < %(after_last)s
      AND entree::date = ANY (%(days)s::date[])
      AND received_file_id = %(file_id)s
    RETURNING *
)
INSERT INTO rpu_superseded SELECT * FROM not_applied
