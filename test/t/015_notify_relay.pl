# LISTEN/NOTIFY through the relay (mq preloaded, src/relay.c): producers
# never NOTIFY themselves; a background worker of the database notifies
# "mq.<queue_name>" after a commit that sent to the queue.
#
#   - a plain LISTEN "mq.Emails" (no mq.listen anywhere) is notified after a
#     committed send, never by the producer's own backend, and not after a
#     rolled-back send;
#   - one transaction of several sends gives one notification; commits
#     made while the relay is held up (it waits for a lock on mq.queue)
#     are coalesced into one more notification;
#   - the cases of mq.listen/mq.unlisten that the listener count of 0.1.0
#     got wrong: two queues whose ids are 1024 apart (one wake slot), one
#     unlistened, the other still notified; a rolled-back mq.unlisten
#     leaves the session listening and notified;
#   - a transaction with a send can be prepared; it notifies nobody;
#   - a relay terminated while it holds marks it has not notified yet
#     (pg_terminate_backend) is replaced and the notification arrives;
#   - a relay killed with SIGKILL makes the postmaster restart every
#     process (the listener's session ends too); afterwards a new relay
#     notifies a new listener.
#
# A negative check ("no notification of X") waits for a later notification
# of another queue, sent after X: the relay notifies in the order it found
# the marks, so a notification of X would have come first or with it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('relay');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.database = ''
restart_after_crash = on
max_prepared_transactions = 2
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('Emails');
SELECT mq.create_queue('barrier');
SELECT mq.create_queue('quiet', notify => false);
});

# A listener: a background psql and every notification it printed so far.
sub listener
{
	my ($channels) = @_;
	my $l = { psql => $node->background_psql('postgres'), seen => [] };
	$l->{pid} = $l->{psql}->query_safe('SELECT pg_backend_pid()');
	$l->{psql}->query_safe($_) for @$channels;
	return $l;
}

# Run a query in the listener, keep the notifications it printed.
sub listener_query
{
	my ($l, $sql) = @_;
	my $out = $l->{psql}->query_safe($sql);
	my @rest;
	for my $line (split /\n/, $out)
	{
		if ($line =~ /^Asynchronous notification "([^"]+)" received from server process with PID (\d+)\.$/)
		{
			push @{ $l->{seen} }, { channel => $1, pid => $2 };
		}
		else
		{
			push @rest, $line;
		}
	}
	return join("\n", @rest);
}

# Wait until the listener got a notification of channel; return and forget
# every notification seen so far.
sub wait_for
{
	my ($l, $channel) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (!grep { $_->{channel} eq $channel } @{ $l->{seen} })
	{
		die "no notification of $channel" if time > $deadline;
		listener_query($l, 'SELECT pg_sleep(0.01)');
	}
	my @seen = @{ $l->{seen} };
	$l->{seen} = [];
	return @seen;
}

sub count_of
{
	my ($channel, @seen) = @_;
	return scalar grep { $_->{channel} eq $channel } @seen;
}

# Wait until a relay (other than the one of pid $not) waits for the lock
# on mq.queue.
sub relay_waits
{
	my ($not) = @_;
	$node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
 WHERE a.backend_type = 'mq notify relay' AND NOT l.granted
   AND l.relation = 'mq.queue'::regclass AND a.pid <> } . ($not // 0))
	  or die 'no relay waits for the lock';
}

sub relay_pid
{
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'mq notify relay'")
	  or die "no relay runs";
	return $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'mq notify relay'");
}

my $l = listener(['LISTEN "mq.Emails"', 'LISTEN "mq.barrier"', 'LISTEN "mq.quiet"']);

# a committed send: one notification, from the relay, not from the producer
my $producer = $node->background_psql('postgres');
my $producer_pid = $producer->query_safe('SELECT pg_backend_pid()');
$producer->query_safe(q{
BEGIN;
SELECT mq.send('Emails', '{}');
SELECT count(*) FROM mq.send_batch('Emails', ARRAY['{}', '{}']::jsonb[]);
SELECT mq.send('quiet', '{}');
COMMIT;
});
my @seen = wait_for($l, 'mq.Emails');
is(count_of('mq.Emails', @seen), 1, 'plain LISTEN: one notification for a transaction of three sends');
ok(!grep({ $_->{pid} == $producer_pid } @seen), 'the producer did not notify');

# a rolled-back send, and a queue created with notify => false: nothing
$producer->query_safe(q{
BEGIN;
SELECT mq.send('Emails', '{}');
ROLLBACK;
SELECT mq.send('quiet', '{}');
SELECT mq.send('barrier', '{}');
});
@seen = wait_for($l, 'mq.barrier');
is(count_of('mq.Emails', @seen), 0, 'no notification after a rolled-back send');
is(count_of('mq.quiet', @seen), 0, 'none for a queue with notify => false');

# A prepared transaction with a send: PREPARE works while a session listens
# (a producer's own NOTIFY made it fail); its send notifies nobody.
$producer->query_safe(q{
BEGIN;
SELECT mq.send('Emails', '{}');
PREPARE TRANSACTION 'p1';
COMMIT PREPARED 'p1';
SELECT mq.send('barrier', '{}');
});
@seen = wait_for($l, 'mq.barrier');
is(count_of('mq.Emails', @seen), 0, 'a prepared send can be prepared and notifies nobody');

# Coalescing: the relay, holding the marks of one commit, waits for a lock
# on mq.queue; ten more commits meanwhile give one more notification.
my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN; LOCK TABLE mq.queue IN ACCESS EXCLUSIVE MODE');
$producer->query_safe(q{SELECT mq.send('Emails', '{}')});
relay_waits();
$producer->query_safe(q{SELECT mq.send('Emails', '{}')}) for 1 .. 10;
$locker->query_safe('COMMIT');
$producer->query_safe(q{SELECT mq.send('barrier', '{}')});
@seen = wait_for($l, 'mq.barrier');
is(count_of('mq.Emails', @seen), 2, 'eleven commits, the last ten while the relay waited: two notifications');

# A relay terminated while it holds marks: they are put back, a new relay
# notifies them.
$locker->query_safe('BEGIN; LOCK TABLE mq.queue IN ACCESS EXCLUSIVE MODE');
$producer->query_safe(q{SELECT mq.send('Emails', '{}')});
relay_waits();
my $relay = relay_pid();
$node->safe_psql('postgres', "SELECT pg_terminate_backend($relay)");
relay_waits($relay);
$locker->query_safe('COMMIT');
@seen = wait_for($l, 'mq.Emails');
is(count_of('mq.Emails', @seen), 1, 'a terminated relay\'s marks are notified by the next relay');

# Queues in one wake slot (ids 1024 apart), listened to through mq.listen:
# unlistening one used to drop the slot's count, and the other's senders
# stopped notifying.
$node->safe_psql('postgres', q{
SELECT setval('mq.queue_queue_id_seq', 5000);
SELECT mq.create_queue('slot_a');
SELECT setval('mq.queue_queue_id_seq', 5000 + 1024);
SELECT mq.create_queue('slot_b');
});
is($node->safe_psql('postgres',
		"SELECT max(queue_id) - min(queue_id) FROM mq.queue WHERE queue_name IN ('slot_a', 'slot_b')"),
	'1024', 'slot_a and slot_b share a slot');
listener_query($l, q{SELECT mq.listen('slot_a'), mq.listen('slot_b')});
is(listener_query($l, q{SELECT mq.unlisten('slot_a')}), 't', 'unlisten: the session was listening');
$producer->query_safe(q{SELECT mq.send('slot_b', '{}')});
@seen = wait_for($l, 'mq.slot_b');
is(count_of('mq.slot_b', @seen), 1, 'the queue still listened to in a shared slot is notified');
is(count_of('mq.slot_a', @seen), 0, 'the unlistened one is not');

# A rolled-back mq.unlisten: still listening, still notified.
listener_query($l, q{BEGIN; SELECT mq.unlisten('Emails'); ROLLBACK});
is(listener_query($l, q{SELECT 'mq.Emails' = ANY (SELECT pg_listening_channels())}), 't',
	'a rolled-back unlisten leaves the session listening');
$producer->query_safe(q{SELECT mq.send('Emails', '{}')});
@seen = wait_for($l, 'mq.Emails');
is(count_of('mq.Emails', @seen), 1, 'and notified');
is(listener_query($l, q{SELECT mq.unlisten('Emails')}), 't', 'unlisten returns true when listening');
is(listener_query($l, q{SELECT mq.unlisten('Emails')}), 'f', 'and false when not');

# SIGKILL of the relay (held up by the lock, so that it runs): the
# postmaster ends every process and restarts.
$locker->query_safe('BEGIN; LOCK TABLE mq.queue IN ACCESS EXCLUSIVE MODE');
$producer->query_safe(q{SELECT mq.send('Emails', '{}')});
relay_waits();
$relay = relay_pid();
kill 'KILL', $relay;
eval { $_->quit } for ($producer, $locker, $l->{psql});
$node->poll_query_until('postgres', 'SELECT true') or die 'the server did not restart';
ok($node->log_contains("mq notify relay.*was terminated by signal 9"), 'the kill restarted the server');
$l = listener(['LISTEN "mq.Emails"']);
$node->safe_psql('postgres', q{SELECT mq.send('Emails', '{}')});
@seen = wait_for($l, 'mq.Emails');
is(count_of('mq.Emails', @seen), 1, 'after the restart a new relay notifies');
$l->{psql}->quit;

$node->stop;
done_testing();
