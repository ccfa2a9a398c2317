-- The visits a file brought for one day, back from rpu_superseded into rpu.
WITH back AS (
    DELETE FROM rpu_superseded
    WHERE received_file_id = %(file_id)s
      AND entree >= %(day)s::date
      AND entree < %(day)s::date + 1
    RETURNING id, received_file_id, record_no, finess, ordre, cp, commune, naissance, sexe, entree, mode_entree,
              provenance, transport, transport_pec, motif, gravite, dp, da, actes, sortie, mode_sortie,
              destination, orient, flags, extensions
)
INSERT INTO rpu (id, received_file_id, record_no, finess, ordre, cp, commune, naissance, sexe, entree, mode_entree,
                 provenance, transport, transport_pec, motif, gravite, dp, da, actes, sortie, mode_sortie,
                 destination, orient, flags, extensions)
OVERRIDING SYSTEM VALUE
SELECT * FROM back
