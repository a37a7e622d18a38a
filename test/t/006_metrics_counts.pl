# The counts behind mq.metrics (src/metrics.c, state.c) under concurrency.
#
# mq.metrics does not count a queue's tables: it keeps counts by state
# (ready, in flight, delayed, blocked) that every change adds to when its
# transaction commits, starting from one count of the tables made with a
# snapshot it keeps.  Here 4 workers churn one keyed queue with every kind
# of change (sends keyed and unkeyed, delayed and not, batches big enough to
# rotate and relocate segments, claims that lapse, acks, nacks with and
# without a backoff, releases by extend 0, rollbacks, rolled-back
# savepoints, dead letters), while a 5th session keeps throwing the counts
# away and calling mq.metrics, so that counts are made again and again while
# changes commit, and runs mq.maintain.  When all have stopped, the kept
# counts must equal a fresh count of the tables, for the queue and for its
# dead-letter queue; and again after segments are relocated into the
# delayed table.  Nothing here asserts timings.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $run_s = 20;

my $node = PostgreSQL::Test::Cluster->new('counts');
$node->init;
# the background worker's maintenance would change the queue between the
# two metrics calls compared at the end: the recounter runs it instead; and
# the release of the workers' claims when their sessions end would too
# (a release-only pass, whatever the interval), so they stamp nothing
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'mq'\nmq.maintenance_interval = 3600000\nmq.release_on_session_end = off");
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('mc.dead');
SELECT mq.create_queue('mc', ordering => 'key', max_attempts => 3, dead_letter_queue => 'mc.dead',
                       retry_delay => '0', visibility_timeout => '1 hour');

CREATE PROCEDURE churn(p_worker int, p_deadline timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    m record;
    r float8;
    v_key text;
BEGIN
    WHILE clock_timestamp() < p_deadline LOOP
        r := random();
        v_key := CASE WHEN random() < 0.5 THEN 'k' || (random() * 40)::int END;
        IF r < 0.25 THEN
            PERFORM mq.send('mc', to_jsonb(p_worker), v_key,
                            delay => CASE WHEN random() < 0.2 THEN interval '1 hour' ELSE interval '0' END);
        ELSIF r < 0.30 THEN
            PERFORM mq.send_batch('mc', array_fill('1'::jsonb, ARRAY[5]),
                                  array_fill(v_key, ARRAY[5]));
        ELSIF r < 0.301 THEN
            -- big enough that segments rotate, fill up and get relocated
            PERFORM mq.send_batch('mc', array_fill('2'::jsonb, ARRAY[20000]));
        ELSIF r < 0.35 THEN
            BEGIN
                PERFORM mq.send('mc', '3', v_key);
                PERFORM mq.ack('mc', msg_id) FROM mq.read('mc', 2);
                RAISE EXCEPTION 'undo';
            EXCEPTION WHEN raise_exception THEN
                NULL;           -- a rolled-back savepoint
            END;
        ELSE
            FOR m IN SELECT * FROM mq.read('mc', 1 + (random() * 2)::int,
                                           CASE WHEN random() < 0.1 THEN interval '0'
                                                ELSE interval '1 hour' END) LOOP
                r := random();
                IF r < 0.5 THEN
                    PERFORM mq.ack('mc', m.msg_id, m.receipt);
                ELSIF r < 0.7 THEN
                    PERFORM mq.nack('mc', m.msg_id, m.receipt);
                ELSIF r < 0.75 THEN
                    PERFORM mq.nack('mc', m.msg_id, m.receipt, interval '1 hour');
                ELSIF r < 0.85 THEN
                    PERFORM mq.extend('mc', m.msg_id, interval '0', m.receipt);
                ELSIF r < 0.9 THEN
                    PERFORM mq.archive('mc', m.msg_id, m.receipt);
                END IF;         -- else: left in flight
            END LOOP;
        END IF;
        IF random() < 0.05 THEN
            ROLLBACK;
        ELSE
            COMMIT;
        END IF;
    END LOOP;
END
$$;

CREATE PROCEDURE recount(p_deadline timestamptz)
LANGUAGE plpgsql AS $$
BEGIN
    WHILE clock_timestamp() < p_deadline LOOP
        PERFORM mq._forget_queue(queue_id) FROM mq.queue WHERE queue_name IN ('mc', 'mc.dead');
        PERFORM * FROM mq.metrics('mc');
        PERFORM * FROM mq.metrics('mc.dead');
        COMMIT;
        PERFORM pg_sleep(random() * 0.5);
        PERFORM mq.maintain();
        COMMIT;
    END LOOP;
END
$$;
});

my @procs;
foreach my $call ((map { "CALL churn($_, clock_timestamp() + interval '$run_s seconds')" } 1 .. 4),
	"CALL recount(clock_timestamp() + interval '$run_s seconds')")
{
	my %h = (err => '');
	$h{h} = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $call ],
		'<', \undef, '>', \my $out, '2>', \$h{err}, IPC::Run::timeout($run_s + 120));
	push @procs, \%h;
}
foreach my $h (@procs)
{
	$h->{h}->finish;
	is($h->{h}->result(0), 0, 'session exited cleanly') or diag($h->{err});
}

# the counts kept since the last count the recounter made, as changes
# committed all around it, against a count made now that nothing runs
my $cols = 'depth, in_flight, delayed, blocked';
my %kept = map { $_ => $node->safe_psql('postgres', "SELECT $cols FROM mq.metrics('$_')") } qw(mc mc.dead);
$node->safe_psql('postgres', 'SELECT mq._forget_queue(queue_id) FROM mq.queue');
foreach my $q (qw(mc mc.dead))
{
	my $fresh = $node->safe_psql('postgres', "SELECT $cols FROM mq.metrics('$q')");
	is($kept{$q}, $fresh, "$q: the kept counts ($cols) equal a fresh count");
}
# then, with the counts kept, rotations with no free segment left: each
# relocates the oldest segment's messages (3,000, below the 4,096 that a
# relocation moves at most) into the delayed table; the sequence is moved
# on as 70,000 sends would, so that each pass rotates
$node->safe_psql('postgres', q{
DO $$
DECLARE
    v_seq regclass := format('mq.q_%s_seq', (SELECT queue_id FROM mq.queue WHERE queue_name = 'mc'));
BEGIN
    -- what the churn left ready is consumed first: a backlog is not relocated
    WHILE (SELECT count(mq.ack('mc', m.msg_id, m.receipt)) FROM mq.read('mc', 10000) m) > 0 LOOP
    END LOOP;
    FOR i IN 1..5 LOOP
        PERFORM mq.send_batch('mc', array_fill('4'::jsonb, ARRAY[3000]));
        PERFORM setval(v_seq, nextval(v_seq) + 70000);
        PERFORM mq.maintain();
    END LOOP;
END
$$;
});
cmp_ok($node->safe_psql('postgres', q{
	SELECT (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM mq.q_%s_d', queue_id),
	                                             false, true, '')))[1]::text::bigint
	  FROM mq.queue WHERE queue_name = 'mc'}), '>=', 3000, 'a segment was relocated')
  or diag($node->safe_psql('postgres', q{SELECT string_agg(format('%s:%s:%s', segment, state, lo), ' ') FROM mq.segment}));
%kept = map { $_ => $node->safe_psql('postgres', "SELECT $cols FROM mq.metrics('$_')") } qw(mc mc.dead);
$node->safe_psql('postgres', 'SELECT mq._forget_queue(queue_id) FROM mq.queue');
is($kept{mc}, $node->safe_psql('postgres', "SELECT $cols FROM mq.metrics('mc')"),
	'mc: the kept counts still equal a fresh count after relocations');

my ($sent, $segments, $dead) = split /\|/, $node->safe_psql('postgres', q{
	SELECT (SELECT total_sent FROM mq.metrics('mc')),
	       (SELECT count(*) FROM mq.segment s JOIN mq.queue q USING (queue_id)
	         WHERE q.queue_name = 'mc' AND s.state <> 'free'),
	       (SELECT total_sent FROM mq.metrics('mc.dead'))});
cmp_ok($sent, '>', 65536, "enough sent ($sent) for segments to rotate");
cmp_ok($dead, '>', 0, "dead letters happened ($dead)");
note("mc: $kept{mc} (depth|in_flight|delayed|blocked), $segments segments in use");

$node->stop;
done_testing();
