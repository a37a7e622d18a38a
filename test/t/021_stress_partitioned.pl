# Stress test of a partitioned queue (8 partitions, session_timeout 2 s)
# read by one consumer group whose members come and go, with real
# concurrent clients (each producer and member is its own backend running a
# procedure with its own transactions).
#
# Producers (4, for ~12 s): transactions of 1 to 5 keyed sends (200 keys)
# with short pauses between the sends, so that transactions overlap and
# commit out of offset order; 15% of the transactions roll back (their
# payloads say so: rb = true).  Each committed send is recorded in `sent`
# in its own transaction.
#
# Members of group 'g' (mq.poll with wait 200 ms and 1 to 41 messages),
# started every second while the producers run, each for 1.5 to 5 s, ending
# in one of these ways:
#   leave  - mq.leave at the end;
#   vanish - the session ends without leaving: its lease must expire;
#   crash  - polls once more and ends without processing or committing that;
#   stall  - once sleeps 2.5 s (past the session timeout) between a poll and
#            its commit, so the commit is fenced; then goes on polling.
# The run starts with one member alone, which stalls that way after its
# first poll that returns messages: nobody takes its partitions while its
# lease is lapsed, its commit is fenced, and when it polls again it must get
# the messages it did not commit (it re-acquires the partitions from the
# committed offset).  Two more members join 3.5 s in.
# Each poll's messages are recorded (deliveries) in the poll's transaction;
# then per partition the processing records (processed, batches) and
# mq.commit(..., member) share one transaction, rolled back when the commit
# returns false (fenced).  When the producers are done, two 'drain' members
# run until every committed send has been processed, then leave.
#
# Afterwards:
#   - none lost: every committed send (key, offset) was processed, with the
#     payload sent at that offset; the group's committed offset of each
#     partition is the last offset processed there;
#   - no rolled-back send was ever delivered;
#   - a key always maps to one partition; an offset is one message;
#   - per partition, first processings happen in offset order;
#   - per partition, committed processing batches never overlap in time
#     (a batch is polled after the previous batch of the partition, by any
#     member, committed), so two members never processed one partition at once;
#   - the workload did what it claims: commits out of offset order (commit
#     timestamps), fenced commits, changes of partition owner.
# Duplicate deliveries (at-least-once after a crash or a lapsed lease) are
# allowed and reported, as are duplicate processings.  Nothing here asserts
# timings; the run is bounded (producers 12 s, drain at most 40 s).
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $seed = $ENV{MQ_STRESS_SEED} // (time() ^ $$);
srand($seed);
note("seed $seed (set MQ_STRESS_SEED to repeat the member schedule)");

my $nproducers = 4;
my $produce_s = 12;
my $nkeys = 200;
my $drain_limit_s = 40;

my $node = PostgreSQL::Test::Cluster->new('stress_partitioned');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'mq'\nmax_connections = 60\ntrack_commit_timestamp = on");
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION mq');
$node->safe_psql('postgres', <<'SQL');
SELECT mq.create_queue('pq', partitions => 8, session_timeout => '2 seconds');
CREATE SEQUENCE ord;
CREATE SEQUENCE uid;
CREATE TABLE ctl (stop boolean NOT NULL);
INSERT INTO ctl VALUES (false);
-- committed sends (inserted in the sending transaction)
CREATE TABLE sent (key text NOT NULL, "offset" bigint NOT NULL, uid bigint NOT NULL, producer int NOT NULL,
                   txn_size int NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                   PRIMARY KEY (key, "offset"));
-- every message handed out by mq.poll (inserted in the poll's transaction)
CREATE TABLE deliveries (member text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL, key text,
                         uid bigint, rb boolean, poll_ord bigint NOT NULL);
-- processing, committed together with mq.commit (rolled back when fenced)
CREATE TABLE batches (id bigserial PRIMARY KEY, member text NOT NULL, partition int NOT NULL,
                      first_offset bigint NOT NULL, last_offset bigint NOT NULL,
                      poll_ord bigint NOT NULL, commit_ord bigint NOT NULL);
CREATE TABLE processed (batch bigint NOT NULL, member text NOT NULL, partition int NOT NULL,
                        "offset" bigint NOT NULL, key text, uid bigint, ord bigint NOT NULL);
-- commits that returned false (the member had lost its lease)
CREATE TABLE fenced (member text NOT NULL, partition int NOT NULL, last_offset bigint NOT NULL, ord bigint NOT NULL);
-- member instances and how they ended
CREATE TABLE members (member text PRIMARY KEY, mode text NOT NULL, polls int, ended_at timestamptz);

-- A producer: transactions of 1 to 5 keyed sends with short pauses between
-- them (so transactions overlap and commit out of offset order); 15% roll back.
CREATE PROCEDURE producer(p_id int, p_keys int, p_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_n int;
    v_rb boolean;
    v_key text;
    v_uid bigint;
    v_off bigint;
BEGIN
    WHILE clock_timestamp() < p_until LOOP
        v_n := 1 + (random() * 4)::int;
        v_rb := random() < 0.15;
        FOR i IN 1 .. v_n LOOP
            v_key := 'key-' || (random() * (p_keys - 1))::int;
            v_uid := nextval('uid');
            v_off := mq.send('pq', jsonb_build_object('uid', v_uid, 'rb', v_rb, 'producer', p_id), v_key);
            INSERT INTO sent VALUES (v_key, v_off, v_uid, p_id, v_n);
            PERFORM pg_sleep(random() * 0.004);
        END LOOP;
        IF v_rb THEN
            ROLLBACK;
        ELSE
            COMMIT;
        END IF;
    END LOOP;
END
$$;

-- A consumer group member.  Modes: 'leave' runs for p_run then mq.leave;
-- 'vanish' runs for p_run then ends its session without leaving (its lease
-- must expire); 'crash' also polls once more and ends without committing
-- what it got; 'stall' once sleeps past the session timeout between a poll
-- and its commit (so the commit is fenced), 'stall-first' does so after its
-- first poll that returns messages; 'drain' runs until ctl.stop, then leaves.
CREATE PROCEDURE member(p_member text, p_mode text, p_run interval)
LANGUAGE plpgsql AS $$
DECLARE
    v_end timestamptz := clock_timestamp() + p_run;
    v_stall_at timestamptz := clock_timestamp() + CASE WHEN p_mode = 'stall' THEN p_run * random() ELSE '0' END;
    v_stalled boolean := false;
    v_poll_ord bigint;
    v_polls int := 0;
    v_n int;
    v_ok boolean;
    b record;
    v_batch bigint;
BEGIN
    CREATE TEMP TABLE polled (partition int, "offset" bigint, key text, payload jsonb);
    INSERT INTO members VALUES (p_member, p_mode, 0, NULL);
    COMMIT;
    LOOP
        IF p_mode = 'drain' THEN
            EXIT WHEN (SELECT stop FROM ctl);
        ELSE
            EXIT WHEN clock_timestamp() >= v_end;
        END IF;
        -- poll and record what was handed out, in the poll's transaction
        TRUNCATE polled;
        INSERT INTO polled SELECT p.partition, p."offset", p.key, p.payload
          FROM mq.poll('pq', 'g', p_member, 1 + (random() * 40)::int, '200 milliseconds') p;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        v_poll_ord := nextval('ord');
        INSERT INTO deliveries SELECT p_member, partition, "offset", key, (payload->>'uid')::bigint,
                                      (payload->>'rb')::boolean, v_poll_ord FROM polled;
        v_polls := v_polls + 1;
        COMMIT;
        CONTINUE WHEN v_n = 0;
        IF p_mode IN ('stall', 'stall-first') AND NOT v_stalled AND clock_timestamp() >= v_stall_at THEN
            v_stalled := true;
            PERFORM pg_sleep(2.5);
        END IF;
        -- process each partition's messages and commit its offset, in one transaction
        FOR b IN SELECT partition, min("offset") AS first, max("offset") AS last
                   FROM polled GROUP BY partition ORDER BY partition LOOP
            INSERT INTO batches (member, partition, first_offset, last_offset, poll_ord, commit_ord)
            VALUES (p_member, b.partition, b.first, b.last, v_poll_ord, 0) RETURNING id INTO v_batch;
            INSERT INTO processed
            SELECT v_batch, p_member, partition, "offset", key, (payload->>'uid')::bigint, nextval('ord')
              FROM (SELECT * FROM polled WHERE partition = b.partition ORDER BY "offset") s;
            v_ok := mq.commit('pq', 'g', b.partition, b.last, p_member);
            IF v_ok THEN
                UPDATE batches SET commit_ord = nextval('ord') WHERE id = v_batch;
                COMMIT;
            ELSE
                ROLLBACK;
                INSERT INTO fenced VALUES (p_member, b.partition, b.last, nextval('ord'));
                COMMIT;
            END IF;
        END LOOP;
    END LOOP;
    IF p_mode = 'crash' THEN
        -- one more poll, never processed nor committed
        INSERT INTO deliveries SELECT p_member, p.partition, p."offset", p.key, (p.payload->>'uid')::bigint,
                                      (p.payload->>'rb')::boolean, nextval('ord')
          FROM mq.poll('pq', 'g', p_member, 20, '0') p;
        COMMIT;
    ELSIF p_mode IN ('leave', 'drain') THEN
        PERFORM mq.leave('pq', 'g', p_member);
        COMMIT;
    END IF;
    UPDATE members SET polls = v_polls, ended_at = clock_timestamp() WHERE member = p_member;
    COMMIT;
END
$$;
SQL

my $q = sub { $node->safe_psql('postgres', shift) };
my $connstr = $node->connstr('postgres');
my @clients;

# Start one client: psql running one CALL.
sub start_client
{
	my ($name, $sql) = @_;
	my %c = (name => $name, out => '', err => '');
	$c{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $connstr, '-c', $sql ],
		'<', \undef, '>', \$c{out}, '2>', \$c{err},
		IPC::Run::timeout($produce_s + $drain_limit_s + 120));
	push @clients, \%c;
	return \%c;
}

my $t0 = time;
foreach my $p (1 .. $nproducers)
{
	start_client("producer $p",
		"CALL producer($p, $nkeys, clock_timestamp() + interval '$produce_s seconds')");
}

# Members come and go while the producers run: one alone that stalls after
# its first poll, two more 3.5 s in, then one more every second with a
# random end and run time.
my @modes = qw(leave vanish crash stall);
my $nmember = 0;
sub start_member
{
	my ($mode, $run_s) = @_;
	$nmember++;
	my $name = "m$nmember-$mode";
	start_client("member $name",
		sprintf("CALL member('%s', '%s', interval '%.1f seconds')", $name, $mode, $run_s));
}
start_member('stall-first', 6);
sleep(3.5);
start_member('leave', 4);
start_member('vanish', 3);
while (time - $t0 < $produce_s - 1.5)
{
	sleep(1);
	start_member($modes[ int(rand(@modes)) ], 1.5 + rand(3.5));
}

# Wait for the producers, then drain with two members until every committed
# send was processed (or the limit passed: then the checks below report).
$_->{h}->finish foreach grep { $_->{name} =~ /^producer/ } @clients;
my $produce_took = time - $t0;
start_client('member drain-1', "CALL member('drain-1', 'drain', '0')");
start_client('member drain-2', "CALL member('drain-2', 'drain', '0')");
my $all_processed = 0;
my $t1 = time;
while (time - $t1 < $drain_limit_s)
{
	$all_processed = $q->(q{
		SELECT NOT EXISTS (SELECT FROM sent s
		                    WHERE NOT EXISTS (SELECT FROM processed p WHERE p.key = s.key AND p."offset" = s."offset"))});
	last if $all_processed eq 't';
	sleep(0.2);
}
my $drain_took = time - $t1;
$q->('UPDATE ctl SET stop = true');
foreach my $c (@clients)
{
	$c->{h}->finish;
	is($c->{h}->result(0), 0, "$c->{name} exited cleanly") or diag("$c->{name}: $c->{err}");
}
my $total_took = time - $t0;
$q->('ANALYZE');

my $nsent = $q->('SELECT count(*) FROM sent');
cmp_ok($nsent, '>', 0, "producers committed $nsent sends");

# ---- none lost
my $lost = $q->(q{SELECT count(*) FROM sent s
                   WHERE NOT EXISTS (SELECT FROM processed p WHERE p.key = s.key AND p."offset" = s."offset")});
is($lost, '0', 'none lost: every committed send was processed');
if ($lost ne '0')
{
	diag('lost (partition, offset, key; delivered to): ' . $q->(q{
		SELECT string_agg(format('(%s, %s, %s; %s)', d.partition, s."offset", s.key,
		                         coalesce(d.members, 'never delivered')), ' ' ORDER BY d.partition, s."offset")
		  FROM (SELECT * FROM sent s WHERE NOT EXISTS (SELECT FROM processed p
		                                               WHERE p.key = s.key AND p."offset" = s."offset")
		         LIMIT 20) s
		  LEFT JOIN LATERAL (SELECT min(partition) AS partition, string_agg(DISTINCT member, ',') AS members
		                       FROM deliveries d WHERE d.key = s.key AND d."offset" = s."offset") d ON true}));
	diag('fenced commits: ' . $q->(q{SELECT string_agg(format('%s p%s through %s', member, partition, last_offset), ', ' ORDER BY ord) FROM fenced}));
}
is($q->(q{SELECT count(*) FROM processed p LEFT JOIN sent s USING (key, "offset") WHERE s.uid IS DISTINCT FROM p.uid}),
	'0', 'every processed message is the committed send at its key and offset');
is( $q->(q{
	SELECT count(*) FROM mq.consumer_groups c
	  LEFT JOIN (SELECT partition, max("offset") AS last FROM processed GROUP BY partition) p USING (partition)
	 WHERE c.queue_name = 'pq' AND c.consumer_group = 'g' AND c.committed_offset <> coalesce(p.last, 0)}),
	'0', "the group's committed offset of each partition is the last offset processed there");

# ---- rolled-back sends
is($q->('SELECT count(*) FROM deliveries WHERE rb'), '0', 'no rolled-back send was ever delivered');
is($q->(q{SELECT count(*) FROM deliveries d LEFT JOIN sent s USING (key, "offset") WHERE s.uid IS DISTINCT FROM d.uid}),
	'0', 'every delivery is a committed send at its key and offset');
my $rolled_back = $q->(q{SELECT last_value FROM uid}) - $nsent;
cmp_ok($rolled_back, '>', 0, "producers rolled back $rolled_back sends");

# ---- keys, partitions, offsets
is($q->('SELECT count(*) FROM (SELECT key FROM deliveries GROUP BY key HAVING count(DISTINCT partition) > 1) s'),
	'0', 'a key always goes to the same partition');
is( $q->(q{SELECT count(*) FROM (SELECT partition, "offset" FROM deliveries GROUP BY 1, 2
	                                HAVING count(DISTINCT uid) > 1) s}),
	'0', 'an offset of a partition is one message');

# ---- order and exclusivity per partition
my $disorder = $q->(q{
	WITH first AS (SELECT DISTINCT ON (partition, "offset") partition, "offset", ord
	                 FROM processed ORDER BY partition, "offset", ord)
	SELECT count(*) FROM (SELECT "offset", lag("offset") OVER (PARTITION BY partition ORDER BY ord) AS prev
	                        FROM first) s
	 WHERE "offset" <= prev});
is($disorder, '0', 'per partition, first processings are in offset order');
my $overlap = $q->(q{
	SELECT count(*) FROM (SELECT poll_ord, lag(commit_ord) OVER (PARTITION BY partition ORDER BY poll_ord) AS prev_commit
	                        FROM batches) s
	 WHERE poll_ord < prev_commit});
is($overlap, '0',
	'per partition, each committed batch was polled after the previous one was committed (never two members at once)');
if ($overlap ne '0')
{
	diag($q->(q{
		SELECT string_agg(format('p%s: %s polled %s..%s at %s before %s committed %s..%s at %s',
		                         partition, member, first_offset, last_offset, poll_ord,
		                         prev_member, prev_first, prev_last, prev_commit), E'\n')
		  FROM (SELECT * FROM (SELECT b.*, lag(member) OVER w AS prev_member, lag(first_offset) OVER w AS prev_first,
		                              lag(last_offset) OVER w AS prev_last, lag(commit_ord) OVER w AS prev_commit
		                         FROM batches b WINDOW w AS (PARTITION BY partition ORDER BY poll_ord)) s
		         WHERE poll_ord < prev_commit LIMIT 10) v}));
}

# ---- the workload did what it claims
my $out_of_order = $q->(q{
	WITH part AS (SELECT DISTINCT key, partition FROM deliveries),
	     c AS (SELECT p.partition, s."offset", pg_xact_commit_timestamp(s.xid::text::xid) AS committed_at
	             FROM sent s JOIN part p USING (key))
	SELECT count(*) FROM (SELECT committed_at, max(committed_at) OVER (PARTITION BY partition ORDER BY "offset"
	                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS latest_before
	                        FROM c) s
	 WHERE committed_at < latest_before});
cmp_ok($out_of_order, '>', 0,
	"$out_of_order sends committed after a send with a higher offset of their partition");
my $fenced = $q->('SELECT count(*) FROM fenced');
cmp_ok($fenced, '>', 0, "$fenced commits were fenced (the member had lost its lease) and rolled back");
my $owner_changes = $q->(q{
	SELECT count(*) FROM (SELECT member, lag(member) OVER (PARTITION BY partition ORDER BY poll_ord) AS prev
	                        FROM batches) s WHERE member <> prev});
cmp_ok($owner_changes, '>', 0, "$owner_changes changes of partition owner between committed batches");
is($q->(q{SELECT count(*) FROM members WHERE ended_at IS NULL}), '0', 'every member ran to its end');

# ---- report
my $dup_deliveries = $q->(q{SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM deliveries
                                                                 GROUP BY partition, "offset") s});
my $dup_processed = $q->(q{SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM processed
                                                                GROUP BY partition, "offset") s});
note(sprintf('%d sends committed, %d rolled back, by %d producers in %.1f s; %d members (%s); '
	  . 'drained in %.1f s, %.1f s in all',
	$nsent, $rolled_back, $nproducers, $produce_took, $nmember + 2,
	$q->(q{SELECT string_agg(format('%s %s', n, mode), ', ' ORDER BY mode)
	         FROM (SELECT mode, count(*) AS n FROM members GROUP BY mode) s}),
	$drain_took, $total_took));
note(sprintf('%d deliveries, %d duplicate deliveries (at-least-once after crashes and lapsed leases), '
	  . '%d duplicate processings, %d fenced commits, %d owner changes, %d out-of-order commits',
	$q->('SELECT count(*) FROM deliveries'), $dup_deliveries, $dup_processed, $fenced,
	$owner_changes, $out_of_order));

$node->stop;
done_testing();
