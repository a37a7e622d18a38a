-- shapes.sh shape 3, plain-table consumer: claim and delete the 10 oldest rows per transaction.
DELETE FROM baseline
 WHERE id IN (SELECT id FROM baseline ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED)
RETURNING *;
