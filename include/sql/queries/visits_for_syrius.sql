-- visits_for.sql for the anonymised SYRIUS file: only what that file is made of. COMMUNE is
-- never read (NULL keeps Visit's field order); extensions and flags are left out (Visit's
-- defaults). Fewer columns to decode: a yearly extract is about a fifth faster.
SELECT record_no, entree, cp, NULL::text AS commune, naissance, sexe, mode_entree, provenance, transport,
       transport_pec, motif, gravite, dp, da, actes, sortie, mode_sortie, destination, orient
FROM rpu
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND entree >= %(start)s
  AND entree < %(end_exclusive)s
ORDER BY entree, received_file_id, record_no
