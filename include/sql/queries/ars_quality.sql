-- FEDORU quality indicators (rpu-format.md §3), per establishment and for the region (the row
-- whose finess is NULL). For each field X: x_den = RPU in the denominator, x_filled = RPU where
-- X is filled, x_valid = RPU where X is filled and valid (so x_valid <= x_filled <= x_den).
--   exhaustivité = x_filled / x_den ; exploitabilité = x_valid / x_den.
-- Denominators: every RPU, except DESTINATION and ORIENT (MODE_SORTIE 6 or 7 only) and DP
-- (only when ORIENT is not FUGUE, PSA, SCAM or REO).
-- Validity: the value sets and formats of rpu.nomenclature, passed as parameters; PROVENANCE must
-- also agree with MODE_ENTREE; NAISSANCE gives an age of 0 to 120 years at ENTREE; SORTIE gives a
-- stay of 0 < d <= 72 h; CP has 5 digits; DP is a CIM-10 code; COMMUNE and MOTIF (free text or
-- thesaurus) are valid when filled.
-- Parameters: start, end (exclusive), statuses, and the value sets and patterns.
WITH v AS (
    SELECT r.finess,
           r.ordre,
           coalesce(r.mode_sortie IN ('6', '7'), false)                          AS after_transfer,
           coalesce(r.orient, '') <> ALL (%(orient_after_home)s::text[])        AS dp_expected,
           coalesce(r.cp, '') <> ''                                              AS cp_filled,
           coalesce(r.cp ~ %(cp_format)s, false)                                 AS cp_valid,
           coalesce(r.commune, '') <> ''                                         AS commune_filled,
           r.naissance IS NOT NULL                                               AS naissance_filled,
           coalesce(r.naissance <= r.entree::date
                    AND r.naissance > (r.entree::date - interval '121 years'), false) AS naissance_valid,
           coalesce(r.sexe, '') <> ''                                            AS sexe_filled,
           coalesce(r.sexe = ANY (%(sexe)s::text[]), false)                      AS sexe_valid,
           coalesce(r.mode_entree, '') <> ''                                     AS mode_entree_filled,
           coalesce(r.mode_entree = ANY (%(mode_entree)s::text[]), false)        AS mode_entree_valid,
           coalesce(r.provenance, '') <> ''                                      AS provenance_filled,
           coalesce(r.provenance = ANY (%(provenance)s::text[])
                    AND CASE WHEN r.mode_entree IN ('6', '7')
                                  THEN r.provenance = ANY (%(provenance_after_transfer)s::text[])
                             WHEN r.mode_entree = '8'
                                  THEN r.provenance = ANY (%(provenance_after_home)s::text[])
                             ELSE true END, false)                               AS provenance_valid,
           coalesce(r.transport, '') <> ''                                       AS transport_filled,
           coalesce(r.transport = ANY (%(transport)s::text[]), false)            AS transport_valid,
           coalesce(r.transport_pec, '') <> ''                                   AS transport_pec_filled,
           coalesce(r.transport_pec = ANY (%(transport_pec)s::text[]), false)    AS transport_pec_valid,
           coalesce(r.motif, '') <> ''                                           AS motif_filled,
           coalesce(r.gravite, '') <> ''                                         AS gravite_filled,
           coalesce(r.gravite = ANY (%(gravite)s::text[]), false)                AS gravite_valid,
           coalesce(r.dp, '') <> ''                                              AS dp_filled,
           coalesce(r.dp ~ %(cim10_format)s, false)                              AS dp_valid,
           r.sortie IS NOT NULL                                                  AS sortie_filled,
           coalesce(r.sortie > r.entree AND r.sortie <= r.entree + interval '72 hours', false) AS sortie_valid,
           coalesce(r.mode_sortie, '') <> ''                                     AS mode_sortie_filled,
           coalesce(r.mode_sortie = ANY (%(mode_sortie)s::text[]), false)        AS mode_sortie_valid,
           coalesce(r.destination, '') <> ''                                     AS destination_filled,
           coalesce(r.destination = ANY (%(destination_after_transfer)s::text[]), false) AS destination_valid,
           coalesce(r.orient, '') <> ''                                          AS orient_filled,
           coalesce(r.orient = ANY (%(orient_after_transfer)s::text[]), false)   AS orient_valid
    FROM rpu r
    JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre
    WHERE r.entree >= %(start)s
      AND r.entree < %(end)s
      AND e.status = ANY (%(statuses)s::text[])
)
SELECT finess::text AS finess,
       ordre,
       count(*) AS visits,
       count(*) AS cp_den,
       count(*) FILTER (WHERE cp_filled) AS cp_filled,
       count(*) FILTER (WHERE cp_valid) AS cp_valid,
       count(*) AS commune_den,
       count(*) FILTER (WHERE commune_filled) AS commune_filled,
       count(*) FILTER (WHERE commune_filled) AS commune_valid,
       count(*) AS naissance_den,
       count(*) FILTER (WHERE naissance_filled) AS naissance_filled,
       count(*) FILTER (WHERE naissance_valid) AS naissance_valid,
       count(*) AS sexe_den,
       count(*) FILTER (WHERE sexe_filled) AS sexe_filled,
       count(*) FILTER (WHERE sexe_valid) AS sexe_valid,
       count(*) AS mode_entree_den,
       count(*) FILTER (WHERE mode_entree_filled) AS mode_entree_filled,
       count(*) FILTER (WHERE mode_entree_valid) AS mode_entree_valid,
       count(*) AS provenance_den,
       count(*) FILTER (WHERE provenance_filled) AS provenance_filled,
       count(*) FILTER (WHERE provenance_valid) AS provenance_valid,
       count(*) AS transport_den,
       count(*) FILTER (WHERE transport_filled) AS transport_filled,
       count(*) FILTER (WHERE transport_valid) AS transport_valid,
       count(*) AS transport_pec_den,
       count(*) FILTER (WHERE transport_pec_filled) AS transport_pec_filled,
       count(*) FILTER (WHERE transport_pec_valid) AS transport_pec_valid,
       count(*) AS motif_den,
       count(*) FILTER (WHERE motif_filled) AS motif_filled,
       count(*) FILTER (WHERE motif_filled) AS motif_valid,
       count(*) AS gravite_den,
       count(*) FILTER (WHERE gravite_filled) AS gravite_filled,
       count(*) FILTER (WHERE gravite_valid) AS gravite_valid,
       count(*) FILTER (WHERE dp_expected) AS dp_den,
       count(*) FILTER (WHERE dp_expected AND dp_filled) AS dp_filled,
       count(*) FILTER (WHERE dp_expected AND dp_valid) AS dp_valid,
       count(*) AS sortie_den,
       count(*) FILTER (WHERE sortie_filled) AS sortie_filled,
       count(*) FILTER (WHERE sortie_valid) AS sortie_valid,
       count(*) AS mode_sortie_den,
       count(*) FILTER (WHERE mode_sortie_filled) AS mode_sortie_filled,
       count(*) FILTER (WHERE mode_sortie_valid) AS mode_sortie_valid,
       count(*) FILTER (WHERE after_transfer) AS destination_den,
       count(*) FILTER (WHERE after_transfer AND destination_filled) AS destination_filled,
       count(*) FILTER (WHERE after_transfer AND destination_valid) AS destination_valid,
       count(*) FILTER (WHERE after_transfer) AS orient_den,
       count(*) FILTER (WHERE after_transfer AND orient_filled) AS orient_filled,
       count(*) FILTER (WHERE after_transfer AND orient_valid) AS orient_valid
FROM v
GROUP BY GROUPING SETS ((finess, ordre), ())
