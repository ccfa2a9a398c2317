-- The ARS export, typed (Parquet): one row per visit of the period, for the establishments whose
-- status is in the export scope. Column names are the French ones of the CSV.
-- Parameters: start (first ENTREE day), end (exclusive), statuses (establishment statuses exported).
SELECT r.finess::text        AS finess,
       r.ordre               AS ordre,
       r.cp                  AS code_postal,
       r.commune             AS commune,
       r.naissance           AS date_naissance,
       r.sexe                AS sexe,
       r.entree              AS date_entree,
       r.mode_entree         AS mode_entree,
       r.provenance          AS provenance,
       r.transport           AS transport,
       r.transport_pec       AS prise_en_charge_transport,
       r.motif               AS motif,
       r.gravite             AS gravite_ccmu,
       r.dp                  AS diagnostic_principal,
       r.da                  AS diagnostics_associes,
       r.actes               AS actes,
       r.sortie              AS date_sortie,
       r.mode_sortie         AS mode_sortie,
       r.destination         AS destination,
       r.orient              AS orientation,
       r.flags               AS anomalies
FROM rpu r
JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre
WHERE r.entree >= %(start)s
  AND r.entree < %(end)s
  AND e.status = ANY(%(statuses)s)
ORDER BY r.finess, r.ordre, r.entree, r.id
