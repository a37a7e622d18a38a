-- workload 2/4, baseline: claim and delete the oldest row, one per transaction.
DELETE FROM baseline
 WHERE id IN (SELECT id FROM baseline ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING *;
