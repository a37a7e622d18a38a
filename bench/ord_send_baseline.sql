-- ordering.sh workload 3, baseline: one ~100-byte jsonb row per transaction
-- (bigserial id, jsonb, timestamptz default clock_timestamp()).
INSERT INTO baseline(payload) VALUES (:payload::jsonb);
