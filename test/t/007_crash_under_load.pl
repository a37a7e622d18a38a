# Crash safety of a work queue under load, with exact accounting.
#
# One keyed work queue (ordering => 'key') takes a mixed load from several
# sessions, each a PL/pgSQL procedure with its own transactions, run by psql:
#   - 3 producers: mq.send and mq.send_batch, keyed (200 keys) and keyless,
#     some with a delay of 0.2 to 2 s (the delayed table), some rolled back
#     (whole transactions, savepoints, and big batches that only burn ids);
#     one of them sends a big committed batch now and then, so that the
#     segments rotate (more than 65536 ids over the run) and fill up;
#   - 6 consumers: mq.read with a short (300 ms) or long (4 s) visibility
#     timeout, then per message ack, nack (backoff or a given delay),
#     extend (heartbeat, then ack), extend 0 (release), a rolled-back ack,
#     or nothing (the claim lapses); some reads are rolled back; two of the
#     consumers are registered (mq.register_consumer);
#   - 1 maintainer calling mq.maintain() every 200 ms (rotations, TRUNCATE
#     of emptied segments, relocation of the oldest segment into the delayed
#     table), next to mq's background worker.
# Every session records what it did in ledger tables in the same transaction
# as the mq call: a committed send has exactly one row in sent, a committed
# claim one row per message in deliveries, a committed ack one row in events
# (kind 'ack', ok); what rolls back leaves no row.  Rolled-back sends carry
# the payload marker rb = true.
#
# Phase A: while the load runs, an immediate shutdown, then a start (WAL
# replay).  Phase B: while the load runs again, a consumer's backend is
# killed with SIGKILL and the postmaster reinitializes.  Phase C: the load
# runs once more and ends by itself.  Load sessions die at the crashes; only
# the errors a crash causes are accepted from them.  Just before each crash
# the test claims a few messages itself and never acks them.  Then
# everything is drained (long visibility timeout, ack with receipt, in the
# ledger), waiting with poll_query_until for delayed messages, backoffs and
# lapsing claims to come due.  Checks:
#   - every committed send was acked exactly once, and nothing else was;
#   - no rolled-back send was ever delivered; every delivery is of a
#     committed send, with its key;
#   - no message was delivered after its ack committed;
#   - attempts count the committed deliveries of each message (1, 2, 3, ...
#     in delivery order), across the crashes too;
#   - per key, messages were acked in msg_id (send) order;
#   - the claims made just before each crash came back with their attempt
#     counted;
#   - the queue ends empty in mq.metrics and in its tables.
# Nothing here asserts timings; waits use poll_query_until and wait_for_log.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $nproducers = 3;
my $nconsumers = 6;
my $final_load_s = 6;    # phase C's load, which ends by itself
my $safety_s = 120;      # the crash phases' load deadline: only a hang reaches it

my $node = PostgreSQL::Test::Cluster->new('crash_load');
$node->init;
# Cluster.pm turns restart_after_crash off; phase B needs it.
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
restart_after_crash = on
max_connections = 50
});
$node->start;

sub sql
{
	return $node->safe_psql('postgres', shift);
}

sql(q{
CREATE EXTENSION mq;
-- never dead-letters: every message must end acked
SELECT mq.create_queue('cq', visibility_timeout => '4 seconds', ordering => 'key',
                       max_attempts => 1000, retry_delay => '100 milliseconds',
                       retry_backoff => 2, retry_delay_max => '1 second');

CREATE SEQUENCE ord;
-- committed sends (how: send, batch, big)
CREATE TABLE sent (msg_id bigint NOT NULL, k text, delayed boolean NOT NULL, how text NOT NULL,
                   worker int NOT NULL, epoch int NOT NULL, ord bigint NOT NULL);
-- committed claims, one row per message delivered
CREATE TABLE deliveries (id bigserial PRIMARY KEY, msg_id bigint NOT NULL, attempts int NOT NULL,
                         receipt bigint NOT NULL, k text, key text, rb boolean, vt interval,
                         worker int NOT NULL, epoch int NOT NULL, ord bigint NOT NULL);
-- committed acks, nacks, extends (ok: what the call returned)
CREATE TABLE events (kind text NOT NULL, msg_id bigint NOT NULL, receipt bigint, ok boolean NOT NULL,
                     worker int NOT NULL, epoch int NOT NULL, ord bigint NOT NULL);
CREATE VIEW acks AS SELECT * FROM events WHERE kind = 'ack' AND ok;
CREATE INDEX ON sent (msg_id);
CREATE INDEX ON events (msg_id);
-- after each mq.maintain: messages of this epoch in the delayed table that
-- were neither sent with a delay nor nacked, so moved there by a relocation
-- (nothing is dead-lettered here)
CREATE TABLE maint (epoch int NOT NULL, relocated bigint NOT NULL);

CREATE FUNCTION payload(p_key text, p_rb boolean) RETURNS jsonb
LANGUAGE sql AS $$ SELECT jsonb_build_object('k', p_key, 'rb', p_rb) $$;

CREATE FUNCTION random_key() RETURNS text
LANGUAGE sql AS $$ SELECT CASE WHEN random() < 0.4 THEN 'k' || (random() * 499)::int END $$;

CREATE PROCEDURE producer(p_worker int, p_epoch int, p_deadline timestamptz, p_bulk boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r float8;
    v_key text;
    v_delay interval;
    v_id bigint;
    v_keys text[];
    v_next_big timestamptz := clock_timestamp() + random() * interval '1 second';
    v_big int := 0;
BEGIN
    WHILE clock_timestamp() < p_deadline LOOP
        r := random();
        v_key := random_key();
        v_delay := CASE WHEN random() < 0.2 THEN make_interval(secs => 0.2 + random() * 1.8)
                        ELSE interval '0' END;
        IF p_bulk AND clock_timestamp() >= v_next_big THEN
            IF v_big % 2 = 0 THEN
                INSERT INTO sent
                SELECT b, NULL, false, 'big', p_worker, p_epoch, nextval('ord')
                  FROM mq.send_batch('cq', array_fill(payload(NULL, false), ARRAY[3000])) b;
                COMMIT;
            END IF;
            -- rolled back: only burns ids, enough for a rotation at the next
            -- maintenance; rotations that come faster than the sealed
            -- segments empty relocate the oldest one into the delayed table
            PERFORM mq.send_batch('cq', array_fill(payload(NULL, true), ARRAY[70000]));
            ROLLBACK;
            v_big := v_big + 1;
            v_next_big := clock_timestamp() + interval '1 second';
        ELSIF r < 0.50 THEN
            v_id := mq.send('cq', payload(v_key, false), v_key, delay => v_delay);
            INSERT INTO sent VALUES (v_id, v_key, v_delay > '0', 'send', p_worker, p_epoch, nextval('ord'));
            COMMIT;
        ELSIF r < 0.75 THEN
            SELECT array_agg(random_key()) INTO v_keys FROM generate_series(1, 2 + (random() * 20)::int);
            IF random() < 0.5 THEN
                v_delay := interval '0';
            END IF;
            INSERT INTO sent
            SELECT b.id, b.k, v_delay > '0', 'batch', p_worker, p_epoch, nextval('ord')
              FROM unnest(ARRAY(SELECT mq.send_batch('cq',
                                  ARRAY(SELECT payload(u.k, false) FROM unnest(v_keys) WITH ORDINALITY u(k, n)
                                         ORDER BY u.n),
                                  v_keys, delay => v_delay)),
                          v_keys) AS b(id, k);
            COMMIT;
        ELSIF r < 0.85 THEN
            -- rolled back entirely
            v_id := mq.send('cq', payload(v_key, true), v_key, delay => v_delay);
            INSERT INTO sent VALUES (v_id, v_key, v_delay > '0', 'send', p_worker, p_epoch, nextval('ord'));
            ROLLBACK;
        ELSIF r < 0.90 THEN
            PERFORM mq.send_batch('cq', ARRAY[payload(v_key, true), payload(NULL, true)], ARRAY[v_key, NULL]);
            ROLLBACK;
        ELSE
            -- a rolled-back savepoint, then a committed send (one key lock held at commit)
            BEGIN
                v_id := mq.send('cq', payload(v_key, true), v_key);
                INSERT INTO sent VALUES (v_id, v_key, false, 'send', p_worker, p_epoch, nextval('ord'));
                RAISE EXCEPTION 'undo';
            EXCEPTION WHEN raise_exception THEN
                NULL;
            END;
            v_key := random_key();
            v_id := mq.send('cq', payload(v_key, false), v_key, delay => v_delay);
            INSERT INTO sent VALUES (v_id, v_key, v_delay > '0', 'send', p_worker, p_epoch, nextval('ord'));
            COMMIT;
        END IF;
        -- a pace the consumers keep up with, so that little is left to drain
        PERFORM pg_sleep(0.003);
    END LOOP;
END
$$;

CREATE PROCEDURE consumer(p_worker int, p_epoch int, p_deadline timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_did bigint;
    d deliveries;
    r float8;
    v_vt interval;
    v_ok boolean;
    v_commit boolean;
BEGIN
    IF p_worker % 2 = 0 THEN
        PERFORM mq.register_consumer('consumer-' || p_worker, '10 seconds');
        COMMIT;
    END IF;
    WHILE clock_timestamp() < p_deadline LOOP
        v_vt := CASE WHEN random() < 0.3 THEN interval '300 milliseconds' ELSE interval '4 seconds' END;
        WITH m AS (SELECT * FROM mq.read('cq', 1 + (random() * 19)::int, v_vt, wait => '200 milliseconds')),
             ins AS (INSERT INTO deliveries (msg_id, attempts, receipt, k, key, rb, vt, worker, epoch, ord)
                     SELECT m.msg_id, m.attempts, m.receipt, m.payload->>'k', m.key, (m.payload->>'rb')::boolean,
                            v_vt, p_worker, p_epoch, nextval('ord')
                       FROM m
                     RETURNING id, msg_id)
        SELECT array_agg(id ORDER BY msg_id) INTO v_ids FROM ins;
        IF v_ids IS NOT NULL AND random() < 0.05 THEN
            ROLLBACK;           -- the claims are undone, and so are their records
            CONTINUE;
        END IF;
        COMMIT;
        CONTINUE WHEN v_ids IS NULL;
        -- each message in its own transaction(s): one key lock at a time
        FOREACH v_did IN ARRAY v_ids LOOP
            SELECT * INTO d FROM deliveries WHERE id = v_did;
            r := random();
            v_commit := random() >= 0.03;
            IF r < 0.55 THEN
                v_ok := mq.ack('cq', d.msg_id, d.receipt);
                INSERT INTO events VALUES ('ack', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
            ELSIF r < 0.70 THEN
                v_ok := mq.nack('cq', d.msg_id, d.receipt,
                                CASE WHEN random() < 0.5 THEN NULL
                                     ELSE random() * interval '500 milliseconds' END, 'transient');
                INSERT INTO events VALUES ('nack', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
            ELSIF r < 0.80 THEN
                -- a heartbeat, then the ack
                v_ok := mq.extend('cq', d.msg_id, '3 seconds', d.receipt) IS NOT NULL;
                INSERT INTO events VALUES ('extend', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
                COMMIT;
                v_ok := mq.ack('cq', d.msg_id, d.receipt);
                INSERT INTO events VALUES ('ack', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
            ELSIF r < 0.85 THEN
                v_ok := mq.extend('cq', d.msg_id, '0', d.receipt) IS NOT NULL;
                INSERT INTO events VALUES ('release', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
            ELSIF r < 0.95 THEN
                v_ok := mq.ack('cq', d.msg_id, d.receipt);
                INSERT INTO events VALUES ('ack', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
                v_commit := false;
            END IF;             -- else left in flight: the claim lapses
            IF v_commit THEN
                COMMIT;
            ELSE
                ROLLBACK;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

CREATE PROCEDURE maintainer(p_epoch int, p_deadline timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_delayed regclass := format('mq.q_%s_d', (SELECT queue_id FROM mq.queue WHERE queue_name = 'cq'));
    v_n bigint;
BEGIN
    WHILE clock_timestamp() < p_deadline LOOP
        PERFORM mq.maintain();
        COMMIT;
        EXECUTE format('SELECT count(*) FROM %s d JOIN sent s USING (msg_id)'
                       ' WHERE s.epoch = $1 AND NOT s.delayed AND NOT EXISTS'
                       ' (SELECT FROM events e WHERE e.msg_id = d.msg_id AND e.kind = ''nack'' AND e.ok)', v_delayed)
           INTO v_n USING p_epoch;
        IF v_n > 0 THEN
            INSERT INTO maint VALUES (p_epoch, v_n);
        END IF;
        COMMIT;
        PERFORM pg_sleep(0.2);
    END LOOP;
END
$$;

-- The final drain: claims for an hour, acks with the receipt, records both,
-- a transaction per round (a key's next message is unblocked at commit),
-- until a read finds nothing.  Done when every committed send is acked.
CREATE PROCEDURE drain(INOUT p_done boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
BEGIN
    LOOP
        WITH m AS (SELECT * FROM mq.read('cq', 2000, '1 hour')),
             ins AS (INSERT INTO deliveries (msg_id, attempts, receipt, k, key, rb, vt, worker, epoch, ord)
                     SELECT m.msg_id, m.attempts, m.receipt, m.payload->>'k', m.key, (m.payload->>'rb')::boolean,
                            '1 hour', -1, 9, nextval('ord')
                       FROM m
                     RETURNING msg_id, receipt),
             a AS (INSERT INTO events
                   SELECT 'ack', i.msg_id, i.receipt, mq.ack('cq', i.msg_id, i.receipt), -1, 9, nextval('ord')
                     FROM ins i ORDER BY i.msg_id
                   RETURNING 1)
        SELECT count(*) INTO v_n FROM a;
        COMMIT;
        EXIT WHEN v_n = 0;
    END LOOP;
    p_done := (SELECT count(*) FROM sent) = (SELECT count(*) FROM acks);
END
$$;

-- Rows in the queue's tables: its segments and its delayed table.
CREATE FUNCTION queue_rows() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id int := (SELECT queue_id FROM mq.queue WHERE queue_name = 'cq');
    v_total bigint := 0;
    v_n bigint;
    v_t text;
BEGIN
    FOREACH v_t IN ARRAY ARRAY['0', '1', '2', '3', 'd'] LOOP
        EXECUTE format('SELECT count(*) FROM mq.%I', 'q_' || v_id || '_' || v_t) INTO v_n;
        v_total := v_total + v_n;
    END LOOP;
    RETURN v_total;
END
$$;
});

# ---- the load

# Start the load sessions of an epoch; each is a psql running one CALL.
sub start_load
{
	my ($epoch, $seconds) = @_;
	my @calls;
	push @calls,
	  [ "producer_$_",
		"CALL producer($_, $epoch, clock_timestamp() + interval '$seconds seconds', "
		  . ($_ == 1 ? 'true' : 'false') . ')' ]
	  foreach (1 .. $nproducers);
	push @calls,
	  [ "consumer_$_",
		"CALL consumer($_, $epoch, clock_timestamp() + interval '$seconds seconds')" ]
	  foreach (1 .. $nconsumers);
	push @calls,
	  [ 'maintainer',
		"CALL maintainer($epoch, clock_timestamp() + interval '$seconds seconds')" ];
	my @load;
	foreach my $c (@calls)
	{
		my %h = (name => $c->[0], out => '', err => '');
		$h{h} = IPC::Run::start(
			[
				'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
				'-d', $node->connstr('postgres') . " application_name=$c->[0]",
				'-c', $c->[1]
			],
			'<', \undef, '>', \$h{out}, '2>', \$h{err},
			IPC::Run::timeout($safety_s + 60));
		push @load, \%h;
	}
	return \@load;
}

# Wait for the load sessions to end.  With $crashed, they may have died of
# the crash, and only errors a crash causes are accepted; otherwise each
# must exit cleanly.
sub finish_load
{
	my ($load, $crashed, $what) = @_;
	my @unexpected;
	foreach my $h (@$load)
	{
		eval { $h->{h}->finish; };
		my $rc = $h->{h}->result(0);
		if (!$crashed)
		{
			is($rc, 0, "$what: $h->{name} exited cleanly") or diag($h->{err});
			next;
		}
		foreach my $line (split /\n/, $h->{err})
		{
			next
			  if $line =~ /terminating connection because of crash of another server process|terminating connection due to (immediate shutdown|administrator) command|server closed the connection unexpectedly|This probably means the server terminated abnormally|before or while processing the request|connection to server .* failed|no connection to the server|the database system is (shutting down|in recovery mode)|^DETAIL:|^HINT:|^\s*$|connection to server was lost/;
			push @unexpected, "$h->{name}: $line";
		}
	}
	if ($crashed)
	{
		is(scalar(@unexpected), 0, "$what: load sessions failed only with errors of the crash")
		  or diag(join("\n", @unexpected));
	}
}

# Wait until the load of an epoch has done some of everything.  With
# $truncated, also until a sealed segment was emptied by TRUNCATE and reused
# (an epoch in mq.segment): how soon one empties depends on the machine's
# speed, and the crash must come after one.
sub wait_for_progress
{
	my ($epoch, $what, $truncated) = @_;
	my $reused = $truncated
	  ? q{AND (SELECT sum(epoch) FROM mq.segment JOIN mq.queue USING (queue_id) WHERE queue_name = 'cq') > 0}
	  : '';
	ok( $node->poll_query_until(
			'postgres', qq{
SELECT (SELECT count(*) FROM sent WHERE epoch = $epoch AND how = 'big') >= 1
   AND (SELECT count(*) FROM sent WHERE epoch = $epoch AND delayed) >= 20
   AND (SELECT count(*) FROM acks WHERE epoch = $epoch) >= 2000
   AND (SELECT count(*) FROM events WHERE epoch = $epoch AND kind = 'nack' AND ok) >= 50
   $reused}),
		"$what: the load is running (big batches, delayed sends, acks, nacks"
		  . ($truncated ? ', a segment truncated and reused)' : ')'));
}

# Just before a crash: claim a few messages for 2 seconds, committed and
# recorded (worker 0), and never ack them.
sub claim_before_crash
{
	my ($epoch) = @_;
	ok( $node->poll_query_until(
			'postgres', qq{
WITH m AS (SELECT * FROM mq.read('cq', 5, '2 seconds')),
     ins AS (INSERT INTO deliveries (msg_id, attempts, receipt, k, key, rb, vt, worker, epoch, ord)
             SELECT m.msg_id, m.attempts, m.receipt, m.payload->>'k', m.key, (m.payload->>'rb')::boolean,
                    '2 seconds', 0, $epoch, nextval('ord')
               FROM m
             RETURNING 1)
SELECT count(*) > 0 FROM ins}),
		"epoch $epoch: claimed messages that the crash leaves unacked");
}

#
# Phase A: immediate shutdown under load.
#
my $load = start_load(1, $safety_s);
wait_for_progress(1, 'phase A');
claim_before_crash(1);
$node->stop('immediate');
finish_load($load, 1, 'phase A');
$node->start;
is(sql(q{SELECT count(*) FROM mq.queues WHERE queue_name = 'cq'}), '1',
	'phase A: the queue is still there after the immediate shutdown');

#
# Phase B: a consumer's backend killed with SIGKILL under load.
#
$load = start_load(2, $safety_s);
wait_for_progress(2, 'phase B', 1);
claim_before_crash(2);
my $pid = sql(q{SELECT pid FROM pg_stat_activity WHERE application_name = 'consumer_1'});
like($pid, qr/^\d+$/, 'phase B: the backend of consumer_1');
my $log_offset = -s $node->logfile;
kill 'KILL', $pid or die "could not kill backend $pid: $!";
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
finish_load($load, 1, 'phase B');
ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
	'phase B: the server accepts connections after reinitializing');

#
# Phase C: the load runs and ends by itself.
#
$load = start_load(3, $final_load_s);
finish_load($load, 0, 'phase C');

#
# Drain: delayed messages, backoffs and lapsing claims come due while we
# poll; a message claimed before a crash comes back after its 2 s.
#
ok($node->poll_query_until('postgres', 'CALL drain(NULL)'),
	'drain: every committed send acked');

# ---- checks
sql('ANALYZE sent; ANALYZE deliveries; ANALYZE events;');
my ($nsent, $nacked, $ndeliveries, $maxid) = split /\|/, sql(q{
SELECT (SELECT count(*) FROM sent), (SELECT count(*) FROM acks), (SELECT count(*) FROM deliveries),
       (SELECT max(msg_id) FROM sent)});

is(sql('SELECT count(*) - count(DISTINCT msg_id) FROM sent'), '0', 'each msg_id sent once');
is(sql(q{SELECT count(*) FROM (SELECT msg_id FROM sent EXCEPT SELECT msg_id FROM acks) s}),
	'0', 'no committed send lost: every one was acked');
is(sql(q{SELECT count(*) FROM (SELECT msg_id FROM acks EXCEPT SELECT msg_id FROM sent) s}),
	'0', 'nothing acked that was not a committed send');
is(sql(q{SELECT count(*) FROM (SELECT msg_id FROM acks GROUP BY msg_id HAVING count(*) > 1) s}),
	'0', 'no message acked twice');
is($nacked, $nsent, "acks ($nacked) = committed sends ($nsent)");

is(sql(q{SELECT count(*) FROM deliveries WHERE rb IS DISTINCT FROM false}),
	'0', 'no rolled-back send was ever delivered');
is(sql(q{SELECT count(*) FROM deliveries d WHERE NOT EXISTS (SELECT FROM sent s WHERE s.msg_id = d.msg_id)}),
	'0', 'every delivery is of a committed send');
is(sql(q{SELECT count(*) FROM deliveries d JOIN sent s USING (msg_id)
          WHERE d.k IS DISTINCT FROM s.k OR d.key IS DISTINCT FROM s.k}),
	'0', 'every delivery carries the key it was sent with');

my $after_ack = sql(q{
SELECT count(*) FROM deliveries d JOIN acks a USING (msg_id) WHERE (d.epoch, d.ord) > (a.epoch, a.ord)});
is($after_ack, '0', 'no message delivered after its ack committed');
diag(sql(q{
SELECT string_agg(format('msg %s: delivered (epoch %s, ord %s, attempts %s, worker %s) after its ack (epoch %s, ord %s, worker %s)',
                         msg_id, de, dord, attempts, dw, ae, aord, aw), E'\n')
  FROM (SELECT d.msg_id, d.epoch AS de, d.ord AS dord, d.attempts, d.worker AS dw,
               a.epoch AS ae, a.ord AS aord, a.worker AS aw
          FROM deliveries d JOIN acks a USING (msg_id) WHERE (d.epoch, d.ord) > (a.epoch, a.ord)
         LIMIT 20) x})) if $after_ack ne '0';

my $bad_attempts = sql(q{
SELECT count(*) FROM (SELECT msg_id, attempts, row_number() OVER (PARTITION BY msg_id ORDER BY epoch, ord) AS n
                        FROM deliveries) s
 WHERE attempts <> n});
is($bad_attempts, '0', 'attempts count the committed deliveries of each message, across crashes');
if ($bad_attempts ne '0')
{
	diag(sql(q{
SELECT string_agg(format('msg %s: delivery %s had attempts %s (epoch %s, worker %s)', msg_id, n, attempts, epoch, worker),
                  E'\n')
  FROM (SELECT * FROM (SELECT msg_id, attempts, epoch, worker,
                              row_number() OVER (PARTITION BY msg_id ORDER BY epoch, ord) AS n
                         FROM deliveries) s WHERE attempts <> n LIMIT 20) x}));
}

my $order = sql(q{
SELECT count(*) FROM (SELECT msg_id, lag(msg_id) OVER (PARTITION BY s.k ORDER BY a.epoch, a.ord) AS prev
                        FROM acks a JOIN sent s USING (msg_id) WHERE s.k IS NOT NULL) x
 WHERE msg_id < prev});
is($order, '0', 'per key, messages were acked in msg_id order');

# the claims made just before each crash came back with one more attempt
foreach my $epoch (1, 2)
{
	my ($claimed, $back) = split /\|/, sql(qq{
SELECT count(*), count(*) FILTER (WHERE EXISTS (
           SELECT FROM deliveries d2 WHERE d2.msg_id = d.msg_id AND d2.attempts = d.attempts + 1
              AND (d2.epoch, d2.ord) > (d.epoch, d.ord)))
  FROM deliveries d WHERE d.worker = 0 AND d.epoch = $epoch});
	cmp_ok($claimed, '>', 0, "epoch $epoch: messages were claimed just before the crash");
	is($back, $claimed, "epoch $epoch: each came back after the crash with its attempt counted");
}
cmp_ok( sql(q{
SELECT max(d2.attempts) FROM deliveries d JOIN deliveries d2 USING (msg_id)
 WHERE d.worker = 0 AND (d2.epoch, d2.ord) > (d.epoch, d.ord)}), '>', 1,
	'a message claimed before a crash was delivered again with attempts > 1');
# and so did the claims the load held when it died
my $lost_claims = sql(q{
SELECT count(*) FROM deliveries d
 WHERE d.epoch IN (1, 2) AND d.worker > 0
   AND NOT EXISTS (SELECT FROM events e WHERE e.msg_id = d.msg_id AND e.receipt = d.receipt AND e.ok
                      AND e.kind IN ('ack', 'nack', 'release'))
   AND EXISTS (SELECT FROM deliveries d2 WHERE d2.msg_id = d.msg_id AND d2.epoch > d.epoch
                  AND d2.attempts = d.attempts + 1)});

# ---- the queue is empty
is(sql(q{SELECT depth, in_flight, delayed, blocked, dead_lettered FROM mq.metrics('cq')}),
	'0|0|0|0|0', 'mq.metrics: the queue ends empty, nothing dead-lettered');
is(sql('SELECT queue_rows()'), '0', 'the queue\'s segments and delayed table are empty');
is(sql(q{SELECT count(*) FROM mq.read('cq', 1000)}), '0', 'a read finds nothing');

# ---- the load did what it is for
cmp_ok($maxid, '>', 65536, "more than 65536 ids handed out ($maxid)");
my ($truncations, $relocated) = split /\|/, sql(q{
SELECT (SELECT sum(epoch) FROM mq.segment JOIN mq.queue USING (queue_id) WHERE queue_name = 'cq'),
       (SELECT coalesce(max(relocated), 0) FROM maint)});
# Relocation needs every segment in use at once, which depends on the
# machine's speed; claim_maintain.spec covers it deterministically.
note("relocations into the delayed table: up to $relocated messages seen at once");
my $stats = sql(q{
SELECT format('%s delayed sends, %s keyed sends, %s deliveries, %s with attempts > 1, %s acks, %s nacks, '
              '%s extends, %s releases, %s stale acks, %s drained at the end',
              (SELECT count(*) FROM sent WHERE delayed), (SELECT count(*) FROM sent WHERE k IS NOT NULL),
              (SELECT count(*) FROM deliveries), (SELECT count(*) FROM deliveries WHERE attempts > 1),
              (SELECT count(*) FROM acks), (SELECT count(*) FROM events WHERE kind = 'nack' AND ok),
              (SELECT count(*) FROM events WHERE kind = 'extend' AND ok),
              (SELECT count(*) FROM events WHERE kind = 'release' AND ok),
              (SELECT count(*) FROM events WHERE kind = 'ack' AND NOT ok),
              (SELECT count(*) FROM deliveries WHERE worker = -1))});
note("$nsent committed sends, max msg_id $maxid; $stats; "
	  . "$lost_claims claims of dead load sessions came back; $truncations truncations; "
	  . "crashes: 1 immediate shutdown, 1 backend SIGKILL");

$node->stop;
done_testing();
