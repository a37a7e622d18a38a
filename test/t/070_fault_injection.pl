# Bounded fault injection with exact accounting (issue 11, "a suite that
# keeps it so").
#
# Part 1 and 2: two queues take load at once from sessions that are each a
# psql running one PL/pgSQL procedure with its own transactions, and record
# what they did in ledger tables in the same transaction as the mq call (a
# committed send has exactly one row; what rolls back leaves none):
#   - a partitioned queue 'pq' (4 partitions, session_timeout 3 s): 3
#     producers sending transactions of 1 to 5 keyed sends with short pauses
#     between them (so they commit out of offset order), 15% rolled back;
#     3 members of group 'g' (the same names m1..m3 in every phase, so a
#     member comes back under its name after each crash) that record every
#     poll's messages in the poll's transaction, then per partition record
#     the processing and mq.commit(..., member) in one transaction;
#   - a plain work queue 'wq' (visibility timeout 2 s): 2 producers (send,
#     send_batch, 15% rolled back), 3 consumers (ack, nack, a rolled-back
#     ack, or nothing: the claim lapses; one of them registered).
# The faults, one per phase, each while the load runs: an immediate shutdown
# and a start; a SIGKILL of a member's backend, of a work-queue consumer's
# backend and of mq's background worker (each makes the postmaster
# reinitialize: restart_after_crash is on; the worker comes back with a new
# pid).  After each, the group's committed offsets are the ones last
# recorded.  Then a last phase whose load ends by itself, with members and
# consumers running until everything committed was processed.  Checks:
#   - partitioned: 0 committed sends lost (every one processed, with the
#     payload sent at its partition and offset); 0 skipped offsets (no
#     commit ever covered an offset before it had been processed); per
#     partition, processing in offset order within each member's run; no
#     rolled-back send delivered; committed offsets never go backwards;
#     the final committed offsets are the last offsets processed;
#   - work queue: 0 committed sends lost, 0 acked twice, 0 delivered after
#     its ack, no rolled-back send delivered, the claims made just before
#     each crash came back, and the queue ends empty in mq.metrics and in
#     its tables;
#   - the load sessions failed only with errors a crash causes.
# Part 3, cancels: pg_cancel_backend of a read and of a poll waiting in a
# long poll, and of a send_batch of 50,000 messages (to a work queue and to
# a partitioned queue) while it inserts; statement_timeout ending a long
# poll (read and poll) while mq.drop_queue holds the queue's lock in another
# open transaction.  Each call ends with 57014, claims or sends nothing, and
# the queue (the same session, for the waits) stays usable.
# Finally the server log has no XX000, PANIC or crash by a signal other
# than the test's SIGKILLs.  Nothing here asserts timings: waits use
# poll_query_until and wait_for_log; the counts are printed as notes.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $final_s = 4;         # the last phase's producers, which end by themselves
my $safety_s = 150;      # the crash phases' load deadline: only a hang reaches it
my $timeout = $PostgreSQL::Test::Utils::timeout_default;

my $node = PostgreSQL::Test::Cluster->new('faults');
$node->init;
# Cluster.pm turns restart_after_crash off; the SIGKILL phases need it.
# Verbose errors put the SQLSTATE in the log (checked for XX000 at the end).
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
restart_after_crash = on
max_connections = 50
track_commit_timestamp = on
log_error_verbosity = verbose
});
$node->start;

sub sql
{
	return $node->safe_psql('postgres', shift);
}

sql(q{
CREATE EXTENSION mq;
SELECT mq.create_queue('pq', partitions => 4, session_timeout => '3 seconds');
-- never dead-letters: every message must end acked
SELECT mq.create_queue('wq', visibility_timeout => '2 seconds', max_attempts => 1000,
                       retry_delay => '100 milliseconds', retry_backoff => 1, retry_delay_max => '1 second');
CREATE SEQUENCE ord;
CREATE SEQUENCE uid;
CREATE SEQUENCE run;
CREATE TABLE ctl (stop boolean NOT NULL);
INSERT INTO ctl VALUES (false);

-- partitioned queue: committed sends (partition computed from the key, as
-- documented), every message polled, processing and commits (committed
-- together), fenced commits
CREATE TABLE sent (partition int NOT NULL, "offset" bigint NOT NULL, key text NOT NULL, uid bigint NOT NULL UNIQUE,
                   producer int NOT NULL, epoch int NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                   PRIMARY KEY (partition, "offset"));
CREATE TABLE deliveries (run bigint NOT NULL, member text NOT NULL, epoch int NOT NULL, partition int NOT NULL,
                         "offset" bigint NOT NULL, key text, uid bigint, rb boolean, ord bigint NOT NULL);
CREATE TABLE processed (run bigint NOT NULL, member text NOT NULL, epoch int NOT NULL, partition int NOT NULL,
                        "offset" bigint NOT NULL, uid bigint, ord bigint NOT NULL);
CREATE TABLE commits (run bigint NOT NULL, member text NOT NULL, epoch int NOT NULL, partition int NOT NULL,
                      "offset" bigint NOT NULL, ord bigint NOT NULL);
CREATE TABLE fenced (member text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL);
CREATE INDEX ON processed (partition, "offset");
CREATE INDEX ON commits (partition, "offset");

-- work queue: committed sends, committed claims (one row per message) and
-- acks, nacks (ok: what the call returned)
CREATE TABLE wsent (msg_id bigint PRIMARY KEY, epoch int NOT NULL);
CREATE TABLE wdeliveries (id bigserial PRIMARY KEY, msg_id bigint NOT NULL, attempts int NOT NULL,
                          receipt bigint NOT NULL, rb boolean, worker int NOT NULL, epoch int NOT NULL,
                          ord bigint NOT NULL);
CREATE TABLE wevents (kind text NOT NULL, msg_id bigint NOT NULL, receipt bigint, ok boolean NOT NULL,
                      worker int NOT NULL, epoch int NOT NULL, ord bigint NOT NULL);
CREATE VIEW wacks AS SELECT * FROM wevents WHERE kind = 'ack' AND ok;
CREATE INDEX ON wdeliveries (msg_id);
CREATE INDEX ON wevents (msg_id);

CREATE PROCEDURE producer(p_id int, p_epoch int, p_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
    v_rb boolean;
    v_key text;
    v_uid bigint;
    v_off bigint;
BEGIN
    WHILE clock_timestamp() < p_until AND NOT (SELECT stop FROM ctl) LOOP
        v_n := 1 + (random() * 4)::int;
        v_rb := random() < 0.15;
        FOR i IN 1 .. v_n LOOP
            v_key := 'key-' || (random() * 99)::int;
            v_uid := nextval('uid');
            v_off := mq.send('pq', jsonb_build_object('uid', v_uid, 'rb', v_rb), v_key);
            INSERT INTO sent (partition, "offset", key, uid, producer, epoch)
            VALUES ((hashtext(v_key)::bigint & 4294967295) % 4, v_off, v_key, v_uid, p_id, p_epoch);
            PERFORM pg_sleep(random() * 0.004);
        END LOOP;
        IF v_rb THEN
            ROLLBACK;
        ELSE
            COMMIT;
        END IF;
        PERFORM pg_sleep(0.003);
    END LOOP;
END
$$;

CREATE PROCEDURE member(p_member text, p_epoch int, p_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_run bigint := nextval('run');
    v_n int;
    b record;
BEGIN
    CREATE TEMP TABLE polled (partition int, "offset" bigint, key text, payload jsonb);
    COMMIT;
    WHILE clock_timestamp() < p_until AND NOT (SELECT stop FROM ctl) LOOP
        TRUNCATE polled;
        INSERT INTO polled SELECT p.partition, p."offset", p.key, p.payload
          FROM mq.poll('pq', 'g', p_member, 1 + (random() * 40)::int, '200 milliseconds') p;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        INSERT INTO deliveries
        SELECT v_run, p_member, p_epoch, partition, "offset", key, (payload->>'uid')::bigint,
               (payload->>'rb')::boolean, nextval('ord')
          FROM polled;
        COMMIT;
        CONTINUE WHEN v_n = 0;
        -- process each partition's messages and commit its offset, in one transaction
        FOR b IN SELECT partition, max("offset") AS last FROM polled GROUP BY partition ORDER BY partition LOOP
            INSERT INTO processed
            SELECT v_run, p_member, p_epoch, partition, "offset", (payload->>'uid')::bigint, nextval('ord')
              FROM (SELECT * FROM polled WHERE partition = b.partition ORDER BY "offset") s;
            IF mq.commit('pq', 'g', b.partition, b.last, p_member) THEN
                -- after the commit, which holds the partition's lease row:
                -- ord follows the order of the partition's commits
                INSERT INTO commits VALUES (v_run, p_member, p_epoch, b.partition, b.last, nextval('ord'));
                COMMIT;
            ELSE
                ROLLBACK;
                INSERT INTO fenced VALUES (p_member, b.partition, b.last);
                COMMIT;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

CREATE PROCEDURE wproducer(p_id int, p_epoch int, p_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    r float8;
    v_id bigint;
BEGIN
    WHILE clock_timestamp() < p_until AND NOT (SELECT stop FROM ctl) LOOP
        r := random();
        IF r < 0.60 THEN
            FOR i IN 1 .. 1 + (random() * 3)::int LOOP
                v_id := mq.send('wq', '{"rb": false}');
                INSERT INTO wsent VALUES (v_id, p_epoch);
            END LOOP;
            COMMIT;
        ELSIF r < 0.85 THEN
            INSERT INTO wsent
            SELECT b, p_epoch FROM mq.send_batch('wq', array_fill('{"rb": false}'::jsonb, ARRAY[2 + (random() * 20)::int])) b;
            COMMIT;
        ELSE
            v_id := mq.send('wq', '{"rb": true}');
            INSERT INTO wsent VALUES (v_id, p_epoch);
            INSERT INTO wsent
            SELECT b, p_epoch FROM mq.send_batch('wq', array_fill('{"rb": true}'::jsonb, ARRAY[1 + (random() * 10)::int])) b;
            ROLLBACK;
        END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;
END
$$;

CREATE PROCEDURE wconsumer(p_worker int, p_epoch int, p_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_did bigint;
    d wdeliveries;
    r float8;
    v_ok boolean;
    v_commit boolean;
BEGIN
    IF p_worker = 1 THEN
        PERFORM mq.register_consumer('wc-' || p_epoch, '10 seconds');
        COMMIT;
    END IF;
    WHILE clock_timestamp() < p_until AND NOT (SELECT stop FROM ctl) LOOP
        WITH m AS (SELECT * FROM mq.read('wq', 1 + (random() * 9)::int, '2 seconds', wait => '200 milliseconds')),
             ins AS (INSERT INTO wdeliveries (msg_id, attempts, receipt, rb, worker, epoch, ord)
                     SELECT m.msg_id, m.attempts, m.receipt, (m.payload->>'rb')::boolean, p_worker, p_epoch,
                            nextval('ord')
                       FROM m
                     RETURNING id)
        SELECT array_agg(id ORDER BY id) INTO v_ids FROM ins;
        IF v_ids IS NOT NULL AND random() < 0.05 THEN
            ROLLBACK;           -- the claims are undone, and so are their records
            CONTINUE;
        END IF;
        COMMIT;
        CONTINUE WHEN v_ids IS NULL;
        FOREACH v_did IN ARRAY v_ids LOOP
            SELECT * INTO d FROM wdeliveries WHERE id = v_did;
            r := random();
            v_commit := true;
            IF r < 0.80 THEN
                v_ok := mq.ack('wq', d.msg_id, d.receipt);
                INSERT INTO wevents VALUES ('ack', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
            ELSIF r < 0.90 THEN
                v_ok := mq.nack('wq', d.msg_id, d.receipt, random() * interval '200 milliseconds');
                INSERT INTO wevents VALUES ('nack', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
            ELSIF r < 0.95 THEN
                v_ok := mq.ack('wq', d.msg_id, d.receipt);
                INSERT INTO wevents VALUES ('ack', d.msg_id, d.receipt, v_ok, p_worker, p_epoch, nextval('ord'));
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

-- Rows in a work queue's tables: its segments and its delayed table.
CREATE FUNCTION queue_rows(p_queue text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint := (SELECT queue_id FROM mq.queue WHERE queue_name = p_queue);
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

# Start the load sessions of an epoch, each a psql running one CALL.
sub start_load
{
	my ($epoch, $seconds) = @_;
	my $until = "clock_timestamp() + interval '$seconds seconds'";
	my @calls;
	push @calls, [ "producer_$_", "CALL producer($_, $epoch, $until)" ] foreach (1 .. 3);
	push @calls, [ "member_m$_", "CALL member('m$_', $epoch, clock_timestamp() + interval '$safety_s seconds')" ]
	  foreach (1 .. 3);
	push @calls, [ "wproducer_$_", "CALL wproducer($_, $epoch, $until)" ] foreach (1 .. 2);
	push @calls,
	  [ "wconsumer_$_", "CALL wconsumer($_, $epoch, clock_timestamp() + interval '$safety_s seconds')" ]
	  foreach (1 .. 3);
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

# Wait for the load sessions to end.  With $crashed they may have died of
# the crash, and only the errors a crash causes are accepted; otherwise each
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

# Wait until the load of an epoch has done some of everything.
sub wait_for_progress
{
	my ($epoch, $what) = @_;
	ok( $node->poll_query_until(
			'postgres', qq{
SELECT (SELECT count(*) FROM sent WHERE epoch = $epoch) >= 150
   AND (SELECT count(DISTINCT member) FROM commits WHERE epoch = $epoch) >= 2
   AND (SELECT count(*) FROM processed WHERE epoch = $epoch) >= 100
   AND (SELECT count(*) FROM wacks WHERE epoch = $epoch) >= 150
   AND (SELECT count(*) FROM wevents WHERE epoch = $epoch AND kind = 'nack' AND ok) >= 5}),
		"$what: the load is running (sends, polls, commits by two members, acks, nacks)");
}

# Just before a crash: claim a few work-queue messages for 2 seconds,
# committed and recorded (worker 0), and never ack them.
sub claim_before_crash
{
	my ($epoch) = @_;
	ok( $node->poll_query_until(
			'postgres', qq{
WITH m AS (SELECT * FROM mq.read('wq', 3, '2 seconds')),
     ins AS (INSERT INTO wdeliveries (msg_id, attempts, receipt, rb, worker, epoch, ord)
             SELECT m.msg_id, m.attempts, m.receipt, (m.payload->>'rb')::boolean, 0, $epoch, nextval('ord')
               FROM m
             RETURNING 1)
SELECT count(*) > 0 FROM ins}),
		"epoch $epoch: claimed work-queue messages that the crash leaves unacked");
}

# After a restart: the group's committed offsets are the last ones the
# members recorded (in the same transactions as their commits).
sub check_committed_offsets
{
	my ($what) = @_;
	is( sql(q{
SELECT count(*) FROM mq.consumer_groups c
  LEFT JOIN (SELECT DISTINCT ON (partition) partition, "offset" FROM commits ORDER BY partition, ord DESC) l
    USING (partition)
 WHERE c.queue_name = 'pq' AND c.consumer_group = 'g' AND c.committed_offset <> coalesce(l."offset", 0)}),
		'0', "$what: the group's committed offsets are the ones last committed");
}

# SIGKILL one server process and wait for the postmaster to reinitialize.
sub kill_and_wait
{
	my ($pid, $what) = @_;
	like($pid, qr/^\d+$/, "$what: its pid");
	my $log_offset = -s $node->logfile;
	kill 'KILL', $pid or die "could not kill $pid: $!";
	$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
	ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
		"$what: the server accepts connections after reinitializing");
}

my $epoch = 0;
my $crashes = 0;
my @killed;    # pids the test killed: their deaths are expected in the log

# Phase 1: immediate shutdown under load.
$epoch++;
my $load = start_load($epoch, $safety_s);
wait_for_progress($epoch, 'immediate shutdown');
claim_before_crash($epoch);
$node->stop('immediate');
$crashes++;
finish_load($load, 1, 'immediate shutdown');
$node->start;
check_committed_offsets('after the immediate shutdown');

# Phases 2 and 3: SIGKILL of a member's backend, of a consumer's backend.
foreach my $victim ('member_m1', 'wconsumer_2')
{
	$epoch++;
	$load = start_load($epoch, $safety_s);
	wait_for_progress($epoch, "SIGKILL of $victim");
	claim_before_crash($epoch);
	my $pid = sql("SELECT pid FROM pg_stat_activity WHERE application_name = '$victim'");
	push @killed, $pid;
	kill_and_wait($pid, "SIGKILL of $victim");
	$crashes++;
	finish_load($load, 1, "SIGKILL of $victim");
	check_committed_offsets("after the SIGKILL of $victim");
}

# Phase 4: SIGKILL of mq's background worker (the maintenance launcher).  Like any process attached to
# shared memory that dies of a signal, it makes the postmaster reinitialize;
# the worker is started again with the rest.
$epoch++;
$load = start_load($epoch, $safety_s);
wait_for_progress($epoch, 'SIGKILL of the background worker');
claim_before_crash($epoch);
my $worker_pid;
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'mq maintenance launcher'}),
	'the background worker runs');
$worker_pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'mq maintenance launcher'});
push @killed, $worker_pid;
kill_and_wait($worker_pid, 'SIGKILL of the background worker');
$crashes++;
finish_load($load, 1, 'SIGKILL of the background worker');
ok( $node->poll_query_until('postgres',
		qq{SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'mq maintenance launcher' AND pid <> $worker_pid}),
	'the background worker is started again after the crash restart');
check_committed_offsets('after the SIGKILL of the background worker');

# Phase 5: producers run for a while and end by themselves; members and
# consumers go on until everything committed was processed and acked
# (claims left by dead sessions lapse meanwhile).
$epoch++;
$load = start_load($epoch, $final_s);
ok( $node->poll_query_until(
		'postgres', q{
SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name ~ '^w?producer_') = 0
   AND NOT EXISTS (SELECT FROM sent s WHERE NOT EXISTS (SELECT FROM processed p
                                                         WHERE p.partition = s.partition AND p."offset" = s."offset"))
   AND NOT EXISTS (SELECT FROM wsent s WHERE NOT EXISTS (SELECT FROM wacks a WHERE a.msg_id = s.msg_id))}),
	'drain: every committed send to pq processed, every one to wq acked');
sql('UPDATE ctl SET stop = true');
finish_load($load, 0, 'the last phase');

# ---- checks: the partitioned queue
sql('ANALYZE');
my $nsent = sql('SELECT count(*) FROM sent');
my $rolled_back = sql('SELECT last_value FROM uid') - $nsent;
cmp_ok($nsent, '>', 0, "pq: $nsent sends committed");
cmp_ok($rolled_back, '>', 0, "pq: $rolled_back sends rolled back or cut by a crash");

my $lost = sql(q{SELECT count(*) FROM sent s
                  WHERE NOT EXISTS (SELECT FROM processed p WHERE p.partition = s.partition AND p."offset" = s."offset")});
is($lost, '0', 'pq: 0 committed sends lost: every one was processed');
is( sql(q{SELECT count(*) FROM processed p LEFT JOIN sent s USING (partition, "offset")
           WHERE s.uid IS DISTINCT FROM p.uid}),
	'0', 'pq: every processing is of the committed send at its partition and offset');
is( sql(q{SELECT count(*) FROM deliveries d LEFT JOIN sent s USING (partition, "offset")
           WHERE s.uid IS DISTINCT FROM d.uid OR s.key IS DISTINCT FROM d.key}),
	'0', 'pq: every delivery is of the committed send at its partition and offset, with its key');
is(sql('SELECT count(*) FROM deliveries WHERE rb IS DISTINCT FROM false'),
	'0', 'pq: no rolled-back send was ever delivered');

# skipped: a commit covered an offset before anyone had processed it (the
# first commit at or past an offset, in commit order, vs its first processing)
my $skipped = sql(q{
SELECT count(*) FROM sent s
  JOIN LATERAL (SELECT c.ord FROM commits c WHERE c.partition = s.partition AND c."offset" >= s."offset"
                 ORDER BY c."offset", c.ord LIMIT 1) c ON true
  LEFT JOIN LATERAL (SELECT min(p.ord) AS ord FROM processed p
                      WHERE p.partition = s.partition AND p."offset" = s."offset") p ON true
 WHERE p.ord IS NULL OR p.ord > c.ord});
is($skipped, '0', 'pq: 0 skipped offsets: no commit covered an offset not yet processed');

my $disorder = sql(q{
SELECT count(*) FROM (SELECT "offset", lag("offset") OVER (PARTITION BY run, partition ORDER BY ord) AS prev
                        FROM processed) s
 WHERE "offset" <= prev});
is($disorder, '0', "pq: per partition, each member's run processed in offset order");
my $backwards = sql(q{
SELECT count(*) FROM (SELECT "offset", lag("offset") OVER (PARTITION BY partition ORDER BY ord) AS prev
                        FROM commits) s
 WHERE "offset" < prev});
is($backwards, '0', 'pq: committed offsets never went backwards');
is( sql(q{
SELECT count(*) FROM mq.consumer_groups c
  LEFT JOIN (SELECT partition, max("offset") AS last FROM processed GROUP BY partition) p USING (partition)
 WHERE c.queue_name = 'pq' AND c.consumer_group = 'g' AND c.committed_offset <> coalesce(p.last, 0)}),
	'0', "pq: the group's committed offset of each partition is the last offset processed there");
my $out_of_order = sql(q{
SELECT count(*) FROM (SELECT pg_xact_commit_timestamp(xid::text::xid) AS committed_at,
                             max(pg_xact_commit_timestamp(xid::text::xid))
                               OVER (PARTITION BY partition ORDER BY "offset"
                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS latest_before
                        FROM sent) s
 WHERE committed_at < latest_before});
cmp_ok($out_of_order, '>', 0,
	"pq: $out_of_order sends committed after a send with a higher offset of their partition");

# ---- checks: the work queue
my $nwsent = sql('SELECT count(*) FROM wsent');
cmp_ok($nwsent, '>', 0, "wq: $nwsent sends committed");
my $wlost = sql(q{SELECT count(*) FROM (SELECT msg_id FROM wsent EXCEPT SELECT msg_id FROM wacks) s});
is($wlost, '0', 'wq: 0 committed sends lost: every one was acked');
is(sql(q{SELECT count(*) FROM (SELECT msg_id FROM wacks EXCEPT SELECT msg_id FROM wsent) s}),
	'0', 'wq: nothing acked that was not a committed send');
my $wtwice = sql(q{SELECT count(*) FROM (SELECT msg_id FROM wacks GROUP BY msg_id HAVING count(*) > 1) s});
is($wtwice, '0', 'wq: no message acked twice');
my $wafter = sql(q{SELECT count(*) FROM wdeliveries d JOIN wacks a USING (msg_id) WHERE d.ord > a.ord});
is($wafter, '0', 'wq: 0 acked messages delivered again');
is(sql('SELECT count(*) FROM wdeliveries WHERE rb IS DISTINCT FROM false'),
	'0', 'wq: no rolled-back send was ever delivered');
is(sql('SELECT count(*) FROM wdeliveries d WHERE NOT EXISTS (SELECT FROM wsent s WHERE s.msg_id = d.msg_id)'),
	'0', 'wq: every delivery is of a committed send');
my ($claimed, $back) = split /\|/, sql(q{
SELECT count(*), count(*) FILTER (WHERE EXISTS (
           SELECT FROM wdeliveries d2 WHERE d2.msg_id = d.msg_id AND d2.attempts > d.attempts AND d2.ord > d.ord))
  FROM wdeliveries d WHERE d.worker = 0});
cmp_ok($claimed, '>', 0, "wq: $claimed messages claimed just before the crashes");
is($back, $claimed, 'wq: each came back after its crash, with its attempt counted');
is(sql(q{SELECT depth, in_flight, delayed, blocked, dead_lettered FROM mq.metrics('wq')}),
	'0|0|0|0|0', 'wq: mq.metrics: the queue ends empty, nothing dead-lettered');
is(sql(q{SELECT queue_rows('wq')}), '0', "wq: the queue's segments and delayed table are empty");
is(sql(q{SELECT count(*) FROM mq.read('wq', 1000)}), '0', 'wq: a read finds nothing');

my $ndeliveries = sql('SELECT count(*) FROM deliveries');
my $dup_deliveries = sql(q{SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM deliveries
                                                               GROUP BY partition, "offset") s});
my $dup_processed = sql(q{SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM processed
                                                              GROUP BY partition, "offset") s});
my $nwdeliveries = sql('SELECT count(*) FROM wdeliveries');
my $wredelivered = sql(q{SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM wdeliveries
                                                             GROUP BY msg_id) s});

# ---- part 3: cancels

sql(q{
SELECT mq.create_queue('cw', visibility_timeout => '1 hour');
SELECT mq.create_queue('cp', partitions => 2);
});
my $cancels = 0;

# Start psql on a script (a file: IPC::Run feeds stdin only while pumped),
# errors with their SQLSTATE.
my $scripts = PostgreSQL::Test::Utils::tempdir;
my $nscript = 0;
sub start_script
{
	my ($script) = @_;
	my $file = "$scripts/" . ++$nscript . '.sql';
	append_to_file($file, $script);
	my %h = (out => '', err => '');
	$h{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'VERBOSITY=verbose', '-d', $node->connstr('postgres'), '-f', $file ],
		'<', \undef, '>', \$h{out}, '2>', \$h{err}, IPC::Run::timeout($timeout));
	return \%h;
}

# Whether the handle's psql ended (false: it had to be killed).
sub ended
{
	my ($h) = @_;
	my $ok = eval { $h->{h}->finish; 1; };
	$h->{h}->kill_kill unless $ok;
	return $ok;
}

# Wait until the statement tagged /* $tag */ waits in a long poll.
sub wait_waiting
{
	my ($tag) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension'"
		  . " AND query LIKE '/* $tag */%'");
}

sub cancel_tag
{
	my ($tag) = @_;
	is( sql("SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
			  . " WHERE query LIKE '/* $tag */%' AND pid <> pg_backend_pid()"),
		't', "$tag: cancel sent");
	$cancels++;
}

# A read waiting in a long poll, cancelled; then the same session waits
# again and gets the message sent after the cancel, at its first attempt.
my $h = start_script(q{
/* cread1 */ SELECT count(*) FROM mq.read('cw', 5, wait => '5 minutes');
/* cread2 */ SELECT payload->>'n', attempts FROM mq.read('cw', 5, wait => '5 minutes');
});
ok(wait_waiting('cread1'), 'a read waits in a long poll');
cancel_tag('cread1');
ok(wait_waiting('cread2'), 'the same session waits again after the cancel');
is(sql(q{SELECT depth, in_flight FROM mq.metrics('cw')}), '0|0', 'the cancelled read claimed nothing');
sql(q{SELECT mq.send('cw', '{"n": 1}')});
ok(ended($h), 'the read session ends');
like($h->{err}, qr/ERROR:  57014: canceling statement due to user request/,
	'the cancelled read failed with 57014');
is($h->{out}, "1|1\n", 'the next read of the session got the message sent after the cancel, first attempt');
sql(q{SELECT mq.purge('cw')});

# A poll waiting in a long poll, cancelled; then the same session polls
# again and gets the messages sent after the cancel, from the first offset.
$h = start_script(q{
/* cpoll1 */ SELECT count(*) FROM mq.poll('cp', 'g', 'm1', 10, wait => '5 minutes');
/* cpoll2 */ SELECT partition, "offset", payload->>'n' FROM mq.poll('cp', 'g', 'm1', 10, wait => '5 minutes') ORDER BY 1, 2;
});
ok(wait_waiting('cpoll1'), 'a poll waits in a long poll');
cancel_tag('cpoll1');
ok(wait_waiting('cpoll2'), 'the same session polls again after the cancel');
sql(q{SELECT mq.send_batch('cp', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[], ARRAY['a', 'a', 'a'])});
ok(ended($h), 'the poll session ends');
like($h->{err}, qr/ERROR:  57014: canceling statement due to user request/,
	'the cancelled poll failed with 57014');
my $pa = sql(q{SELECT (hashtext('a')::bigint & 4294967295) % 2});
is($h->{out}, "$pa|1|1\n$pa|2|2\n$pa|3|3\n", 'the next poll of the session got the messages sent after the cancel');
is(sql(qq{SELECT mq.commit('cp', 'g', $pa, 3)}), 't', 'the group commits them');

# A send_batch of 50,000 messages cancelled while it inserts into the
# queue's tables (seen in pg_locks; the query that sees it sends the
# cancel).  A batch that completes first ($done: its rows are there) is
# purged and the next try goes again.  The cancelled batch sends nothing,
# and the queue takes sends and reads (polls) after it: for a partitioned
# queue, the offsets the batch held no longer hold back the group.
sub cancel_batch
{
	my ($queue, $tables, $done, $check, $what) = @_;
	my $cancelled = 0;
	for my $try (1 .. 5)
	{
		my $tag = "cbatch_$queue$try";
		my $b = start_script(qq{
/* $tag */ SELECT count(*) FROM mq.send_batch('$queue', array_fill('{"n": 0}'::jsonb, ARRAY[50000]));
});
		ok( $node->poll_query_until('postgres', qq{
SELECT pg_cancel_backend(a.pid) FROM pg_stat_activity a
 WHERE a.query LIKE '/* $tag */%' AND a.pid <> pg_backend_pid()
   AND EXISTS (SELECT FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                WHERE l.pid = a.pid AND l.granted AND l.mode = 'RowExclusiveLock'
                  AND c.relnamespace = 'mq'::regnamespace AND c.relname ~ '$tables')
 UNION ALL SELECT true WHERE $done
 LIMIT 1}), "$what: the send_batch was seen inserting, or done (try $try)");
		ok(ended($b), "$what: the send_batch session ends (try $try)");
		if ($b->{err} =~ /ERROR:  57014: canceling statement due to user request/)
		{
			$cancels++;
			$cancelled = 1;
			last;
		}
		# the batch ended before the cancel reached it
		is($b->{err}, '', "$what: an uncancelled batch succeeded (try $try)");
		note("$what: try $try ended before its cancel: " . ($b->{out} =~ s/\n//r));
		sql("SELECT mq.purge('$queue')");
	}
	ok($cancelled, "$what: the send_batch was cancelled while it inserted");
	is(sql($check), '0', "$what: the cancelled send_batch sent nothing");
}

my $cw_id = sql(q{SELECT queue_id FROM mq.queue WHERE queue_name = 'cw'});
my $cp_id = sql(q{SELECT queue_id FROM mq.queue WHERE queue_name = 'cp'});
cancel_batch('cw', "^q_${cw_id}_[0-3d]\$", q{queue_rows('cw') > 0}, q{SELECT queue_rows('cw')},
	'work queue');
sql(q{SELECT mq.send('cw', '{"n": 2}')});
is(sql(q{SELECT string_agg(payload->>'n', ',') FROM mq.read('cw', 10)}), '2',
	'work queue: after the cancelled batch, a send is read, and nothing else');
# that read's session ended, which released its claim: the queue starts empty
sql(q{SELECT mq.purge('cw')});
cancel_batch('cp', "^p_${cp_id}(_[0-2])?\$",
	"EXISTS (SELECT FROM mq.p_$cp_id WHERE payload->>'n' = '0')",
	q{SELECT count(*) FROM mq.poll('cp', 'audit', 'a1', 10000) WHERE payload->>'n' = '0'},
	'partitioned queue');
sql(q{SELECT mq.send('cp', '{"n": 4}', key => 'a')});
my ($off4, $n4) = split /\|/, sql(q{SELECT string_agg("offset"::text, ','), string_agg(payload->>'n', ',')
                                      FROM mq.poll('cp', 'g', 'm1', 10, wait => '1 minute')});
is($n4, '4', 'partitioned queue: after the cancelled batch, the group polls the next send, and nothing else');
is(sql(qq{SELECT mq.commit('cp', 'g', $pa, $off4)}), 't', 'partitioned queue: and commits it');

# statement_timeout ends a long poll (a read, a poll) while drop_queue holds
# the queue's lock in another open transaction; the drop then rolls back
# and the queue is usable.
foreach my $c (
	[ 'read', 'cw', q{SELECT count(*) FROM mq.read('cw', 1, wait => '5 minutes')} ],
	[ 'poll', 'cp', q{SELECT count(*) FROM mq.poll('cp', 'g', 'm1', 10, wait => '5 minutes')} ])
{
	my ($what, $queue, $call) = @$c;
	my $blocker = $node->background_psql('postgres');
	$blocker->query_safe("BEGIN; SELECT mq.drop_queue('$queue')");
	# the lock wait is logged after deadlock_timeout, well before the
	# statement_timeout: it shows what the call waited for
	my $log_offset = -s $node->logfile;
	my $w = start_script("SET deadlock_timeout = '100ms'; SET log_lock_waits = on;"
		  . " SET statement_timeout = '3s';\n/* timeout_$what */ $call;\n");
	ok(ended($w), "$what behind an open drop_queue: statement_timeout ends the call");
	like($w->{err}, qr/ERROR:  57014: canceling statement due to statement timeout/,
		"$what behind an open drop_queue: 57014");
	like(substr(slurp_file($node->logfile), $log_offset), qr/still waiting for \w+ on relation/,
		"$what behind an open drop_queue: it waited for the drop's lock");
	$cancels++;
	$blocker->query_safe('ROLLBACK');
	$blocker->quit;
}
sql(q{SELECT mq.send('cw', '{"n": 5}')});
is(sql(q{SELECT string_agg(payload->>'n', ',') FROM mq.read('cw', 10)}), '5',
	'work queue: usable after the drop rolled back');
sql(q{SELECT mq.send('cp', '{"n": 6}', key => 'a')});
is(sql(q{SELECT string_agg(payload->>'n', ',') FROM mq.poll('cp', 'g', 'm1', 10, wait => '1 minute')}),
	'6', 'partitioned queue: usable after the drop rolled back');

# ---- the server log
my $log = slurp_file($node->logfile);
my @bad = grep { /ERROR:  XX000|PANIC|TRAP:|terminated by signal/ && !/terminated by signal 9: Killed/ }
  split /\n/, $log;
is(scalar(@bad), 0, 'the server log has no XX000, PANIC, assertion failure or crash by a signal')
  or diag(join("\n", @bad[ 0 .. ($#bad < 19 ? $#bad : 19) ]));
my $kills = () = $log =~ /terminated by signal 9: Killed/g;
is($kills, scalar(@killed), 'the processes killed with SIGKILL are the test\'s');

note(sprintf(
	'pq: %d sends committed, %d rolled back or cut by a crash, %d deliveries (%d duplicates), '
	  . '%d processings (%d duplicates), %d commits, %d fenced, %d out-of-order commits; '
	  . 'lost %d, skipped %d, order violations %d, committed offsets backwards %d',
	$nsent, $rolled_back, $ndeliveries, $dup_deliveries,
	sql('SELECT count(*) FROM processed'), $dup_processed,
	sql('SELECT count(*) FROM commits'), sql('SELECT count(*) FROM fenced'), $out_of_order,
	$lost, $skipped, $disorder, $backwards));
note(sprintf(
	'wq: %d sends committed, %d deliveries (%d redeliveries), %d acks, %d nacks; '
	  . 'lost %d, acked twice %d, delivered after ack %d',
	$nwsent, $nwdeliveries, $wredelivered, sql('SELECT count(*) FROM wacks'),
	sql(q{SELECT count(*) FROM wevents WHERE kind = 'nack' AND ok}), $wlost, $wtwice, $wafter));
note("faults: $crashes crashes (1 immediate shutdown, 3 SIGKILLs: a member, a consumer, "
	  . "the background worker), $cancels cancels (pg_cancel_backend and statement_timeout)");

$node->stop;
done_testing();
