-- One establishment's visits with ENTREE in [start, end_exclusive), for an outbound file.
-- The columns are rpu.model.Visit's fields, in Visit's order (rpu.extract builds a Visit from
-- each row as it is). The (finess, ordre, entree) index gives the order and the range.
SELECT record_no, entree, cp, commune, naissance, sexe, mode_entree, provenance, transport,
       transport_pec, motif, gravite, dp, da, actes, sortie, mode_sortie, destination, orient,
       extensions, flags
FROM rpu
WHERE finess = %(finess)s
  AND ordre = %(ordre)s
  AND entree >= %(start)s
  AND entree < %(end_exclusive)s
ORDER BY entree, received_file_id, record_no
