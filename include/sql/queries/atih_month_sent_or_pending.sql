-- Whether an establishment's cumulative file for a month is already journaled (sent, or built
-- or failed and still to be delivered): the scheduled run then does not build it again.
SELECT EXISTS (
    SELECT 1
    FROM send
    WHERE destination = 'atih'
      AND finess = %(finess)s
      AND ordre = %(ordre)s
      AND year = %(year)s
      AND month = %(month)s
      AND status IN ('built', 'sent', 'failed')
)
