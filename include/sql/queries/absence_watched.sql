-- The establishments the absence monitor watches (parallel and live), with their contacts.
SELECT finess, ordre, name, status, it_contacts, ars_contacts
FROM establishment
WHERE status IN ('parallel', 'live')
ORDER BY finess, ordre
