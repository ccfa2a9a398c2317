-- Bring one establishment in line with the region configuration.
INSERT INTO establishment (finess, ordre, name, legal_finess, status, it_contacts, ars_contacts)
VALUES (%(finess)s, %(ordre)s, %(name)s, %(legal_finess)s, %(status)s, %(it_contacts)s, %(ars_contacts)s)
ON CONFLICT (finess, ordre) DO UPDATE
SET name = EXCLUDED.name,
    legal_finess = EXCLUDED.legal_finess,
    status = EXCLUDED.status,
    it_contacts = EXCLUDED.it_contacts,
    ars_contacts = EXCLUDED.ars_contacts,
    updated_at = CASE
        WHEN (establishment.name, establishment.legal_finess, establishment.status,
              establishment.it_contacts, establishment.ars_contacts)
             IS DISTINCT FROM
             (EXCLUDED.name, EXCLUDED.legal_finess, EXCLUDED.status, EXCLUDED.it_contacts, EXCLUDED.ars_contacts)
        THEN now() ELSE establishment.updated_at END
