# Fuzz: every public function of mq called with generated hostile
# arguments, from two sessions at once.
#
# A PL/pgSQL procedure picks a public function of schema mq (from pg_proc,
# so new functions are fuzzed too) and builds each argument from a pool of
# SQL expressions for its type: NULL, empty and 1 MB strings, names of
# queues of every kind and of none, extreme numbers, NaN and infinities,
# zero, negative and huge intervals, empty, NULL-holding and huge arrays.
# Each call runs in its own subtransaction and its SQLSTATE is recorded.
# drop_queue and purge are fuzzed too (one call in five of theirs is
# made), and the base queues are re-created every 50 calls, so calls meet
# queues dropped under them by the other session.  Waits are short: a
# valid wait is at most 1 s, and lock_timeout (2 s) bounds lock waits.
# The seeds are fixed (MQ_FUZZ_SEED picks another set), but the two
# sessions interleave as they will.  Checks:
#   - no call raised XX000 (internal error) or any other class XX code,
#     named one of mq's internal tables (42P01) or deadlocked (40P01);
#   - the server never crashed or restarted, and both sessions finished;
#   - every key of the keyed queue has exactly one unblocked message, its
#     oldest (no key left blocked without a head);
#   - mq.metrics agrees with a count of the queues' tables.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $calls = 2000;    # per session
my $seed = $ENV{MQ_FUZZ_SEED} // 1;    # the sessions' seeds: 0.<seed>1, 0.<seed>2

my $node = PostgreSQL::Test::Cluster->new('fuzz');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.maintenance_interval = '200ms'
restart_after_crash = off
});
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
CREATE TABLE fuzz_log (session int, fn text, sqlstate text, message text, args text);

-- The base queues: a work queue, a keyed one with a dead-letter queue, a
-- partitioned one.  Re-created when a fuzzed call dropped them.
CREATE PROCEDURE base_queues() LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM mq.queues WHERE queue_name = 'w') THEN
        PERFORM mq.create_queue('w');
        PERFORM mq.send('w', jsonb_build_object('n', n)) FROM generate_series(1, 20) n;
    END IF;
    IF NOT EXISTS (SELECT FROM mq.queues WHERE queue_name = 'dlq') THEN
        PERFORM mq.create_queue('dlq');
    END IF;
    IF NOT EXISTS (SELECT FROM mq.queues WHERE queue_name = 'k') THEN
        PERFORM mq.create_queue('k', ordering => 'key', max_attempts => 2, dead_letter_queue => 'dlq');
        PERFORM mq.send('k', jsonb_build_object('n', n), 'key' || (n % 4)) FROM generate_series(1, 20) n;
    END IF;
    IF NOT EXISTS (SELECT FROM mq.queues WHERE queue_name = 'p') THEN
        PERFORM mq.create_queue('p', partitions => 2);
        PERFORM mq.send('p', jsonb_build_object('n', n), 'key' || n) FROM generate_series(1, 20) n;
    END IF;
END $$;

-- SQL expressions for an argument of a type; the argument's name steers
-- queue names toward existing queues (to reach past the name checks).
CREATE FUNCTION arg_pool(p_type regtype, p_name text) RETURNS text[] LANGUAGE sql AS $$
SELECT CASE
  WHEN p_name IN ('queue_name', 'dead_letter_queue') THEN ARRAY['NULL', $q$'w'$q$, $q$'k'$q$, $q$'p'$q$,
       $q$'dlq'$q$, $q$'w'$q$, $q$'k'$q$, $q$'p'$q$, $q$'nope'$q$, $q$''$q$, $q$'a b'$q$,
       $q$repeat('q', 1000000)$q$, $q$'pgmq.w'$q$]
  WHEN p_type = 'text'::regtype THEN ARRAY['NULL', $q$''$q$, $q$'x'$q$, $q$'key1'$q$, $q$'none'$q$,
       $q$'key'$q$, $q$'send'$q$, $q$'consume'$q$, $q$'admin'$q$, $q$'earliest'$q$, $q$'latest'$q$,
       $q$'1e-42/s'$q$, $q$'10/s'$q$, $q$'-1/s'$q$, $q$'1e400/h'$q$, $q$'g'$q$, $q$'m1'$q$,
       $q$repeat('x', 1000000)$q$, $q$E'\u00e9\u2603'$q$]
  WHEN p_type = 'bigint'::regtype THEN ARRAY['NULL', '0', '-1', '1', '2', '3', '5', '20',
       '9223372036854775807', '(-9223372036854775807 - 1)', '9223372036854775806']
  WHEN p_type = 'integer'::regtype THEN ARRAY['NULL', '0', '-1', '1', '2', '10', '100', '10001',
       '2147483647', '(-2147483647 - 1)']
  WHEN p_type = 'double precision'::regtype THEN ARRAY['NULL', '0', '-1', '1', '2', $q$'NaN'$q$,
       $q$'Infinity'$q$, $q$'-Infinity'$q$, '1e308', '1e-308']
  WHEN p_type = 'interval'::regtype THEN ARRAY['NULL', $q$'0'$q$, $q$'-1 second'$q$,
       $q$'1 millisecond'$q$, $q$'100 milliseconds'$q$, $q$'1 second'$q$, $q$'1 hour'$q$,
       $q$'15 minutes 1 second'$q$, $q$'100000 years'$q$, $q$'-100000 years'$q$]
  WHEN p_type = 'boolean'::regtype THEN ARRAY['NULL', 'true', 'false']
  WHEN p_type = 'timestamp with time zone'::regtype THEN ARRAY['NULL', $q$'infinity'$q$,
       $q$'-infinity'$q$, 'now()', $q$'epoch'$q$]
  WHEN p_type = 'jsonb'::regtype THEN ARRAY['NULL', $q$'{}'$q$, $q$'[]'$q$, $q$'null'$q$,
       $q$'"s"'$q$, $q$'{"a": 1}'$q$, $q$jsonb_build_object('big', repeat('x', 1000000))$q$]
  WHEN p_type = 'jsonb[]'::regtype THEN ARRAY['NULL', $q$'{}'::jsonb[]$q$, 'ARRAY[NULL::jsonb]',
       $q$ARRAY['{}'::jsonb, '[]']$q$, $q$array_fill('{}'::jsonb, ARRAY[100001])$q$,
       $q$array_fill('{"a": 1}'::jsonb, ARRAY[2000])$q$]
  WHEN p_type = 'text[]'::regtype THEN ARRAY['NULL', $q$'{}'::text[]$q$, 'ARRAY[NULL::text]',
       $q$ARRAY['key1', 'key2']$q$, $q$ARRAY(SELECT 'k' || i FROM generate_series(1, 2000) i)$q$,
       $q$ARRAY[repeat('k', 1000000)]$q$]
  WHEN p_type = 'bigint[]'::regtype THEN ARRAY['NULL', $q$'{}'::bigint[]$q$, 'ARRAY[NULL::bigint]',
       'ARRAY[1, 2, 3]', 'ARRAY[9223372036854775807]', 'ARRAY(SELECT generate_series(1, 200000)::bigint)']
  WHEN p_type = 'regrole'::regtype THEN ARRAY['NULL', $q$'postgres'$q$, $q$'pg_monitor'$q$,
       $q$'mq_owner'$q$, $q$'public'$q$]
  ELSE ARRAY['NULL'] END
$$;

CREATE PROCEDURE fuzz(p_session int, p_seed float8, p_calls int) LANGUAGE plpgsql AS $$
DECLARE
    v_fns regprocedure[] := ARRAY(
        SELECT p.oid::regprocedure FROM pg_proc p
         WHERE p.pronamespace = 'mq'::regnamespace AND p.proname !~ '^_'
           AND p.proname <> 'citus_distribute' ORDER BY p.oid);
    v_fn regprocedure;
    v_args text[];
    v_sql text;
    v_state text;
    v_msg text;
BEGIN
    PERFORM setseed(p_seed);
    FOR i IN 1 .. p_calls LOOP
        IF i % 50 = 1 THEN
            BEGIN
                CALL base_queues();
            EXCEPTION WHEN duplicate_object THEN
                NULL;           -- the other session made it meanwhile
            END;
            COMMIT;
        END IF;
        v_fn := v_fns[1 + floor(random() * array_length(v_fns, 1))::int];
        -- drop_queue and purge: one call in five of theirs is made
        IF v_fn::text ~ '^mq\.(drop_queue|purge)' AND random() > 0.2 THEN
            v_fn := 'mq.metrics(text)'::regprocedure;
        END IF;
        SELECT array_agg(format('(%s)::%s', CASE WHEN random() < 0.08 THEN 'NULL' ELSE
                              (SELECT x[1 + floor(random() * array_length(x, 1))::int]
                                 FROM (SELECT arg_pool(a.t, a.n) AS x OFFSET 0) pool) END, a.t)
                         ORDER BY a.ord)
          INTO v_args
          FROM pg_proc p,
               unnest(p.proargtypes::regtype[], p.proargnames[1:p.pronargs]) WITH ORDINALITY AS a(t, n, ord)
         WHERE p.oid = v_fn;
        v_sql := format('SELECT count(*) FROM %s(%s) AS f', v_fn::oid::regproc,
                        array_to_string(v_args, ', '));
        v_state := '00000';
        v_msg := NULL;
        BEGIN
            EXECUTE v_sql;
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_msg = MESSAGE_TEXT;
        END;
        INSERT INTO fuzz_log VALUES (p_session, v_fn::text, v_state, left(v_msg, 200),
                                     CASE WHEN v_state LIKE 'XX%' THEN left(v_sql, 500) END);
        COMMIT;
    END LOOP;
END $$;
});

my @sessions;
foreach my $s (1, 2)
{
	my %h = (out => '', err => '');
	$h{h} = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
			'-c', "SET lock_timeout = '2s'", '-c', "CALL fuzz($s, 0.$seed$s, $calls)"
		],
		'<', \undef, '>', \$h{out}, '2>', \$h{err},
		IPC::Run::timeout(1200));
	push @sessions, \%h;
}
foreach my $h (@sessions)
{
	$h->{h}->finish;
	is($h->{h}->result(0), 0, 'a fuzzing session finished') or diag($h->{err});
}

my $summary = $node->safe_psql('postgres', q{
SELECT count(*), count(DISTINCT fn), count(*) FILTER (WHERE sqlstate = '00000'),
       string_agg(DISTINCT sqlstate, ' ' ORDER BY sqlstate)
  FROM fuzz_log});
my ($n, $fns, $ok, $states) = split /\|/, $summary;
note("$n calls of $fns functions, $ok succeeded; SQLSTATEs: $states");
is($n, 2 * $calls, 'every call was made and recorded');
is($node->safe_psql('postgres', q{
SELECT coalesce(string_agg(format('%s %s: %s [%s]', fn, sqlstate, message, args), E'\n'), '')
  FROM fuzz_log WHERE sqlstate LIKE 'XX%'}), '', 'no call raised an internal error (class XX)');
is($node->safe_psql('postgres', q{
SELECT coalesce(string_agg(DISTINCT format('%s %s: %s', fn, sqlstate, message), E'\n'), '')
  FROM fuzz_log WHERE sqlstate IN ('42P01', '40P01')}), '',
	'no call named an internal table (42P01) or deadlocked (40P01), racing drops or not');
ok(!$node->log_contains(qr/terminated by signal|server process .* was terminated|all server processes terminated/),
	'no backend crashed');

# no key left blocked without a head
$node->safe_psql('postgres', 'CALL base_queues()');
my $kid = $node->safe_psql('postgres', q{SELECT queue_id FROM mq.queue WHERE queue_name = 'k'});
my $k_all = join(' UNION ALL ', map { "SELECT msg_id, key, blocked FROM mq.q_${kid}_$_" } ('0', '1', '2', '3', 'd'));
is($node->safe_psql('postgres', qq{
SELECT count(*) FROM (
  SELECT key, count(*) FILTER (WHERE NOT blocked) AS heads,
         (array_agg(blocked ORDER BY msg_id))[1] AS oldest_blocked
    FROM ($k_all) m WHERE key IS NOT NULL GROUP BY key) k
 WHERE heads <> 1 OR oldest_blocked}), '0', 'every key of the keyed queue has one unblocked message, its oldest');

# mq.metrics agrees with the tables
foreach my $q ('w', 'k')
{
	my $id = $node->safe_psql('postgres', "SELECT queue_id FROM mq.queue WHERE queue_name = '$q'");
	my $all = join(' UNION ALL ', map { "SELECT claimed, blocked, '$_' = 'd' AS d, vt FROM mq.q_${id}_$_" } ('0', '1', '2', '3', 'd'));
	is($node->safe_psql('postgres', qq{
SELECT (SELECT format('%s %s %s', depth + delayed, in_flight, blocked) FROM mq.metrics('$q'))
     = (SELECT format('%s %s %s', count(*) FILTER (WHERE NOT claimed AND NOT blocked),
                      count(*) FILTER (WHERE claimed), count(*) FILTER (WHERE blocked)) FROM ($all) m)}),
		't', "mq.metrics of queue $q agrees with its tables");
}

$node->stop;
done_testing();
