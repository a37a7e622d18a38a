-- shapes.sh shape 5, plain-table consumer: claim and delete the oldest row, one per transaction.
-- The read1_baseline.sql DELETE with its subquery as an array (an InitPlan, run once): see
-- shapes_read10_baseline.sql for why the runs that start from an empty table need this form.
DELETE FROM baseline
 WHERE id = ANY (ARRAY(SELECT id FROM baseline ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED))
RETURNING *;
