-- mq.alter_queue: change settings, NULL keeps a setting, checks as create.
\set VERBOSITY terse
CREATE EXTENSION mq;
SELECT mq.create_queue('a');
SELECT mq.create_queue('log', partitions => 2);

SELECT mq.alter_queue('a', visibility_timeout => '1 minute', max_attempts => 9, notify => false);
SELECT visibility_timeout, max_attempts, retry_delay, notify FROM mq.queues WHERE queue_name = 'a';
-- the new default visibility timeout applies to the next read at once
SELECT mq.send('a', '{}') > 0 AS sent;
SELECT visible_at - clock_timestamp() BETWEEN '55 seconds' AND '60 seconds' AS one_minute
  FROM mq.read('a');
SELECT mq.alter_queue('a');                                  -- nothing changes
SELECT visibility_timeout, max_attempts, notify FROM mq.queues WHERE queue_name = 'a';
SELECT mq.alter_queue('log', retention => '2 days', session_timeout => '10 seconds');
SELECT retention, session_timeout FROM mq.queues WHERE queue_name = 'log';

-- bad input changes nothing
SELECT mq.alter_queue('a', max_attempts => 0);
SELECT mq.alter_queue('a', visibility_timeout => '13 hours');
SELECT mq.alter_queue('a', retry_delay => '1 hour', retry_delay_max => '1 minute');
SELECT mq.alter_queue('a', retention => '1 day');
SELECT mq.alter_queue('nope', notify => true);
SELECT mq.alter_queue(NULL);
SELECT visibility_timeout, max_attempts, notify FROM mq.queues WHERE queue_name = 'a';

-- rate limits (the test server preloads mq)
SELECT mq.create_queue('r', rate_limit => '25/min');
SELECT rate_limit_per_second * 60 AS per_minute, rate_limit_burst FROM mq.queues WHERE queue_name = 'r';
SELECT mq.send_batch('r', ARRAY['{}', '{}']::jsonb[]) > 0 AS sent;
SELECT count(*) AS burst_of_one FROM mq.read('r', 10);
SELECT count(*) AS none_left FROM mq.read('r', 10);
SELECT mq.alter_queue('r', rate_limit_burst => 4);
SELECT rate_limit_per_second * 60 AS per_minute, rate_limit_burst FROM mq.queues WHERE queue_name = 'r';
SELECT mq.alter_queue('r', rate_limit => '2/h', rate_limit_burst => 2);
SELECT rate_limit_per_second * 3600 AS per_hour, rate_limit_burst FROM mq.queues WHERE queue_name = 'r';
SELECT mq.alter_queue('r', rate_limit => 'none');
SELECT rate_limit_per_second, rate_limit_burst FROM mq.queues WHERE queue_name = 'r';
SELECT mq.create_queue('bad', rate_limit => 'fast');
SELECT mq.create_queue('bad', rate_limit => '0/s');
SELECT mq.create_queue('bad', rate_limit => '2000000/s');
SELECT mq.create_queue('bad', rate_limit => '5/s', rate_limit_burst => 0);
SELECT mq.create_queue('bad', rate_limit_burst => 3);
-- rates whose next token is beyond a timestamp, or that overflow a
-- double, are refused (22023), not stored or failing with 22003
SELECT mq.create_queue('bad', rate_limit => '0.000000000000000000000000000000000000000001/s');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bad', rate_limit => '0.0000000001/h');
SELECT mq.create_queue('bad', rate_limit => '0.' || repeat('0', 400) || '1/s');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bad', rate_limit => repeat('9', 400) || '/s');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bad', rate_limit => '1e-42/s');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.alter_queue('r', rate_limit => '0.04/h');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.alter_queue('r', rate_limit => repeat('0', 1000) || '3600000000.1/h');
\echo :LAST_ERROR_SQLSTATE
-- the edges: one a day, and 1000000/s
SELECT mq.alter_queue('r', rate_limit => '0.0417/h');
SELECT round((rate_limit_per_second * 86400)::numeric, 4) AS per_day FROM mq.queues WHERE queue_name = 'r';
SELECT mq.alter_queue('r', rate_limit => repeat('0', 1000) || '3600000000/h', rate_limit_burst => 5);
SELECT rate_limit_per_second FROM mq.queues WHERE queue_name = 'r';
SELECT count(*) AS bad_queues FROM mq.queues WHERE queue_name = 'bad';

DROP EXTENSION mq CASCADE;
