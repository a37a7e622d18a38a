-- workload 3, baseline: claim and delete the 100 oldest rows per transaction.
DELETE FROM baseline
 WHERE id IN (SELECT id FROM baseline ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)
RETURNING *;
