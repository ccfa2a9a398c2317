-- A month rebuilt for an establishment replaces its earlier files of that month still waiting
-- to be delivered: they are cancelled, so that ATIH never gets the older one after the newer.
UPDATE send
SET status = 'cancelled',
    remote_answer = concat_ws(' ; ', remote_answer, 'annulé : remplacé par l''envoi n°' || %(replaced_by)s)
WHERE destination = 'atih'
  AND finess = %(finess)s
  AND ordre = %(ordre)s
  AND year = %(year)s
  AND month = %(month)s
  AND status IN ('built', 'failed')
  AND id <> %(replaced_by)s
