-- The ARS export as a French spreadsheet reads it (COPY ... TO STDOUT, ';', header): dates
-- dd/mm/yyyy [hh:mm], lists joined with ','. Same rows and order as ars_export_rows.sql.
-- Free text and codes kept as received can start with = + - @ (a formula for a spreadsheet:
-- CSV injection); such a cell is prefixed with an apostrophe. The Parquet file keeps them raw.
-- Parameters: start, end (exclusive), statuses.
COPY (
    SELECT r.finess                                                    AS finess,
           r.ordre                                                     AS ordre,
           regexp_replace(r.cp, '^([-=+@\t\r])', '''\1')               AS code_postal,
           regexp_replace(r.commune, '^([-=+@\t\r])', '''\1')          AS commune,
           to_char(r.naissance, 'DD/MM/YYYY')                          AS date_naissance,
           regexp_replace(r.sexe, '^([-=+@\t\r])', '''\1')             AS sexe,
           to_char(r.entree, 'DD/MM/YYYY HH24:MI')                     AS date_entree,
           regexp_replace(r.mode_entree, '^([-=+@\t\r])', '''\1')      AS mode_entree,
           regexp_replace(r.provenance, '^([-=+@\t\r])', '''\1')       AS provenance,
           regexp_replace(r.transport, '^([-=+@\t\r])', '''\1')        AS transport,
           regexp_replace(r.transport_pec, '^([-=+@\t\r])', '''\1')    AS prise_en_charge_transport,
           regexp_replace(r.motif, '^([-=+@\t\r])', '''\1')            AS motif,
           regexp_replace(r.gravite, '^([-=+@\t\r])', '''\1')          AS gravite_ccmu,
           regexp_replace(r.dp, '^([-=+@\t\r])', '''\1')               AS diagnostic_principal,
           nullif(regexp_replace(array_to_string(r.da, ','), '^([-=+@\t\r])', '''\1'), '')
                                                                       AS diagnostics_associes,
           nullif(regexp_replace(array_to_string(r.actes, ','), '^([-=+@\t\r])', '''\1'), '')
                                                                       AS actes,
           to_char(r.sortie, 'DD/MM/YYYY HH24:MI')                     AS date_sortie,
           regexp_replace(r.mode_sortie, '^([-=+@\t\r])', '''\1')      AS mode_sortie,
           regexp_replace(r.destination, '^([-=+@\t\r])', '''\1')      AS destination,
           regexp_replace(r.orient, '^([-=+@\t\r])', '''\1')           AS orientation,
           nullif(array_to_string(r.flags, ','), '')                   AS anomalies
    FROM rpu r
    JOIN establishment e ON e.finess = r.finess AND e.ordre = r.ordre
    WHERE r.entree >= %(start)s
      AND r.entree < %(end)s
      AND e.status = ANY(%(statuses)s)
    ORDER BY r.finess, r.ordre, r.entree, r.id
) TO STDOUT WITH (FORMAT csv, DELIMITER ';', HEADER true, ENCODING 'UTF8')
