-- The establishments of one FINESS as the standard e-mails need them: the registry's row, and
-- its last switch to production (when, from which status) for the go-live e-mail.
SELECT e.finess, e.ordre, e.name, e.legal_finess, e.status, e.it_contacts,
       went_live.changed_at, went_live.old_status
FROM establishment e
LEFT JOIN LATERAL (
    SELECT changed_at, old_status
    FROM establishment_status_change c
    WHERE c.finess = e.finess AND c.ordre = e.ordre AND c.new_status = 'live'
    ORDER BY changed_at DESC, id DESC
    LIMIT 1
) went_live ON true
WHERE e.finess = %(finess)s
ORDER BY e.ordre
