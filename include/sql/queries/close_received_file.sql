-- The journal row of a file, once its fate is decided.
UPDATE received_file
SET status = %(status)s,
    finess = %(finess)s,
    ordre = %(ordre)s,
    extract = %(extract)s,
    period_start = %(period_start)s,
    period_end = %(period_end)s,
    records = %(records)s,
    loaded_records = %(loaded_records)s,
    rejected_records = %(rejected_records)s,
    flagged_records = %(flagged_records)s,
    normalised_values = %(normalised_values)s,
    replaced_records = %(replaced_records)s,
    rule = %(rule)s,
    reason = %(reason)s,
    same_as = %(same_as)s,
    processed_at = now()
WHERE id = %(id)s
