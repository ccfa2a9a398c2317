-- The values of coded fields refused most often in the visits an establishment holds now (the
-- findings of the files that hold its visits of the period: each visit counted once, not once
-- per nightly file). Only coded fields: never a postcode, a commune, a birth date nor free text.
-- Parameters: finess, ordre, start, end (ENTREE, end exclusive), fields, rules, top.
WITH holding AS (
    SELECT DISTINCT r.received_file_id
    FROM rpu r
    WHERE r.finess = %(finess)s
      AND r.ordre = %(ordre)s
      AND r.entree >= %(start)s
      AND r.entree < %(end)s
)
SELECT i.field,
       upper(btrim(i.raw_value)) AS value,
       i.rule,
       count(*) AS visits
FROM record_issue i
JOIN holding h ON h.received_file_id = i.received_file_id
WHERE i.field = ANY (%(fields)s::text[])
  AND i.rule = ANY (%(rules)s::text[])
  AND coalesce(btrim(i.raw_value), '') <> ''
GROUP BY i.field, upper(btrim(i.raw_value)), i.rule
ORDER BY count(*) DESC, i.field, upper(btrim(i.raw_value))
LIMIT %(top)s
