-- Every day a file brought: supplied by it (superseded_by NULL) or ruled by a newer file.
INSERT INTO file_day (received_file_id, finess, ordre, day, extract, in_period, visits, superseded_by)
SELECT %(file_id)s, %(finess)s, %(ordre)s, d.day, %(extract)s, d.in_period, d.visits, d.superseded_by
FROM unnest(%(days)s::date[], %(in_period)s::boolean[], %(visits)s::integer[], %(superseded_by)s::bigint[])
     AS d (day, in_period, visits, superseded_by)
