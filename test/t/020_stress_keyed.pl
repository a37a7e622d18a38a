# Stress test of a keyed work queue (ordering => 'key') with real
# concurrent clients.
#
# 100,000 messages over 1,000 keys (100 per key, interleaved at random) are
# sent up front with mq.send_batch; each payload carries its key's sequence
# number seq (1..100 in send order).  Then 8 workers, each its own backend
# running a loop with its own transactions (a procedure that COMMITs), drain
# the queue:
#   - claim 1 to 4 messages with mq.read (visibility timeout 10 minutes, so
#     it never lapses here) and record each delivery, with a global order
#     number from a sequence, in the claim's transaction;
#   - per message, in its own transaction: 10% of the time a transient
#     failure, mq.nack with delay 0 or up to 20 ms, recorded with the nack;
#     otherwise mq.ack and a `processed` row (key, seq, global order) in the
#     same transaction.
# A worker stops when a read finds nothing and the queue has nothing queued,
# in flight, delayed or blocked (or at a deadline that only a hang reaches).
#
# Afterwards:
#   - every sent message was processed exactly once (none lost, none twice);
#   - per key, processing order is send order (seq 1, 2, ..., 100);
#   - per key, deliveries never overlap: each delivery starts after the
#     previous delivery of the key ended (ack or nack), so a key never had
#     two messages in flight; after a nack the key's next delivery is the
#     same message again, after an ack it is the next seq;
#   - no message was delivered after its ack; every ack and nack succeeded;
#     attempts counts the deliveries; the queue ends empty, nothing dead-lettered.
# Nothing here asserts timings; the run is bounded by the workers' deadline.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $nkeys = 1000;
my $per_key = 100;
my $total = $nkeys * $per_key;
my $nworkers = 8;
my $fail_pct = 10;
my $deadline_s = 150;    # only a hang gets here: the run takes ~15 s

my $node = PostgreSQL::Test::Cluster->new('stress_keyed');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'\nmax_connections = 50");
$node->start;

$node->safe_psql('postgres', qq{
CREATE EXTENSION mq;
SELECT mq.create_queue('ks', visibility_timeout => '10 minutes', ordering => 'key',
                       max_attempts => 1000, retry_delay => '0');
CREATE SEQUENCE ord;
-- what was sent, in msg_id order
CREATE TABLE sent (msg_id bigint PRIMARY KEY, k int NOT NULL, seq int NOT NULL);
-- one row per delivery (mq.read), closed by its ack or nack
CREATE TABLE deliveries (
    id bigserial PRIMARY KEY, worker int NOT NULL, msg_id bigint NOT NULL, receipt bigint NOT NULL,
    k int NOT NULL, seq int NOT NULL, attempts int NOT NULL,
    read_ord bigint NOT NULL, end_ord bigint, outcome text, ok boolean);
-- one row per successful processing, committed with the ack
CREATE TABLE processed (
    msg_id bigint NOT NULL, k int NOT NULL, seq int NOT NULL, ord bigint NOT NULL, worker int NOT NULL);

CREATE PROCEDURE stress_worker(p_worker int, p_fail_pct int, p_deadline timestamptz)
LANGUAGE plpgsql AS \$\$
DECLARE
    v_ids bigint[];
    v_id bigint;
    d deliveries;
    v_ok boolean;
BEGIN
    WHILE clock_timestamp() < p_deadline LOOP
        -- claim 1 to 4 messages and record their deliveries, in one transaction
        WITH r AS (SELECT * FROM mq.read('ks', 1 + (random() * 3)::int, NULL, '100 milliseconds')),
             ins AS (INSERT INTO deliveries (worker, msg_id, receipt, k, seq, attempts, read_ord)
                     SELECT p_worker, r.msg_id, r.receipt, (r.payload->>'k')::int, (r.payload->>'seq')::int,
                            r.attempts, nextval('ord')
                       FROM r ORDER BY r.msg_id
                     RETURNING id)
        SELECT array_agg(id ORDER BY id) INTO v_ids FROM ins;
        COMMIT;
        IF v_ids IS NULL THEN
            -- nothing visible: done when nothing is queued, in flight, delayed or blocked
            IF (SELECT depth + in_flight + delayed + blocked FROM mq.metrics('ks')) = 0 THEN
                EXIT;
            END IF;
            CONTINUE;
        END IF;
        -- process each claimed message in its own transaction
        FOREACH v_id IN ARRAY v_ids LOOP
            SELECT * INTO d FROM deliveries WHERE id = v_id;
            IF random() * 100 < p_fail_pct THEN
                -- a transient failure: release it for a retry now or after a few ms
                v_ok := mq.nack('ks', d.msg_id, d.receipt,
                                CASE WHEN random() < 0.5 THEN interval '0'
                                     ELSE random() * interval '20 milliseconds' END,
                                'transient failure');
                UPDATE deliveries SET end_ord = nextval('ord'), outcome = 'nack', ok = v_ok WHERE id = d.id;
            ELSE
                -- processed: the record and the ack commit together
                v_ok := mq.ack('ks', d.msg_id, d.receipt);
                INSERT INTO processed (msg_id, k, seq, ord, worker)
                VALUES (d.msg_id, d.k, d.seq, nextval('ord'), p_worker);
                UPDATE deliveries SET end_ord = currval('ord'), outcome = 'ack', ok = v_ok WHERE id = d.id;
            END IF;
            COMMIT;
        END LOOP;
    END LOOP;
END
\$\$;
});

# ---- send: $nkeys keys x $per_key messages, interleaved at random, in
# batches of 10,000 sent one after the other (so msg_id order is send order)
my $t0 = time;
$node->safe_psql('postgres', qq{
CREATE TABLE plan AS
SELECT row_number() OVER (ORDER BY r) AS pos, k,
       row_number() OVER (PARTITION BY k ORDER BY r) AS seq
  FROM (SELECT k, random() AS r FROM generate_series(1, $nkeys) k, generate_series(1, $per_key) j) s;
DO \$\$
DECLARE
    b bigint;
BEGIN
    FOR b IN SELECT DISTINCT (pos - 1) / 10000 FROM plan ORDER BY 1 LOOP
        INSERT INTO sent (msg_id, k, seq)
        SELECT p.id, p.k, p.seq
          FROM (SELECT array_agg(jsonb_build_object('k', k, 'seq', seq) ORDER BY pos) AS pl,
                       array_agg('key-' || k ORDER BY pos) AS ks,
                       array_agg(k ORDER BY pos) AS kk, array_agg(seq ORDER BY pos) AS ss
                  FROM plan WHERE (pos - 1) / 10000 = b) a
         CROSS JOIN LATERAL unnest(ARRAY(SELECT mq.send_batch('ks', a.pl, a.ks)), a.kk, a.ss) AS p(id, k, seq);
        COMMIT;
    END LOOP;
END
\$\$;
ANALYZE sent;
});
my $send_s = time - $t0;
is($node->safe_psql('postgres', 'SELECT count(*) FROM sent'), $total, "$total messages sent");
is( $node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY k ORDER BY msg_id) AS prev FROM sent) s
	 WHERE seq <> coalesce(prev, 0) + 1}),
	'0', 'setup: msg_id order is seq order within each key');

# ---- 8 concurrent workers
$t0 = time;
my @workers;
foreach my $w (1 .. $nworkers)
{
	my %h = (out => '', err => '');
	$h{h} = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
			'-c', "CALL stress_worker($w, $fail_pct, clock_timestamp() + interval '$deadline_s seconds')"
		],
		'<', \undef, '>', \$h{out}, '2>', \$h{err},
		IPC::Run::timeout($deadline_s + 60));
	push @workers, \%h;
}
my $w = 0;
foreach my $h (@workers)
{
	$w++;
	$h->{h}->finish;
	is($h->{h}->result(0), 0, "worker $w exited cleanly")
	  or diag("worker $w stderr: $h->{err}");
}
my $run_s = time - $t0;

my $q = sub { $node->safe_psql('postgres', shift) };
$q->('ANALYZE deliveries; ANALYZE processed;');

# ---- exactly once
is($q->('SELECT count(*) FROM processed'), $total, 'processed rows: one per message sent');
is($q->('SELECT count(*) FROM sent s WHERE NOT EXISTS (SELECT FROM processed p WHERE p.msg_id = s.msg_id)'),
	'0', 'no message lost: every sent message was processed');
is($q->('SELECT count(*) FROM (SELECT msg_id FROM processed GROUP BY msg_id HAVING count(*) > 1) d'),
	'0', 'no message processed twice');
is($q->('SELECT count(*) FROM processed p JOIN sent s USING (msg_id) WHERE (p.k, p.seq) <> (s.k, s.seq)'),
	'0', 'each processed message carries the key and seq it was sent with');

# ---- per-key order of processing
is( $q->(q{
	SELECT count(*) FROM (SELECT seq, lag(seq) OVER (PARTITION BY k ORDER BY ord) AS prev FROM processed) s
	 WHERE seq <> coalesce(prev, 0) + 1}),
	'0', 'per key, messages were processed in send order (seq 1, 2, ...)');

# ---- deliveries
is($q->('SELECT count(*) FROM deliveries WHERE end_ord IS NULL OR ok IS NOT TRUE'),
	'0', 'every delivery ended in a successful ack or nack (no lapse, no stale receipt)');
is($q->('SELECT count(*) FROM deliveries d JOIN processed p USING (msg_id) WHERE d.read_ord > p.ord'),
	'0', 'no message was delivered after its ack');
is($q->(q{SELECT count(*) FROM deliveries WHERE outcome = 'ack'}), $total, 'one acked delivery per message');
is( $q->(q{
	SELECT count(*) FROM (SELECT attempts, row_number() OVER (PARTITION BY msg_id ORDER BY read_ord) AS n
	                        FROM deliveries) s WHERE attempts <> n}),
	'0', 'attempts counts the deliveries of a message');
# per key, by read order: each delivery starts after the previous one of the
# key ended, is the same message after a nack and the next seq after an ack
my $overlaps = $q->(q{
	SELECT count(*) FROM (SELECT read_ord, lag(end_ord) OVER w AS prev_end FROM deliveries
	                      WINDOW w AS (PARTITION BY k ORDER BY read_ord)) s
	 WHERE read_ord < prev_end});
is($overlaps, '0', 'a key never had two messages in flight (deliveries of a key never overlap)');
is( $q->(q{
	SELECT count(*) FROM (SELECT msg_id, seq, lag(msg_id) OVER w AS prev_id, lag(seq) OVER w AS prev_seq,
	                             lag(outcome) OVER w AS prev_outcome
	                        FROM deliveries WINDOW w AS (PARTITION BY k ORDER BY read_ord)) s
	 WHERE CASE WHEN prev_id IS NULL THEN seq <> 1
	            WHEN prev_outcome = 'nack' THEN msg_id <> prev_id
	            ELSE seq <> prev_seq + 1 END}),
	'0', 'per key, the next delivery after a nack is the same message, after an ack the next seq');
if ($overlaps ne '0')
{
	diag($q->(q{
		SELECT string_agg(format('key %s: seq %s read at %s while seq %s (read at %s) ended at %s',
		                         k, seq, read_ord, prev_seq, prev_read, prev_end), E'\n')
		  FROM (SELECT * FROM (SELECT k, seq, read_ord, lag(seq) OVER w AS prev_seq,
		                              lag(read_ord) OVER w AS prev_read, lag(end_ord) OVER w AS prev_end
		                         FROM deliveries WINDOW w AS (PARTITION BY k ORDER BY read_ord)) s
		         WHERE read_ord < prev_end LIMIT 10) v}));
}

my $nacks = $q->(q{SELECT count(*) FROM deliveries WHERE outcome = 'nack'});
cmp_ok($nacks, '>', 0, 'transient failures happened (nacked deliveries)');

# ---- the queue is empty
is($q->(q{SELECT depth, in_flight, delayed, blocked, dead_lettered FROM mq.metrics('ks')}),
	'0|0|0|0|0', 'the queue ends empty, nothing dead-lettered');

my $per_worker = $q->(q{SELECT string_agg(n::text, ' ' ORDER BY worker) FROM
	(SELECT worker, count(*) AS n FROM processed GROUP BY worker) s});
note(sprintf('%d messages, %d keys, %d workers: sent in %.1f s, processed in %.1f s (%.0f/s), '
	  . '%d nacks, processed per worker: %s',
	$total, $nkeys, $nworkers, $send_s, $run_s, $total / ($run_s || 1), $nacks, $per_worker));

$node->stop;
done_testing();
