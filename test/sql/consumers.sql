-- consumers: registering and listening many times in one session.
-- Each registration and each listen once added an exit callback, and the
-- server has room for 20 per session: the 15th register_consumer after an
-- unregister_consumer ended the session (FATAL out of on_shmem_exit slots).
-- The callbacks are now added once per session.
CREATE EXTENSION mq;
\set VERBOSITY terse
SELECT mq.create_queue('cs');
SELECT pg_backend_pid() AS pid \gset

DO $$
BEGIN
    FOR i IN 1..30 LOOP
        PERFORM mq.register_consumer('c' || i);
        IF NOT mq.unregister_consumer() THEN
            RAISE EXCEPTION 'round % was not registered', i;
        END IF;
        PERFORM mq.listen('cs');
    END LOOP;
END
$$;

-- the same session, and it can still register; it listens since the
-- block committed (mq.unlisten says whether it was listening, as
-- pg_listening_channels() does)
SELECT pg_backend_pid() = :pid AS same_session;
SELECT mq.unlisten('cs');
SELECT mq.unlisten('cs');
SELECT mq.register_consumer('last');
SELECT mq.unregister_consumer();

DROP EXTENSION mq CASCADE;
