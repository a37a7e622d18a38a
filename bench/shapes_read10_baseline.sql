-- shapes.sh shape 3, plain-table consumer: claim and delete the 10 oldest rows per transaction.
-- The subquery is an array (an InitPlan, run once), not read1_baseline.sql's IN (...): shapes 3
-- and 5 start from an empty, just analyzed table, whose statistics make the IN form's cached
-- plan a nested-loop semi join that re-runs the LIMIT subquery for every row of the table, so
-- that one DELETE deletes the whole table and takes minutes once it has grown. shapes.sh runs
-- these consumers with enable_seqscan and enable_sort off, so that the plan is the textbook one
-- whatever the statistics say: the oldest ids from the primary key, locked with SKIP LOCKED,
-- then deleted through the primary key.
DELETE FROM baseline
 WHERE id = ANY (ARRAY(SELECT id FROM baseline ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED))
RETURNING *;
