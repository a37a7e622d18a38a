# mq on a Citus cluster (docs/scale-out.md): a coordinator and two workers
# on this machine, citus and mq preloaded on each, clients only on the
# coordinator.  Skips when citus.so is not installed for the PostgreSQL
# under test (shared/tools/build-citus.sh builds it).
#
#  1. Two queues made on the coordinator before distribution, with
#     messages; mq.citus_distribute() distributes the log by partition
#     and the work queue by queue, gives mq_owner a login
#     whose password only pg_dist_authinfo holds (pg_hba here asks mq_owner
#     for it), and the log's offsets continue where they were.
#  2. A partitioned queue of 4 partitions made after it: distributed by
#     partition over both workers, with the offset trigger on the shards.
#     A transaction sending to partitions on two workers is refused at
#     PREPARE and leaves nothing.  Out-of-order commits: an open send on a
#     worker holds its partition's visible end, a later committed send
#     stays unread until the first commits, then both are read in offset
#     order; a commit past the end, and a poll in REPEATABLE READ, are
#     refused.
#  3. Producers through the coordinator (procedures in their own
#     sessions: transactions of 1 to 3 keyed sends, to the partitions of
#     one worker, with pauses so that they commit out of offset order; 15%
#     roll back) and a consumer group: one member polls all along, one
#     dies (its session ends without leaving: its leases lapse after the
#     2 s session timeout), one joins later, one drains.  Then: every
#     committed send was processed with its payload (none lost), no
#     rolled-back send was delivered, first processings of a partition come
#     in offset order, a key maps to one partition, the dead member's
#     partitions were processed by others after it died, and the workload
#     did commit out of offset order.
#  4. A worker crashes (immediate stop) with a send open on it: sends to
#     its partitions fail while it is down, the other worker's go on; after
#     its restart every committed message is there, the open send left
#     nothing, offsets continue above the stored ones with no duplicate,
#     and the group reads exactly the new messages.
#  4b. A shard move of one partition to the other worker and back: the
#     sequence does not move, the first send on the new node raises the
#     node's sequence above the partition's rows, offsets continue above
#     every stored one, and the group reads exactly the new messages.
#  6. send_batch, metrics, seek by time and purge on a distributed log;
#     a partition emptied by purge and moved continues above its
#     high-water mark once mq.citus_distribute() runs again.
#  5. Work queues distributed by queue: each one's six tables are
#     colocated single-shard tables on one worker, queues land on both
#     workers, msg_ids stay on the coordinator; the claim is a one-task
#     router plan, kept generic.  3 producers through the coordinator
#     (transactions of 1 to 3 sends and batches, 15% rolled back) and 3
#     consumers (batches, 10% nacked): every committed send acked exactly
#     once, no rolled-back send delivered, no delivery held twice, every
#     nacked message delivered again.  Visibility timeout lapse, backoff,
#     dead-lettering (by nack and by lapse) into a DLQ, delays, extend,
#     archive, the release of a dead registered consumer's claim, purge,
#     REPEATABLE READ refused, drop_queue.  A keyed queue distributed the
#     same way keeps per-key order with 3 consumers that nack.
#  7. A worker fails: its work queue refuses sends, the other worker's
#     queue carries on; after the restart nothing committed is lost.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $pkglibdir = `pg_config --pkglibdir`;
chomp $pkglibdir;
if (!-f "$pkglibdir/citus.so")
{
	plan skip_all => "citus is not installed in $pkglibdir (shared/tools/build-citus.sh builds it)";
}

my $t0 = time;
my %node;
for my $name ('coord', 'worker1', 'worker2')
{
	my $n = PostgreSQL::Test::Cluster->new($name);
	$n->init;
	# Citus opens connections between the nodes; mq's worker needs one
	$n->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
shared_preload_libraries = 'citus,mq'
max_connections = 100
max_prepared_transactions = 50
citus.node_conninfo = 'sslmode=disable'
mq.maintenance_interval = '200ms'
# each sql() below is a session of its own: a claim must outlive the
# session that made it, for the next one to nack or ack it (registered
# consumers, whose release this test checks, are released regardless)
mq.release_on_session_end = off
track_commit_timestamp = on
password_encryption = 'scram-sha-256'
});
	# mq_owner may log in only over TCP from the nodes, with its password
	open my $hba, '>', $n->data_dir . '/pg_hba.conf' or die $!;
	print $hba <<'HBA';
local all mq_owner reject
host all mq_owner 127.0.0.1/32 scram-sha-256
local all all trust
host all all 127.0.0.1/32 trust
HBA
	close $hba;
	$n->start;
	$n->safe_psql('postgres', 'CREATE EXTENSION citus');
	$node{$name} = $n;
}
my $c = $node{coord};
my ($w1, $w2) = ($node{worker1}, $node{worker2});
my %worker_of_port = ($w1->port => 'worker1', $w2->port => 'worker2');
sub sql { return $c->safe_psql('postgres', $_[0]); }

sql(sprintf(q{SELECT citus_set_coordinator_host('127.0.0.1', %d)}, $c->port));
sql(sprintf(q{SELECT citus_add_node('127.0.0.1', %d)}, $_->port)) for ($w1, $w2);
sql('CREATE EXTENSION mq');
is($w1->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'mq'}),
	'0.2.0', 'Citus ran CREATE EXTENSION mq on the workers');
note(sprintf('cluster up in %.1f s', time - $t0));

# ---------------------------------------------------------------- 1
sql(q{
SELECT mq.create_queue('early', partitions => 2);
SELECT mq.send('early', jsonb_build_object('i', i), 'k' || (i % 5)) FROM generate_series(1, 12) i;
SELECT mq.create_queue('wq_early');
SELECT mq.send('wq_early', jsonb_build_object('i', i)) FROM generate_series(1, 5) i;
});
my $eid = sql(q{SELECT queue_id FROM mq.queue WHERE queue_name = 'early'});
my $wid = sql(q{SELECT queue_id FROM mq.queue WHERE queue_name = 'wq_early'});
# one more offset of k1's partition, handed out and rolled back
$c->psql('postgres', q{BEGIN; SELECT mq.send('early', '{"rb": true}', 'k1'); ROLLBACK;});
my $pk1 = sql(q{SELECT ((hashtext('k1')::bigint & 4294967295) % 2)::int});
my $seq_k1 = sql("SELECT last_value FROM mq.p_${eid}_o$pk1");
my $max_k1 = sql(qq{SELECT max("offset") FROM mq.p_$eid WHERE partition = $pk1});
ok($seq_k1 > $max_k1, "the rolled-back send took offset $seq_k1, above the stored $max_k1");

is(sql('SELECT mq.citus_distribute()'), '2', 'mq.citus_distribute() distributes the log and the work queue');
is(sql(qq{SELECT string_agg(logicalrelid::text || ':' || partmethod::text, ',' ORDER BY logicalrelid::text) FROM pg_dist_partition
          WHERE logicalrelid::text IN ('mq.p_$eid', 'mq.p_${eid}_head', 'mq.q_${wid}_0', 'mq.q_${wid}_d', 'mq.a_$wid')}),
	"mq.a_$wid:n,mq.p_$eid:h,mq.p_${eid}_head:h,mq.q_${wid}_0:n,mq.q_${wid}_d:n",
	'the log by partition (hash), the work queue by queue (single-shard tables)');
is(sql(qq{SELECT pg_relation_size('mq.q_${wid}_0')}), '0', "the work queue's rows moved off the coordinator too");
is(sql(qq{SELECT pg_relation_size('mq.p_${eid}_0') + pg_relation_size('mq.p_${eid}_1')}),
	'0', "the log's rows moved off the coordinator");
is(sql('SELECT mq.citus_distribute()'), '0', 'running it again distributes nothing more');
is($w1->safe_psql('postgres', q{SELECT rolcanlogin FROM pg_roles WHERE rolname = 'mq_owner'}),
	't', 'mq_owner may log in on the workers');
is(sql(q{SELECT count(*) FROM pg_dist_authinfo WHERE rolename = 'mq_owner' AND authinfo ~ '^password=[0-9a-f]{64}$'}),
	'1', 'its password is in pg_dist_authinfo');
$w1->connect_fails(
	'host=127.0.0.1 port=' . $w1->port . ' dbname=postgres user=mq_owner password=guess',
	'mq_owner cannot log in to a worker without its password',
	expected_stderr => qr/password authentication failed/);
my ($rc, $out, $err) = $c->psql('postgres', q{SET ROLE mq_admin; SELECT mq.citus_distribute()});
like($err, qr/permission denied/, 'only superusers may run mq.citus_distribute');

is(sql(q{SELECT count(*) FROM mq.poll('early', 'e', 'm', 100)}), '12',
	'the 12 committed messages of the early log are read back from the workers');
my $after = sql(q{SELECT mq.send('early', '{"after": true}', 'k1')});
ok($after > $seq_k1,
	"a send after distribution continues above every offset handed out before ($after > $seq_k1)");
is(sql(q{SELECT string_agg(payload->>'i', ',' ORDER BY msg_id) FROM mq.read('wq_early', 10)}),
	'1,2,3,4,5', 'the early work queue is read back after distribution');

# ---------------------------------------------------------------- 2
my $P = 4;
sql(qq{SELECT mq.create_queue('orders', partitions => $P, session_timeout => '2 seconds')});
my $id = sql(q{SELECT queue_id FROM mq.queue WHERE queue_name = 'orders'});
is(sql(qq{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid IN ('mq.p_$id'::regclass, 'mq.p_${id}_head'::regclass)}),
	'2', 'a new partitioned queue is distributed when created');
# where each partition lives, and which keys go there (hash_bytes mod partitions, as mq does)
sql(qq{
CREATE TABLE keymap AS
SELECT k AS key, p AS partition,
       (SELECT nodeport FROM pg_dist_shard_placement
         WHERE shardid = get_shard_id_for_distribution_column('mq.p_$id', p)) AS port
  FROM (SELECT 'key-' || g AS k, ((hashtext('key-' || g)::bigint & 4294967295) % $P)::int AS p
          FROM generate_series(0, 199) g) s;
});
is(sql('SELECT count(DISTINCT port) FROM keymap'), '2', "the queue's partitions span both workers");
my %port_of = map { split /\|/ } split /\n/, sql('SELECT DISTINCT partition, port FROM keymap');
note('partitions on ports: ' . join(', ', map { "$_ => $port_of{$_}" } sort keys %port_of));
my $trig = $w1->safe_psql('postgres', q{SET citus.override_table_visibility = off;
  SELECT string_agg(DISTINCT regexp_replace(c.relname, '_[0-9]+$', ''), ',')
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   WHERE t.tgname ~ '^assign_offset' AND c.relname ~ '^p_} . $id . q{(_[0-2])?_[0-9]{6,}$'});
is($trig, "p_$id,p_${id}_0,p_${id}_1,p_${id}_2", "the offset trigger is on the worker's shards of the log");

my ($kw1, $kw2) = map { sql("SELECT min(key) FROM keymap WHERE port = " . $_->port) } ($w1, $w2);
($rc, $out, $err) = $c->psql('postgres', qq{BEGIN;
SELECT mq.send('orders', '{"rb": true, "two": 1}', '$kw1');
SELECT mq.send('orders', '{"rb": true, "two": 2}', '$kw2');
COMMIT;});
like($err, qr/cannot PREPARE a transaction that sent to a partitioned queue/,
	'a transaction sending to partitions on two workers is refused at PREPARE');
($rc, $out, $err) = $c->psql('postgres', qq{SELECT count(*) FROM mq.send_batch('orders',
  ARRAY['{"rb": true, "two": 3}', '{"rb": true, "two": 4}']::jsonb[], ARRAY['$kw1', '$kw2'])});
like($err, qr/cannot PREPARE a transaction that sent to a partitioned queue/,
	'so is a send_batch whose keys fall on partitions of two workers');
is(sql(q{SELECT count(*) FROM mq.p_} . $id . q{ WHERE payload ? 'two'}), '0', 'and neither sent anything');

# out-of-order commits: A takes an offset and stays open, B sends after it
# to the same partition and commits first
my $kx = sql("SELECT min(key) FROM keymap WHERE port = " . $w2->port);
my $px = sql("SELECT partition FROM keymap WHERE key = '$kx'");
my $a = $c->background_psql('postgres');
my $off_a = $a->query_safe(qq{BEGIN; SELECT mq.send('orders', '{"ooo": "A"}', '$kx')});
my $off_b = sql(qq{SELECT mq.send('orders', '{"ooo": "B"}', '$kx')});
ok($off_b > $off_a, "the later send took the higher offset ($off_a, then $off_b)");
is(sql(qq{SELECT count(*) FROM mq.poll('orders', 'ooo', 'm', 100) WHERE partition = $px AND "offset" >= $off_a}),
	'0', 'while A is open, the committed B is not read past A');
is(sql(qq{SELECT end_offset FROM mq.consumer_groups WHERE consumer_group = 'ooo' AND partition = $px}),
	$off_a - 1, "the partition's visible end, computed on its worker, stays below A");
($rc, $out, $err) = $c->psql('postgres', qq{SELECT mq.commit('orders', 'ooo', $px, $off_b)});
like($err, qr/is beyond the end of partition/, 'a commit past the visible end is refused');
($rc, $out, $err) = $c->psql('postgres',
	qq{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM mq.poll('orders', 'ooo', 'm', 100)});
like($err, qr/cannot poll distributed queue "orders" in a REPEATABLE READ/,
	'polling a distributed queue in REPEATABLE READ is refused');
$a->query_safe('COMMIT');
$a->quit;
is(sql(qq{SELECT string_agg("offset"::text, ',' ORDER BY "offset") FROM mq.poll('orders', 'ooo', 'm', 100)
          WHERE partition = $px AND "offset" >= $off_a}),
	"$off_a,$off_b", 'once A commits, both are read, in offset order');

# ---------------------------------------------------------------- 3
sql(q{
CREATE SEQUENCE ord;
CREATE SEQUENCE uid;
CREATE TABLE ctl (stop boolean NOT NULL);
INSERT INTO ctl VALUES (false);
CREATE TABLE sent (key text NOT NULL, "offset" bigint NOT NULL, uid bigint NOT NULL,
                   PRIMARY KEY (key, "offset"));
CREATE TABLE deliveries (member text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL,
                         key text, uid bigint, rb boolean, poll_ord bigint NOT NULL);
CREATE TABLE processed (member text NOT NULL, partition int NOT NULL, "offset" bigint NOT NULL,
                        key text, uid bigint, ord bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE members (member text PRIMARY KEY, ended_at timestamptz);

-- transactions of 1 to 3 sends to the partitions of one worker (a
-- transaction over two workers is refused, above), pauses in between so
-- that transactions overlap; 15% roll back
CREATE PROCEDURE producer(p_until timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    v_port int;
    v_rb boolean;
    v_key text;
    v_uid bigint;
    v_off bigint;
BEGIN
    WHILE clock_timestamp() < p_until LOOP
        v_port := (SELECT port FROM keymap ORDER BY random() LIMIT 1);
        v_rb := random() < 0.15;
        FOR i IN 1 .. 1 + (random() * 2)::int LOOP
            v_key := (SELECT key FROM keymap WHERE port = v_port ORDER BY random() LIMIT 1);
            v_uid := nextval('uid');
            v_off := mq.send('orders', jsonb_build_object('uid', v_uid, 'rb', v_rb), v_key);
            INSERT INTO sent VALUES (v_key, v_off, v_uid);
            PERFORM pg_sleep(random() * 0.01);
        END LOOP;
        IF v_rb THEN
            ROLLBACK;
        ELSE
            COMMIT;
        END IF;
    END LOOP;
END
$$;

-- a member of group g: polls, records what it got, processes and commits
-- per partition in one transaction (rolled back when fenced); 'drain'
-- runs until ctl.stop, the others for p_run; 'leave' leaves at the end,
-- 'die' just ends its session
CREATE PROCEDURE member(p_member text, p_mode text, p_run interval)
LANGUAGE plpgsql AS $$
DECLARE
    v_end timestamptz := clock_timestamp() + p_run;
    v_poll_ord bigint;
    b record;
BEGIN
    CREATE TEMP TABLE polled (partition int, "offset" bigint, key text, payload jsonb);
    LOOP
        IF p_mode = 'drain' THEN
            EXIT WHEN (SELECT stop FROM ctl);
        ELSE
            EXIT WHEN clock_timestamp() >= v_end;
        END IF;
        TRUNCATE polled;
        INSERT INTO polled SELECT p.partition, p."offset", p.key, p.payload
          FROM mq.poll('orders', 'g', p_member, 1 + (random() * 30)::int, '200 milliseconds') p;
        v_poll_ord := nextval('ord');
        INSERT INTO deliveries SELECT p_member, partition, "offset", key, (payload->>'uid')::bigint,
                                      (payload->>'rb')::boolean, v_poll_ord FROM polled;
        COMMIT;
        FOR b IN SELECT partition, max("offset") AS last FROM polled GROUP BY partition ORDER BY partition LOOP
            INSERT INTO processed (member, partition, "offset", key, uid, ord)
            SELECT p_member, partition, "offset", key, (payload->>'uid')::bigint, nextval('ord')
              FROM (SELECT * FROM polled WHERE partition = b.partition ORDER BY "offset") s;
            IF mq.commit('orders', 'g', b.partition, b.last, p_member) THEN
                COMMIT;
            ELSE
                ROLLBACK;
            END IF;
        END LOOP;
    END LOOP;
    IF p_mode IN ('leave', 'drain') THEN
        PERFORM mq.leave('orders', 'g', p_member);
    END IF;
    INSERT INTO members VALUES (p_member, clock_timestamp());
    COMMIT;
END
$$;
});

my @procs;
sub start_psql
{
	my ($sql) = @_;
	my ($in, $o, $e) = ('', '', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $c->connstr('postgres'), '-c', $sql ],
		\$in, \$o, \$e);
	push @procs, [ $h, \$o, \$e, $sql ];
	return $h;
}
my $produce_s = 6;
start_psql("CALL producer(clock_timestamp() + interval '$produce_s seconds')") for 1 .. 3;
start_psql(q{CALL member('m1', 'leave', interval '7 seconds')});
start_psql(q{CALL member('m2', 'die', interval '2 seconds')});
sleep(3.5);
start_psql(q{CALL member('m3', 'leave', interval '4 seconds')});
sleep($produce_s - 3.5 + 1);
start_psql(q{CALL member('drain', 'drain', interval '0')});
# until every committed send was processed (the members die and leave meanwhile)
my $drained = $c->poll_query_until('postgres', q{
SELECT NOT EXISTS (SELECT FROM sent s WHERE NOT EXISTS
  (SELECT FROM processed p WHERE p.key = s.key AND p."offset" = s."offset"))
   AND (SELECT count(*) FROM members WHERE member IN ('m1', 'm2', 'm3')) = 3
   AND (SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'CALL producer%') = 0});
sql('UPDATE ctl SET stop = true');
for my $p (@procs)
{
	$p->[0]->finish;
	is($p->[0]->result(0), 0, "session '$p->[3]' ran without error") or diag(${ $p->[2] });
}
ok($drained, 'the group drained every committed send');

my $nsent = sql('SELECT count(*) FROM sent');
ok($nsent > 100, "the producers committed $nsent sends");
is(sql(q{SELECT count(*) FROM sent s WHERE NOT EXISTS
  (SELECT FROM processed p WHERE p.key = s.key AND p."offset" = s."offset" AND p.uid = s.uid)}),
	'0', 'no committed send lost: each was processed, with the payload sent at its offset');
is(sql('SELECT count(*) FROM deliveries WHERE rb'), '0', 'no rolled-back send was delivered');
is(sql(q{SELECT count(*) FROM (SELECT key FROM deliveries GROUP BY key HAVING count(DISTINCT partition) > 1) s}),
	'0', 'a key always maps to one partition');
is(sql(q{SELECT count(*) FROM (SELECT partition, "offset", count(DISTINCT uid) FROM deliveries
                               GROUP BY 1, 2 HAVING count(DISTINCT uid) > 1) s}),
	'0', 'an offset is one message');
is(sql(q{SELECT count(*) FROM (
  SELECT partition, "offset", ord, lag("offset") OVER (PARTITION BY partition ORDER BY ord) AS prev
    FROM (SELECT partition, "offset", min(ord) AS ord FROM processed GROUP BY 1, 2) f) s
  WHERE "offset" < prev}), '0', 'per partition, first processings come in offset order');
is(sql(q{SELECT count(*) FROM (
  SELECT s.key, s."offset", pg_xact_commit_timestamp(s.xmin) AS ts,
         lag(pg_xact_commit_timestamp(s.xmin)) OVER (PARTITION BY k.partition ORDER BY s."offset") AS prev_ts
    FROM sent s JOIN keymap k USING (key)) x WHERE ts < prev_ts}) > 0 ? 1 : 0,
	1, 'the producers committed out of offset order');
my $dead_end = sql(q{SELECT ended_at FROM members WHERE member = 'm2'});
is(sql(qq{SELECT count(DISTINCT partition) FROM processed
          WHERE member <> 'm2' AND at > '$dead_end'::timestamptz + interval '2 seconds'}),
	$P, 'after the dead member lapsed, the others processed every partition (rebalancing)');
ok(sql(q{SELECT count(DISTINCT member) FROM processed}) >= 3, 'partitions changed hands among the members');
note(sprintf('section 3 done at %.1f s', time - $t0));

# ---------------------------------------------------------------- 4
# a worker crashes (immediate stop, no shutdown checkpoint) with a send
# open on it, and restarts
my ($kv, $ko) = map { sql("SELECT min(key) FROM keymap WHERE port = " . $_->port) } ($w1, $w2);
my $pv = sql("SELECT partition FROM keymap WHERE key = '$kv'");
my $before = sql(qq{SELECT count(*) FROM mq.p_$id});
my $max_v = sql(qq{SELECT max("offset") FROM mq.p_$id WHERE partition = $pv});
my $bg = $c->background_psql('postgres', on_error_stop => 0);
$bg->query_safe(qq{BEGIN; SELECT mq.send('orders', '{"crash": "open"}', '$kv')});
$w1->stop('immediate');
($rc, $out, $err) = $c->psql('postgres', qq{SELECT mq.send('orders', '{"crash": "down"}', '$kv')});
isnt($rc, 0, 'a send to a partition of the crashed worker fails');
is(sql(qq{SELECT mq.send('orders', '{"crash": "other"}', '$ko') > 0}), 't',
	"the other worker's partitions still take sends");
$w1->start;
$bg->quit;
is(sql(qq{SELECT count(*) FROM mq.p_$id WHERE NOT payload ? 'crash'}), $before,
	'every message committed before the crash is still there');
is(sql(qq{SELECT count(*) FROM mq.p_$id WHERE payload->>'crash' IN ('open', 'down')}), '0',
	'the sends open or refused at the crash left nothing');
my @after = split /\n/, sql(qq{SELECT mq.send('orders', '{"crash": "after"}', '$kv') FROM generate_series(1, 3)});
is(scalar(grep { $_ > $max_v } @after), 3,
	"offsets on the restarted worker continue above every stored one ($max_v; got @after)");
is(sql(qq{SELECT count(*) FROM (SELECT partition, "offset" FROM mq.p_$id GROUP BY 1, 2 HAVING count(*) > 1) s}),
	'0', 'no offset of the queue was handed out twice');
ok($c->poll_query_until('postgres',
		q{SELECT string_agg(payload->>'crash', ',' ORDER BY payload->>'crash') FROM mq.poll('orders', 'g', 'after', 100)},
		'after,after,after,other'),
	'the group resumes after its committed offsets and reads exactly the new messages');

# ---------------------------------------------------------------- 4b
# move the shard group of partition 0 to the other worker and back; send in
# between.  Each time the sequence on the receiving node is not the one
# that handed the offsets out.
my $p0 = 0;
my $shard = sql("SELECT get_shard_id_for_distribution_column('mq.p_$id', $p0)");
my $max0 = sql(qq{SELECT max("offset") FROM mq.p_$id WHERE partition = $p0});
my $key0 = sql("SELECT min(key) FROM keymap WHERE partition = $p0");
my @path = ($port_of{$p0} == $w1->port ? ($w1, $w2) : ($w2, $w1));
sql(q{SELECT mq.seek('orders', 'moves', NULL, 'latest')});
my $moved_ok = 1;
my @new_offsets;
for my $hop ([ $path[0], $path[1] ], [ $path[1], $path[0] ])
{
	sql(sprintf(q{SELECT citus_move_shard_placement(%s, '127.0.0.1', %d, '127.0.0.1', %d,
	                                            shard_transfer_mode => 'block_writes')},
		$shard, $hop->[0]->port, $hop->[1]->port));
	$moved_ok &&= sql("SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $shard") == $hop->[1]->port;
	push @new_offsets, split /\n/, sql(qq{SELECT mq.send('orders', jsonb_build_object('moved', i), '$key0')
	                                        FROM generate_series(1, 3) i});
}
ok($moved_ok, "the partition's shard group moved to the other worker and back");
is(scalar(grep { $_ > $max0 } @new_offsets), 6,
	"every send after a move took an offset above every stored one ($max0; got @new_offsets)");
is(sql(qq{SELECT count(*) FROM (SELECT "offset" FROM mq.p_$id WHERE partition = $p0 GROUP BY 1 HAVING count(*) > 1) s}),
	'0', 'no offset of the partition was handed out twice');
is(sql(qq{SELECT string_agg(payload->>'moved', ',' ORDER BY "offset") FROM mq.poll('orders', 'moves', 'm', 100)
          WHERE partition = $p0}),
	'1,2,3,1,2,3', 'the group reads exactly the messages sent after the moves, in order');

# ---------------------------------------------------------------- 5
# work queues distributed by queue: every table of a queue is a Citus
# single-shard table, colocated with the others, on one worker
sub wq_id { return sql(qq{SELECT queue_id FROM mq.queue WHERE queue_name = '$_[0]'}); }
# "colocation groups|workers|single-shard|tables" of a work queue's tables
sub wq_placement
{
	my $qid = wq_id($_[0]);
	return sql(qq{SELECT count(DISTINCT p.colocationid) || '|' || count(DISTINCT s.nodeport) || '|'
	                  || bool_and(p.partmethod = 'n' AND p.partkey IS NULL) || '|' || count(*)
	                FROM pg_dist_partition p JOIN citus_shards s ON s.table_name = p.logicalrelid
	               WHERE p.logicalrelid::text ~ '^mq\\.(q_${qid}_[0-3d]|a_$qid)\$'});
}
sub wq_port
{
	my $qid = wq_id($_[0]);
	return sql(qq{SELECT nodeport FROM citus_shards WHERE table_name = 'mq.q_${qid}_0'::regclass});
}
sql(q{SELECT mq.create_queue('jobs_dlq')});
sql(q{SELECT mq.create_queue('jobs', visibility_timeout => '30 seconds', max_attempts => 5,
                             retry_delay => '0 seconds', dead_letter_queue => 'jobs_dlq')});
sql(qq{SELECT mq.create_queue('wq_$_')}) for ('a', 'b');
for my $q ('wq_early', 'jobs', 'jobs_dlq', 'wq_a', 'wq_b')
{
	is(wq_placement($q), '1|1|true|6', "$q: its 6 tables are colocated single-shard tables on one worker");
}
my %wq_workers = map { wq_port($_) => 1 } ('wq_early', 'jobs', 'jobs_dlq', 'wq_a', 'wq_b');
is(scalar(keys %wq_workers), 2, 'the work queues are spread over both workers');
my $jid = wq_id('jobs');
is(sql(qq{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text IN
          ('mq.q_${jid}_seq', 'mq.q_${jid}_acked', 'mq.q_${jid}_rights')}),
	'0', "the queue's msg_id sequence, acked count and rights table stay on the coordinator");

# the claim statement as storage.c prepares it: a router query with a generic plan
my $plan = sql(qq{SET plan_cache_mode = force_generic_plan;
PREPARE claim(int, timestamptz, int, bigint, timestamptz, bigint, bigint) AS
UPDATE mq.q_${jid}_0 AS m SET vt = CASE WHEN m.attempts < \$3 THEN \$2 ELSE '-infinity'::timestamptz END,
  attempts = CASE WHEN m.attempts < \$3 THEN m.attempts + 1 ELSE m.attempts END,
  claimed = m.attempts < \$3, consumer = \$4, lapsed = m.claimed
 WHERE m.ctid = ANY (ARRAY(SELECT ctid FROM mq.q_${jid}_0 WHERE msg_id >= \$6 AND msg_id < \$7 AND vt < \$5
                          AND NOT blocked ORDER BY msg_id LIMIT \$1 FOR NO KEY UPDATE SKIP LOCKED))
 RETURNING m.msg_id;
EXPLAIN (COSTS OFF) EXECUTE claim(1, now(), 5, NULL, now(), 1, 100);});
like($plan, qr/Custom Scan \(Citus Adaptive\)\n\s+Task Count: 1\n.*Node: host=127\.0\.0\.1 port=@{[wq_port('jobs')]}/s,
	"the claim is one task on the queue's worker (a router plan, kept generic)");
unlike($plan, qr/Subplan|Task Count: [02-9]/, 'with no subplan and no other task');

# producers through the coordinator, 15% of their transactions roll back;
# consumers claim batches, nack 10% of the messages (retry at once), ack
# the rest
sql(q{
CREATE TABLE wsent (msg_id bigint PRIMARY KEY);
CREATE TABLE wclaims (consumer text NOT NULL, msg_id bigint NOT NULL, receipt bigint NOT NULL,
                      payload jsonb NOT NULL, outcome text);
CREATE TABLE wdone (producer int);
CREATE PROCEDURE wproducer(p_id int, p_txns int)
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_rb boolean;
BEGIN
    FOR t IN 1 .. p_txns LOOP
        v_rb := random() < 0.15;
        FOR i IN 1 .. 1 + (random() * 2)::int LOOP
            IF i = 2 AND random() < 0.5 THEN
                FOR v_id IN SELECT mq.send_batch('jobs', ARRAY[jsonb_build_object('p', p_id, 'rb', v_rb),
                                                             jsonb_build_object('p', p_id, 'rb', v_rb)]) LOOP
                    IF NOT v_rb THEN INSERT INTO wsent VALUES (v_id); END IF;
                END LOOP;
            ELSE
                v_id := mq.send('jobs', jsonb_build_object('p', p_id, 'rb', v_rb));
                IF NOT v_rb THEN INSERT INTO wsent VALUES (v_id); END IF;
            END IF;
        END LOOP;
        IF v_rb THEN ROLLBACK; ELSE COMMIT; END IF;
    END LOOP;
    INSERT INTO wdone VALUES (p_id);
    COMMIT;
END
$$;
-- consumers stop when every committed send is acked (exact accounting,
-- not idle time: a message whose hint the coordinator noted before its
-- commit was visible on the worker waits for the sweep, 5 s), or after
-- 600 empty reads (then the checks below fail)
CREATE PROCEDURE wconsumer(p_name text)
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    v_idle int := 0;
BEGIN
    WHILE v_idle < 600 AND ((SELECT count(*) FROM wdone) < 3
                            OR (SELECT count(*) FROM wsent) >
                               (SELECT count(DISTINCT msg_id) FROM wclaims WHERE outcome = 'acked')) LOOP
        v_idle := v_idle + 1;
        FOR m IN SELECT * FROM mq.read('jobs', 1 + (random() * 4)::int, wait => '100 milliseconds') LOOP
            v_idle := 0;
            INSERT INTO wclaims VALUES (p_name, m.msg_id, m.receipt, m.payload, NULL);
            COMMIT;
            IF random() < 0.1 THEN
                IF mq.nack('jobs', m.msg_id, m.receipt, delay => '0 seconds') THEN
                    UPDATE wclaims SET outcome = 'nacked'
                     WHERE consumer = p_name AND msg_id = m.msg_id AND receipt = m.receipt;
                END IF;
            ELSIF mq.ack('jobs', m.msg_id, m.receipt) THEN
                UPDATE wclaims SET outcome = 'acked'
                 WHERE consumer = p_name AND msg_id = m.msg_id AND receipt = m.receipt;
            END IF;
            COMMIT;
        END LOOP;
        COMMIT;
        -- idle only counts once every producer is done
        IF (SELECT count(*) FROM wdone) < 3 THEN
            v_idle := 0;
        END IF;
    END LOOP;
END
$$;
});
@procs = ();
start_psql("CALL wproducer($_, 150)") for 1 .. 3;
start_psql("CALL wconsumer('c$_')") for 1 .. 3;
for my $p (@procs)
{
	$p->[0]->finish;
	is($p->[0]->result(0), 0, "session '$p->[3]' ran without error") or diag(${ $p->[2] });
}
my $wn = sql('SELECT count(*) FROM wsent');
ok($wn > 300, "the producers committed $wn sends");
is(sql(q{SELECT count(*) FROM wsent s WHERE NOT EXISTS
          (SELECT FROM wclaims c WHERE c.msg_id = s.msg_id AND c.outcome = 'acked')}),
	'0', 'every committed send was acked (none lost)');
is(sql(q{SELECT count(*) FROM (SELECT msg_id FROM wclaims WHERE outcome = 'acked' GROUP BY 1 HAVING count(*) > 1) s}),
	'0', 'no message was acked twice');
is(sql(q{SELECT count(*) FROM wclaims WHERE outcome = 'acked'}), $wn, 'exactly the committed sends were acked');
is(sql(q{SELECT count(*) FROM wclaims WHERE (payload->>'rb')::boolean OR msg_id NOT IN (SELECT msg_id FROM wsent)}),
	'0', 'no rolled-back send was delivered');
is(sql(q{SELECT count(*) FROM (SELECT msg_id, receipt FROM wclaims GROUP BY 1, 2 HAVING count(*) > 1) s}),
	'0', 'no delivery was handed to two consumers');
is(sql(q{SELECT count(*) FROM wclaims c WHERE c.outcome = 'nacked' AND NOT EXISTS
          (SELECT FROM wclaims d WHERE d.msg_id = c.msg_id AND d.receipt > c.receipt)}),
	'0', 'every nacked message was delivered again, with a later receipt');
ok(sql(q{SELECT count(*) FROM wclaims WHERE outcome = 'nacked'}) > 0, 'some were nacked');
ok(sql('SELECT count(DISTINCT consumer) FROM wclaims') > 1, 'several consumers took part');
is(sql(q{SELECT count(*) FROM mq.read('jobs', 10)}), '0', 'nothing is left to read');
is(sql(q{SELECT depth || '|' || in_flight || '|' || delayed || '|' || total_acked FROM mq.metrics('jobs')}),
	"0|0|0|$wn", 'mq.metrics of the distributed queue agrees');

# visibility timeout, backoff, dead-lettering, delays, archive, release
sql(q{SELECT mq.create_queue('retry', max_attempts => 3, retry_delay => '1 hour', retry_backoff => 1,
                             retry_delay_max => '1 hour', dead_letter_queue => 'jobs_dlq')});
my $rid = wq_id('retry');
my $m1 = sql(q{SELECT mq.send('retry', '{"n": 1}')});
is(sql(q{SELECT msg_id || '/' || receipt FROM mq.read('retry', 1, '0 seconds')}), "$m1/1", 'claimed with a 0 s visibility timeout');
is(sql(q{SELECT msg_id || '/' || receipt FROM mq.read('retry', 1, '30 seconds')}), "$m1/2",
	'its visibility timeout lapsed: delivered again with the next receipt');
is(sql(qq{SELECT mq.nack('retry', $m1, 2)}), 't', 'nacked without a delay: the queue\'s backoff');
is(sql(q{SELECT count(*) FROM mq.read('retry', 1)}), '0', 'not readable during the backoff');
is(sql(qq{SELECT vt > now() + interval '59 minutes' AND vt < now() + interval '61 minutes' FROM mq.q_${rid}_d WHERE msg_id = $m1}),
	't', 'due after the 1 hour retry_delay, in the delayed table on the worker');
my $m1b = sql(q{SELECT mq.send('retry', '{"n": 11}')});
for my $r (1 .. 2)
{
	is(sql(q{SELECT msg_id || '/' || receipt FROM mq.read('retry', 1)}), "$m1b/$r", "delivery $r of another message");
	is(sql(qq{SELECT mq.nack('retry', $m1b, $r, delay => '0 seconds')}), 't', 'nacked, to retry at once');
}
is(sql(q{SELECT msg_id || '/' || receipt FROM mq.read('retry', 1)}), "$m1b/3", 'delivered a third time');
is(sql(qq{SELECT mq.nack('retry', $m1b, 3, error => 'boom')}), 't', 'nacked on its last attempt');
is(sql(q{SELECT payload->>'n' || '|' || (dead_letter->>'msg_id') || '|' || (dead_letter->>'reason') || '|' || (dead_letter->>'error')
          FROM mq.read('jobs_dlq', 10)}),
	"11|$m1b|nack on the last attempt|boom", "dead-lettered into the DLQ (another queue's tables)");
is(sql(q{SELECT count(*) FROM mq.read('retry', 1)}), '0', 'and gone from its queue');
my $m2 = sql(q{SELECT mq.send('retry', '{"n": 2}')});
sql(q{SELECT mq.read('retry', 1, '0 seconds')}) for 1 .. 3;
is(sql(q{SELECT count(*) FROM mq.read('retry', 1)}), '0', 'a message whose last claim lapsed is not read again');
is(sql(q{SELECT (dead_letter->>'msg_id') || '|' || (dead_letter->>'reason') FROM mq.read('jobs_dlq', 10)}),
	"$m2|visibility timeout lapsed on the last attempt", 'it was dead-lettered too');
my $m3 = sql(q{SELECT mq.send('retry', '{"n": 3}', delay => '1 hour')});
is(sql(q{SELECT count(*) FROM mq.read('retry', 1)}), '0', 'a delayed message is not read before it is due');
my $m4 = sql(q{SELECT mq.send('retry', '{"n": 4}', delay => '1 second')});
ok($c->poll_query_until('postgres', q{SELECT string_agg(msg_id::text, ',') FROM mq.read('retry', 10)}, $m4),
	'the message delayed by 1 second is read once due, the 1 hour one is not');
is(sql(qq{SELECT mq.extend('retry', $m4, '1 hour') > now() + interval '59 minutes'}), 't', 'extend moves its visibility timeout');
is(sql(qq{SELECT mq.archive('retry', $m4)}), 't', 'archived');
is(sql(qq{SELECT count(*) FROM mq.a_$rid WHERE msg_id = $m4}), '1', "into the queue's archive on its worker");
# a registered consumer whose session ends: its claims are released at once
my $m5 = sql(q{SELECT mq.send('retry', '{"n": 5}')});
is($c->safe_psql('postgres', q{SELECT mq.register_consumer('doomed'); SELECT msg_id FROM mq.read('retry', 1, '1 hour')}),
	"\n$m5", 'a registered consumer claims a message for an hour and its session ends');
ok($c->poll_query_until('postgres', q{SELECT string_agg(msg_id || '/' || receipt, ',') FROM mq.read('retry', 10)}, "$m5/2"),
	"maintenance released the dead consumer's claim: delivered again");
is(sql(q{SELECT mq.purge('retry')}), '3', 'purge deletes what is left (two delayed messages and the reclaimed one)');
($rc, $out, $err) = $c->psql('postgres', q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT * FROM mq.read('retry'); COMMIT;});
like($err, qr/cannot read distributed queue "retry" in a REPEATABLE READ or SERIALIZABLE transaction/,
	'a read in REPEATABLE READ is refused');
# a keyed queue, distributed by queue too: per-key order with 3 consumers
# that nack 10% of what they read (retry at once)
sql(q{SELECT mq.create_queue('kq', ordering => 'key')});
is(wq_placement('kq'), '1|1|true|6', 'a keyed work queue is distributed by queue too');
sql(q{SELECT mq.send('kq', jsonb_build_object('i', i), 'k' || (i % 3)) FROM generate_series(1, 30) i});
is(sql(q{SELECT count(*) FROM mq.send_batch('kq', (SELECT array_agg(jsonb_build_object('i', i) ORDER BY i) FROM generate_series(31, 60) i),
                                                  (SELECT array_agg('k' || (i % 3) ORDER BY i) FROM generate_series(31, 60) i))}),
	'30', 'send_batch on the distributed keyed queue');
sql(q{
CREATE TABLE kacks (n bigserial, consumer text, msg_id bigint, key text);
CREATE PROCEDURE kconsumer(p_name text)
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    v_idle int := 0;
BEGIN
    WHILE v_idle < 600 AND (SELECT count(*) FROM kacks) < 60 LOOP
        v_idle := v_idle + 1;
        FOR m IN SELECT * FROM mq.read('kq', 2, wait => '100 milliseconds') LOOP
            v_idle := 0;
            IF random() < 0.1 THEN
                PERFORM mq.nack('kq', m.msg_id, m.receipt, delay => '0 seconds');
            ELSIF mq.ack('kq', m.msg_id, m.receipt) THEN
                INSERT INTO kacks (consumer, msg_id, key) VALUES (p_name, m.msg_id, m.key);
            END IF;
            COMMIT;
        END LOOP;
        COMMIT;
    END LOOP;
END
$$;
});
@procs = ();
start_psql("CALL kconsumer('k$_')") for 1 .. 3;
for my $p (@procs)
{
	$p->[0]->finish;
	is($p->[0]->result(0), 0, "session '$p->[3]' ran without error") or diag(${ $p->[2] });
}
is(sql(q{SELECT count(*) || '|' || count(DISTINCT msg_id) FROM kacks}), '60|60', 'each of the 60 keyed messages was acked once');
is(sql(q{SELECT count(*) FROM (SELECT msg_id, lag(msg_id) OVER (PARTITION BY key ORDER BY n) AS prev FROM kacks) s
          WHERE msg_id < prev}), '0', 'per key, acks came in msg_id order');
($rc, $out, $err) = $c->psql('postgres', q{BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT mq.send('kq', '{}', 'k0'); COMMIT;});
like($err, qr/cannot send to distributed queue "kq" in a REPEATABLE READ or SERIALIZABLE transaction/,
	'a send to the distributed keyed queue in REPEATABLE READ is refused');
is(sql(q{SELECT mq.drop_queue('retry')}), 't', 'a distributed work queue is dropped');
is(sql(qq{SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text ~ '^mq\\.[qa]_${rid}(_|\$)'})
	. $node{worker1}->safe_psql('postgres', qq{SET citus.override_table_visibility = off;
		SELECT count(*) FROM pg_class WHERE relname ~ '^[qa]_${rid}(_|\$)'}),
	'00', 'with its shards');

# ---------------------------------------------------------------- 6
# the rest of the log API on a distributed queue
is(sql(q{SELECT count(*) FROM mq.send_batch('early', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}']::jsonb[],
                                            ARRAY['k1', 'k1', 'k2'])}),
	'3', 'send_batch routes each message to its partition');
is(sql(q{SELECT depth > 0 AND total_sent > 0 AND oldest_age_s >= 0 FROM mq.metrics('early')}), 't',
	'mq.metrics reads a distributed log');
is(sql(q{SELECT mq.seek('early', 'tseek', NULL, now() - interval '1 hour')}), '2',
	'seek by time finds the first message of each partition on its worker');
is(sql(q{SELECT count(*) FROM mq.poll('early', 'tseek', 'm', 100)}),
	sql(q{SELECT count(*) FROM mq.p_} . $eid), 'and the group reads the whole log from there');
my $top = sql(qq{SELECT max("offset") FROM mq.p_$eid WHERE partition = $pk1});
my $purged = sql(q{SELECT mq.purge('early')});
is(sql(q{SELECT count(*) FROM mq.p_} . $eid), '0', "purge empties the log on the workers ($purged messages)");
ok(sql(q{SELECT mq.send('early', '{"after_purge": true}', 'k1')}) > $top,
	'offsets continue above the purged ones');
# a partition emptied by purge, then moved to the other worker (whose
# copy of its sequence is behind): mq.citus_distribute(), run again,
# raises it to the high-water mark purge recorded
my $last = sql(q{SELECT mq.send('early', '{"before_move": true}', 'k1')});
sql(q{SELECT mq.purge('early')});
my $eshard = sql("SELECT get_shard_id_for_distribution_column('mq.p_$eid', $pk1)");
my $from = sql("SELECT nodeport FROM pg_dist_shard_placement WHERE shardid = $eshard");
my $to = $from == $w1->port ? $w2->port : $w1->port;
sql("SELECT citus_move_shard_placement($eshard, '127.0.0.1', $from, '127.0.0.1', $to, shard_transfer_mode => 'block_writes')");
is(sql('SELECT mq.citus_distribute()'), '0', 'run again after a move, mq.citus_distribute() distributes nothing new');
is(sql(qq{SELECT mq._partition_end('early', $pk1)}), $last + 1,
	"the emptied, moved partition's end continues at its high-water mark, before any send");
ok(sql(q{SELECT mq.send('early', '{"after_move": true}', 'k1')}) > $last, 'and so do its offsets');

# ---------------------------------------------------------------- 7
# a worker fails: the work queue it holds stops, one on the other worker
# carries on, and nothing committed is lost
my ($wq_down, $wq_up);
for my $q ('wq_a', 'wq_b', 'jobs', 'jobs_dlq', 'wq_early')
{
	$wq_down //= $q if wq_port($q) == $w1->port;
	$wq_up //= $q if wq_port($q) == $w2->port;
}
sql(qq{SELECT mq.send('$wq_down', jsonb_build_object('before', i)) FROM generate_series(1, 5) i});
my $bgw = $c->background_psql('postgres', on_error_stop => 0);
$bgw->query_safe(qq{BEGIN; SELECT mq.send('$wq_down', '{"open": true}')});
$w1->stop('immediate');
($rc, $out, $err) = $c->psql('postgres', qq{SELECT mq.send('$wq_down', '{"down": true}')});
isnt($rc, 0, "a send to $wq_down, whose worker is down, fails");
($rc, $out, $err) = $c->psql('postgres', qq{SELECT count(*) FROM mq.read('$wq_down', 10)});
isnt($rc, 0, 'and so does a read');
my $up_id = sql(qq{SELECT mq.send('$wq_up', '{"up": true}')});
is(sql(qq{SELECT msg_id FROM mq.read('$wq_up', 10)}), $up_id, "$wq_up on the other worker takes sends and reads");
is(sql(qq{SELECT mq.ack('$wq_up', $up_id)}), 't', 'and acks');
$w1->start;
$bgw->quit;
is(sql(qq{SELECT string_agg(payload::text, ',' ORDER BY msg_id) FROM mq.read('$wq_down', 10, '0 seconds')}),
	join(',', map { qq({"before": $_}) } 1 .. 5),
	'after the restart the committed messages are all there; the open and the refused send left nothing');
is(sql(qq{SELECT count(*) FROM mq.read('$wq_down', 10) r WHERE mq.ack('$wq_down', r.msg_id, r.receipt)}), '5',
	'and are read again and acked');
note(sprintf('total %.1f s', time - $t0));
$node{$_}->stop for keys %node;
done_testing();
