-- workload 1, baseline: one ~100-byte jsonb row per transaction.
-- :payload is passed with pgbench -D payload=... (see run.sh).
INSERT INTO baseline(payload) VALUES (:payload::jsonb);
