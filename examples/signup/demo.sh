#!/usr/bin/env bash
# examples/signup/demo.sh: the signup demo, end to end, with its own checks.
#
#   examples/signup/demo.sh            # about a minute
#   examples/signup/demo.sh --short    # about 20-25 s (CI)
#
# pgbench plays the web application: each signup inserts a user, sends the
# welcome email to queue `emails` and the onboarding SMS sequence (welcome,
# product tour, check-in) to the keyed queue `sms` (key = user id), all in
# one transaction; one in ten signups rolls back.  mq-signup-worker
# processes drain both queues with long polling, with transient failures
# (retried with backoff) and bad addresses or phone numbers (dead-lettered
# after 4 attempts).  When the queues are drained the demo checks that every
# committed signup got exactly one email outcome and three SMS outcomes, no
# one got a message twice, rolled-back signups got nothing, and every user's
# SMS went out in step order (order violations = 0).
# It prints each check as PASS/FAIL and exits non-zero if any failed.
# See README.md for the options and the environment.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
WORKER_BIN=$HERE/mq-signup-worker

# ---- options -----------------------------------------------------------------
SHORT=0
KEEP=${MQ_DEMO_KEEP:-0}
WORKERS=${MQ_DEMO_WORKERS:-4}
SMS_WORKERS=${MQ_DEMO_SMS_WORKERS:-4}
CLIENTS=4
TRANSIENT_FAIL=0.1      # share of email provider calls that fail with a 503
PERMANENT_FAIL=0.01     # share of addresses that always fail (by user_id hash)
SMS_TRANSIENT_FAIL=0.15 # share of SMS provider calls that fail with a 503
SMS_PERMANENT_FAIL=0.01 # share of phone numbers that always fail (other end of the hash)
CHECKIN_DELAY=2         # seconds; the check-in SMS is sent with this delay
WAIT=5                  # long polling: how long a worker's mq.read waits on an empty queue

usage() {
	sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
	cat <<'EOF'

Options:
  --short               short run (CI): about 20-25 s
  --workers N           number of email worker processes (default 4)
  --sms-workers N       number of SMS worker processes (default 4)
  --seconds N           how long pgbench signs users up
  --signup-rate N       signups per second offered by pgbench (incl. rollbacks)
  --provider-rate N     email provider limit, emails per second, shared by the email workers
  --sms-rate N          SMS provider limit, SMS per second, shared by the SMS workers
  --checkin-delay S     delay of the check-in SMS, seconds (default 2; 0 for none)
  --keep                keep the temporary cluster and the logs
EOF
}

SECONDS_OPT='' SIGNUP_RATE_OPT='' PROVIDER_RATE_OPT='' SMS_RATE_OPT=''
while [ $# -gt 0 ]; do
	case $1 in
		--short) SHORT=1 ;;
		--workers) WORKERS=$2; shift ;;
		--sms-workers) SMS_WORKERS=$2; shift ;;
		--sms-rate) SMS_RATE_OPT=$2; shift ;;
		--checkin-delay) CHECKIN_DELAY=$2; shift ;;
		--seconds) SECONDS_OPT=$2; shift ;;
		--signup-rate) SIGNUP_RATE_OPT=$2; shift ;;
		--provider-rate) PROVIDER_RATE_OPT=$2; shift ;;
		--keep) KEEP=1 ;;
		-h|--help) usage; exit 0 ;;
		*) echo "demo.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

if [ "$SHORT" = 1 ]; then
	# The providers keep up with the signups: the queues stay short.
	SIGNUP_SECONDS=12 SIGNUP_RATE=40 PROVIDER_RATE=60 SMS_RATE=200 DRAIN_TIMEOUT=45
else
	# Signups outrun the email provider: the queue absorbs the backlog while
	# the signup transactions stay fast, and drains after the rush.  The
	# SMS provider keeps up (3 SMS per signup).
	SIGNUP_SECONDS=30 SIGNUP_RATE=60 PROVIDER_RATE=40 SMS_RATE=240 DRAIN_TIMEOUT=120
fi
SIGNUP_SECONDS=${SECONDS_OPT:-$SIGNUP_SECONDS}
SIGNUP_RATE=${SIGNUP_RATE_OPT:-$SIGNUP_RATE}
PROVIDER_RATE=${PROVIDER_RATE_OPT:-$PROVIDER_RATE}
SMS_RATE=${SMS_RATE_OPT:-$SMS_RATE}
# A provider's limit is split evenly: each worker has its own token bucket.
WORKER_RATE=$(awk -v r="$PROVIDER_RATE" -v w="$WORKERS" 'BEGIN { printf "%.3f", r / w }')
SMS_WORKER_RATE=$(awk -v r="$SMS_RATE" -v w="$SMS_WORKERS" 'BEGIN { printf "%.3f", r / w }')
# The bad-phone-number rule of worker.c (--mode sms), as an integer bound:
#   bad(user_id) := (user_id * 2654435761) % 1000000 >= SMS_BAD_FROM
SMS_BAD_FROM=$(awk -v p="$SMS_PERMANENT_FAIL" 'BEGIN { printf "%d", 1000000 - int(p * 1e6 + 0.5) }')

say() { printf '== %s\n' "$*"; }

# ---- state for cleanup -------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mq-signup-demo.XXXXXX")
chmod 755 "$WORK"
DATA=
SERVER_STARTED=0
WORKER_PIDS=()
PGBENCH_PID=
if [ "$(id -u)" -eq 0 ]; then
	AS_PG=(runuser -u postgres --)    # initdb and postgres refuse to run as root
else
	AS_PG=()
fi

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	for pid in ${PGBENCH_PID:+"$PGBENCH_PID"} ${WORKER_PIDS[@]+"${WORKER_PIDS[@]}"}; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in ${PGBENCH_PID:+"$PGBENCH_PID"} ${WORKER_PIDS[@]+"${WORKER_PIDS[@]}"}; do
		wait "$pid" 2>/dev/null || true
	done
	if [ "$SERVER_STARTED" = 1 ]; then
		"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 ||
			"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
	fi
	if [ "$KEEP" = 1 ]; then
		echo "demo.sh: kept $WORK"
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- 1. install mq and build the worker --------------------------------------
if [ "${MQ_SKIP_SETUP:-0}" != 1 ]; then
	if [ -x "$REPO/test/setup.sh" ]; then
		say "test/setup.sh (packages, build, install)"
		"$REPO/test/setup.sh"
	else
		say "test/setup.sh not found: make && make install"
		make -C "$REPO"
		make -C "$REPO" install
	fi
fi
make -s --no-print-directory -C "$HERE" mq-signup-worker

# ---- 2. a server -------------------------------------------------------------
if [ -n "${PGHOST:-}" ] || [ -n "${PGPORT:-}" ]; then
	# The user's server: a fresh database mq_demo, left in place afterwards.
	# Needs a role allowed to CREATE DATABASE and CREATE EXTENSION mq.
	DB=${MQ_DEMO_DB:-mq_demo}
	say "using the server at PGHOST=${PGHOST:-} PGPORT=${PGPORT:-}: database $DB (dropped and recreated)"
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres \
		-c "DROP DATABASE IF EXISTS \"$DB\"" -c "CREATE DATABASE \"$DB\""
	export PGDATABASE=$DB
else
	# A throwaway cluster, Unix socket only, removed on exit.
	PORT=${MQ_DEMO_PORT:-55400}
	# data, socket and server log in a directory the server's user owns
	PGDIR=$WORK/pg
	DATA=$PGDIR/data
	mkdir "$PGDIR"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$PGDIR"
	say "throwaway cluster in $DATA (socket in $PGDIR, port $PORT)"
	if ! "${AS_PG[@]}" "$PG_BIN/initdb" -D "$DATA" -U postgres -A trust \
			--no-locale -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1; then
		cat "$WORK/initdb.log" >&2
		echo "demo.sh: initdb failed" >&2
		exit 1
	fi
	{
		echo "port = $PORT"
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$PGDIR'"
		# commit times of the signups, for the latency figures
		echo "track_commit_timestamp = on"
		# preload mq if the project's test configuration does
		grep -E '^[[:space:]]*shared_preload_libraries' "$REPO/test/mq.conf" 2>/dev/null || true
	} >"$WORK/demo.conf"
	"${AS_PG[@]}" sh -c "cat '$WORK/demo.conf' >> '$DATA/postgresql.conf'"
	if ! "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -l "$PGDIR/server.log" -w -t 60 start >/dev/null; then
		cat "$PGDIR/server.log" >&2
		echo "demo.sh: the server did not start" >&2
		exit 1
	fi
	SERVER_STARTED=1
	export PGHOST=$PGDIR PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
	unset PGSERVICE PGOPTIONS
fi

# one value / rows of values, unaligned, no headers
psql_v() { "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }

# ---- 3. schema: the extension, the queues, the application tables ------------
say "CREATE EXTENSION mq; queues emails, emails_dlq, sms (keyed), sms_dlq; tables users, deliveries, sms_*"
"$PG_BIN/psql" -X -q -o /dev/null -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION mq;
SELECT mq.create_queue('emails_dlq');
SELECT mq.create_queue('emails',
                       visibility_timeout => '10 seconds',
                       max_attempts => 4,
                       dead_letter_queue => 'emails_dlq',
                       retry_delay => '200 ms',
                       retry_backoff => 2);
-- The onboarding SMS: keyed by user id, so a user's steps go out in order.
SELECT mq.create_queue('sms_dlq');
-- max_attempts 3: a bad phone number is given up after 0.2 s + 0.4 s of
-- backoff per step, and now and then a message fails 3 times transiently
-- (0.15^3), is dead-lettered, and its user's later steps go out anyway.
SELECT mq.create_queue('sms',
                       visibility_timeout => '10 seconds',
                       max_attempts => 3,
                       dead_letter_queue => 'sms_dlq',
                       retry_delay => '200 ms',
                       retry_backoff => 2,
                       ordering => 'key');

CREATE TABLE users (
    id         bigserial PRIMARY KEY,
    email      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- One row per email sent, written in the worker's ack transaction.  No
-- unique constraint on purpose: a duplicate delivery is what the demo
-- checks for, so it must be able to happen.
CREATE TABLE deliveries (
    user_id      bigint NOT NULL,
    msg_id       bigint NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker       int NOT NULL
);
-- Rolled-back signups leave no row; they count themselves here
-- (sequences are not transactional).
CREATE SEQUENCE signup_rollbacks;

-- The SMS workers' records, ordered by one global sequence (timestamps
-- from different sessions are not a reliable order):
--   sms_claims        every hand-out of an SMS message, logged by the
--                     claiming statement; claim_seq is taken after mq.read
--                     returned
--   sms_deliveries    one row per SMS sent, written in the ack transaction
--   sms_dead_letters  one row per SMS given up, written in the transaction
--                     of the nack that dead-lettered it
-- seq in the last two is taken inside the outcome's transaction, before its
-- commit, and that commit is what lets the key's next step be handed out.
CREATE SEQUENCE sms_seq;
CREATE TABLE sms_claims (
    claim_seq  bigint NOT NULL,
    user_id    bigint NOT NULL,
    step       int NOT NULL,
    msg_id     bigint NOT NULL,
    attempt    int NOT NULL,
    worker     int NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE sms_deliveries (
    seq          bigint NOT NULL DEFAULT nextval('sms_seq'),
    user_id      bigint NOT NULL,
    step         int NOT NULL,
    msg_id       bigint NOT NULL,
    claim_seq    bigint NOT NULL,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker       int NOT NULL
);
CREATE TABLE sms_dead_letters (
    seq              bigint NOT NULL DEFAULT nextval('sms_seq'),
    user_id          bigint NOT NULL,
    step             int NOT NULL,
    msg_id           bigint NOT NULL,
    claim_seq        bigint NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker           int NOT NULL,
    error            text
);
SQL
TRACK_COMMIT_TS=$(psql_v -c "SHOW track_commit_timestamp")

# ---- 4. workers ----------------------------------------------------------------
say "starting $WORKERS email workers: provider limit $PROVIDER_RATE emails/s ($WORKER_RATE/s each), $TRANSIENT_FAIL transient failures, $PERMANENT_FAIL bad addresses"
for i in $(seq 1 "$WORKERS"); do
	"$WORKER_BIN" --mode email --id "$i" --queue emails --batch 10 --vt 10 --wait "$WAIT" \
		--rate "$WORKER_RATE/s" --work-ms 5 \
		--transient-fail "$TRANSIENT_FAIL" --permanent-fail "$PERMANENT_FAIL" \
		>"$WORK/worker$i.log" 2>&1 &
	WORKER_PIDS+=($!)
done
say "starting $SMS_WORKERS SMS workers: provider limit $SMS_RATE SMS/s ($SMS_WORKER_RATE/s each), $SMS_TRANSIENT_FAIL transient failures, $SMS_PERMANENT_FAIL bad phone numbers"
for i in $(seq 1 "$SMS_WORKERS"); do
	"$WORKER_BIN" --mode sms --id "$i" --queue sms --batch 10 --vt 10 --wait "$WAIT" \
		--rate "$SMS_WORKER_RATE/s" --work-ms 5 \
		--transient-fail "$SMS_TRANSIENT_FAIL" --permanent-fail "$SMS_PERMANENT_FAIL" \
		>"$WORK/sms-worker$i.log" 2>&1 &
	WORKER_PIDS+=($!)
done

# ---- 5. signups ------------------------------------------------------------------
say "pgbench: $CLIENTS clients, $SIGNUP_RATE signups/s for $SIGNUP_SECONDS s (9 in 10 commit, 1 in 10 rolls back); check-in SMS delayed ${CHECKIN_DELAY}s"
"$PG_BIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$SIGNUP_SECONDS" -R "$SIGNUP_RATE" \
	-D checkin_delay="$CHECKIN_DELAY" \
	-f "$HERE/signup.sql@9" -f "$HERE/signup_rollback.sql@1" \
	>"$WORK/pgbench.log" 2>&1 &
PGBENCH_PID=$!

# ---- 6. watch until pgbench is done and the queues are drained -----------------
# Two lines every 2 s.  mq.maintain() dead-letters messages whose last
# attempt's visibility timeout lapsed (none expected here: no worker dies).
STATUS_SQL="SELECT (SELECT count(*) FROM users),
       (SELECT count(*) FROM deliveries),
       m.depth, m.in_flight, m.delayed,
       (SELECT depth + in_flight + delayed FROM mq.metrics('emails_dlq')),
       (SELECT count(*) FROM sms_deliveries),
       s.depth, s.in_flight, s.delayed, s.blocked,
       (SELECT depth + in_flight + delayed FROM mq.metrics('sms_dlq')),
       (SELECT mq.maintain())
  FROM mq.metrics('emails') m, mq.metrics('sms') s"
start=$(date +%s)
pgbench_rc=
drained=0
max_backlog=0
max_sms_backlog=0
last_print=-2
while :; do
	now=$(($(date +%s) - start))
	if [ -z "$pgbench_rc" ] && ! kill -0 "$PGBENCH_PID" 2>/dev/null; then
		if wait "$PGBENCH_PID"; then pgbench_rc=0; else pgbench_rc=$?; fi
		PGBENCH_PID=
		pgbench_done_at=$now
		say "pgbench finished after ${now}s (exit $pgbench_rc); draining the queue"
	fi
	n_users=
	IFS='|' read -r n_users n_deliv depth in_flight delayed dlq \
		n_sms s_depth s_in_flight s_delayed s_blocked s_dlq _ < <(psql_v -c "$STATUS_SQL")
	if [ -z "$n_users" ]; then
		echo "demo.sh: could not read the queue metrics" >&2
		exit 1
	fi
	backlog=$((depth + in_flight + delayed))
	[ "$backlog" -gt "$max_backlog" ] && max_backlog=$backlog
	sms_backlog=$((s_depth + s_in_flight + s_delayed + s_blocked))
	[ "$sms_backlog" -gt "$max_sms_backlog" ] && max_sms_backlog=$sms_backlog
	if [ $((now - last_print)) -ge 2 ]; then
		printf '   t=%3ds  signups=%-6s emails: delivered=%-6s ready=%-5s in_flight=%-4s delayed=%-4s             dlq=%s\n' \
			"$now" "$n_users" "$n_deliv" "$depth" "$in_flight" "$delayed" "$dlq"
		printf '                         sms:    delivered=%-6s ready=%-5s in_flight=%-4s delayed=%-4s blocked=%-5s dlq=%s\n' \
			"$n_sms" "$s_depth" "$s_in_flight" "$s_delayed" "$s_blocked" "$s_dlq"
		last_print=$now
	fi
	if [ -n "$pgbench_rc" ]; then
		if [ "$backlog" -eq 0 ] && [ "$sms_backlog" -eq 0 ]; then
			drained=1
			break
		fi
		if [ $((now - pgbench_done_at)) -ge "$DRAIN_TIMEOUT" ]; then
			say "queues not drained ${DRAIN_TIMEOUT}s after pgbench finished"
			break
		fi
	fi
	for pid in "${WORKER_PIDS[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			say "FAIL: a worker exited early:"
			cat "$WORK"/*worker*.log
			exit 1
		fi
	done
	sleep 0.5
done
drain_s=$(($(date +%s) - start - ${pgbench_done_at:-0}))

# ---- 7. stop the workers: SIGTERM, they finish the current message -------------
say "stopping the workers (SIGTERM)"
workers_ok=1
for pid in "${WORKER_PIDS[@]}"; do
	kill -TERM "$pid" 2>/dev/null || true
done
for pid in "${WORKER_PIDS[@]}"; do
	if ! wait "$pid"; then workers_ok=0; fi
done
WORKER_PIDS=()
for i in $(seq 1 "$WORKERS"); do
	sed 's/^/   /' "$WORK/worker$i.log"
done
for i in $(seq 1 "$SMS_WORKERS"); do
	sed 's/^/   /' "$WORK/sms-worker$i.log"
done
if [ "$pgbench_rc" != 0 ]; then
	sed 's/^/   pgbench: /' "$WORK/pgbench.log"
fi
pgbench_failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$WORK/pgbench.log")
pgbench_latency=$(sed -n 's/^latency average = //p' "$WORK/pgbench.log")

# ---- 8. the summary --------------------------------------------------------------
# The bad-address rule of worker.c, recomputed here:
#   bad(user_id) := ((user_id * 2654435761) % 1000000) / 1e6 < PERMANENT_FAIL
if [ "$TRACK_COMMIT_TS" = on ]; then
	COMMIT_TIME="pg_xact_commit_timestamp(u.xmin)"
	COMMIT_TIME_SRC="commit time from pg_xact_commit_timestamp(users.xmin)"
else
	COMMIT_TIME="u.created_at"
	COMMIT_TIME_SRC="track_commit_timestamp is off: users.created_at (insert time, before commit)"
fi

# The dead letters are read with mq.read inside a transaction that is rolled
# back at the end, so the DLQ is left as it was.  Output: name|value lines.
SUMMARY_SQL="
BEGIN;
CREATE TEMP TABLE dlq AS
    SELECT msg_id, (payload->>'user_id')::bigint AS user_id,
           coalesce(dead_letter->>'error', last_error) AS error
      FROM mq.read('emails_dlq', 10000, '1 minute');
CREATE TEMP TABLE bad AS
    SELECT id FROM users
     WHERE ((id * 2654435761) % 1000000)::float8 / 1e6 < $PERMANENT_FAIL;
CREATE TEMP TABLE latency AS
    SELECT extract(epoch FROM d.first_delivered_at - $COMMIT_TIME) AS s
      FROM (SELECT user_id, min(delivered_at) AS first_delivered_at
              FROM deliveries GROUP BY user_id) d
      JOIN users u ON u.id = d.user_id;
SELECT 'users', count(*)::text FROM users
UNION ALL SELECT 'deliveries', count(*)::text FROM deliveries
UNION ALL SELECT 'delivered_users', count(DISTINCT user_id)::text FROM deliveries
UNION ALL SELECT 'dlq', count(*)::text FROM dlq
UNION ALL SELECT 'dlq_users', count(DISTINCT user_id)::text FROM dlq
UNION ALL SELECT 'dlq_depth', (depth + in_flight + delayed)::text FROM mq.metrics('emails_dlq')
UNION ALL SELECT 'orphan_deliveries', count(*)::text FROM deliveries d
    WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = d.user_id)
UNION ALL SELECT 'orphan_dlq', count(*)::text FROM dlq
    WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = dlq.user_id)
UNION ALL SELECT 'delivered_and_dlq', count(*)::text FROM dlq
    WHERE EXISTS (SELECT FROM deliveries d WHERE d.user_id = dlq.user_id)
UNION ALL SELECT 'rollbacks', (CASE WHEN is_called THEN last_value ELSE 0 END)::text FROM signup_rollbacks
UNION ALL SELECT 'burned_ids', ((SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM users_id_seq)
                                - (SELECT count(*) FROM users))::text
UNION ALL SELECT 'bad', count(*)::text FROM bad
UNION ALL SELECT 'bad_delivered', count(*)::text FROM bad
    WHERE EXISTS (SELECT FROM deliveries d WHERE d.user_id = bad.id)
UNION ALL SELECT 'bad_in_dlq', count(*)::text FROM bad
    WHERE EXISTS (SELECT FROM dlq WHERE dlq.user_id = bad.id)
UNION ALL SELECT 'signup_span_s', round(extract(epoch FROM max(created_at) - min(created_at)), 1)::text FROM users
UNION ALL SELECT 'delivery_span_s', round(extract(epoch FROM max(delivered_at) - min(delivered_at)), 1)::text FROM deliveries
UNION ALL SELECT 'p50', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 3)::text FROM latency
UNION ALL SELECT 'p99', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 3)::text FROM latency
UNION ALL SELECT 'max', round(max(s), 3)::text FROM latency
UNION ALL SELECT 'dlq_errors', coalesce(string_agg(error || ': ' || n, ', ' ORDER BY n DESC), 'none')
    FROM (SELECT coalesce(error, '?') AS error, count(*) AS n FROM dlq GROUP BY 1) e
UNION ALL SELECT 'by_worker', string_agg('worker ' || worker || ': ' || n, ', ' ORDER BY worker)
    FROM (SELECT worker, count(*) AS n FROM deliveries GROUP BY worker) w;

-- The onboarding SMS.
CREATE TEMP TABLE sms_dlq AS
    SELECT msg_id, (payload->>'user_id')::bigint AS user_id, (payload->>'step')::int AS step,
           coalesce(dead_letter->>'error', last_error) AS error
      FROM mq.read('sms_dlq', 10000, '1 minute');
CREATE TEMP TABLE sms_bad AS
    SELECT id FROM users WHERE (id * 2654435761) % 1000000 >= $SMS_BAD_FROM;
-- every outcome (delivered or dead-lettered) in global order
CREATE TEMP TABLE sms_outcome AS
    SELECT user_id, step, seq, claim_seq FROM sms_deliveries
    UNION ALL SELECT user_id, step, seq, claim_seq FROM sms_dead_letters;
-- order violations, two kinds, counted by user:
--  out_of_order: by seq, a user's outcomes are not in increasing step order
--  early_claim:  a step was handed out (any attempt) before the outcome of
--                an earlier step of the same user had been written
CREATE TEMP TABLE sms_out_of_order AS
    SELECT DISTINCT user_id FROM (
        SELECT user_id, step, lag(step) OVER (PARTITION BY user_id ORDER BY seq) AS prev_step
          FROM sms_outcome) o
     WHERE step <= prev_step;
CREATE TEMP TABLE sms_early_claim AS
    SELECT DISTINCT c.user_id FROM sms_claims c
      JOIN sms_outcome o ON o.user_id = c.user_id AND o.step < c.step AND o.seq > c.claim_seq;
CREATE TEMP TABLE sms_user AS
    SELECT u.id AS user_id,
           (SELECT count(DISTINCT step) FROM sms_deliveries d WHERE d.user_id = u.id) AS delivered,
           (SELECT count(*) FROM sms_dlq q WHERE q.user_id = u.id) AS dead
      FROM users u;
CREATE TEMP TABLE sms_latency AS
    SELECT d.step, extract(epoch FROM d.delivered_at - $COMMIT_TIME) AS s
      FROM sms_deliveries d JOIN users u ON u.id = d.user_id;
SELECT 'sms_rows', count(*)::text FROM sms_deliveries
UNION ALL SELECT 'sms_distinct', count(*)::text FROM (SELECT DISTINCT user_id, step FROM sms_deliveries) x
UNION ALL SELECT 'sms_users', count(DISTINCT user_id)::text FROM sms_deliveries
UNION ALL SELECT 'sms_by_step', coalesce(string_agg('step ' || step || ': ' || n, ', ' ORDER BY step), 'none')
    FROM (SELECT step, count(*) AS n FROM sms_deliveries GROUP BY step) x
UNION ALL SELECT 'sms_by_worker', coalesce(string_agg('worker ' || worker || ': ' || n, ', ' ORDER BY worker), 'none')
    FROM (SELECT worker, count(*) AS n FROM sms_deliveries GROUP BY worker) w
UNION ALL SELECT 'sms_dlq', count(*)::text FROM sms_dlq
UNION ALL SELECT 'sms_dlq_distinct', count(*)::text FROM (SELECT DISTINCT user_id, step FROM sms_dlq) x
UNION ALL SELECT 'sms_dlq_depth', (depth + in_flight + delayed)::text FROM mq.metrics('sms_dlq')
UNION ALL SELECT 'sms_dlq_errors', coalesce(string_agg(error || ': ' || n, ', ' ORDER BY n DESC), 'none')
    FROM (SELECT coalesce(error, '?') AS error, count(*) AS n FROM sms_dlq GROUP BY 1) e
UNION ALL SELECT 'sms_dead_recorded', count(*)::text FROM sms_dead_letters
UNION ALL SELECT 'sms_dead_unmatched', count(*)::text FROM (
    (SELECT user_id, step FROM sms_dlq EXCEPT ALL SELECT user_id, step FROM sms_dead_letters)
    UNION ALL
    (SELECT user_id, step FROM sms_dead_letters EXCEPT ALL SELECT user_id, step FROM sms_dlq)) x
UNION ALL SELECT 'sms_delivered_and_dlq', count(*)::text FROM sms_dlq q
    WHERE EXISTS (SELECT FROM sms_deliveries d WHERE d.user_id = q.user_id AND d.step = q.step)
UNION ALL SELECT 'sms_orphans', ((SELECT count(*) FROM sms_deliveries d
                                   WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = d.user_id))
                                + (SELECT count(*) FROM sms_dlq q
                                   WHERE NOT EXISTS (SELECT FROM users u WHERE u.id = q.user_id)))::text
UNION ALL SELECT 'sms_complete', count(*)::text FROM sms_user WHERE delivered = 3
UNION ALL SELECT 'sms_partial', count(*)::text FROM sms_user WHERE delivered BETWEEN 1 AND 2
UNION ALL SELECT 'sms_none', count(*)::text FROM sms_user WHERE delivered = 0
UNION ALL SELECT 'sms_3_outcomes', count(*)::text FROM sms_user WHERE delivered + dead = 3
UNION ALL SELECT 'sms_bad', count(*)::text FROM sms_bad
UNION ALL SELECT 'sms_bad_delivered', count(*)::text FROM sms_bad
    WHERE EXISTS (SELECT FROM sms_deliveries d WHERE d.user_id = sms_bad.id)
UNION ALL SELECT 'sms_bad_all_dlq', count(*)::text FROM sms_bad
    WHERE (SELECT count(DISTINCT step) FROM sms_dlq q WHERE q.user_id = sms_bad.id) = 3
UNION ALL SELECT 'sms_out_of_order', count(*)::text FROM sms_out_of_order
UNION ALL SELECT 'sms_early_claim', count(*)::text FROM sms_early_claim
UNION ALL SELECT 'sms_violations', count(*)::text FROM (SELECT user_id FROM sms_out_of_order
                                                       UNION SELECT user_id FROM sms_early_claim) v
UNION ALL SELECT 'sms_claims', count(*)::text FROM sms_claims
UNION ALL SELECT 'sms_retried_claims', count(*)::text FROM sms_claims WHERE attempt > 1
UNION ALL SELECT 'sms_span_s', round(extract(epoch FROM max(delivered_at) - min(delivered_at)), 1)::text FROM sms_deliveries
UNION ALL SELECT 'sms_p50', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 3)::text FROM sms_latency
UNION ALL SELECT 'sms_p99', round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 3)::text FROM sms_latency
UNION ALL SELECT 'sms_steps_latency', string_agg(format('step %s p50 %s s, p99 %s s', step, p50, p99), '; ' ORDER BY step)
    FROM (SELECT step,
                 round(percentile_cont(0.5) WITHIN GROUP (ORDER BY s)::numeric, 3) AS p50,
                 round(percentile_cont(0.99) WITHIN GROUP (ORDER BY s)::numeric, 3) AS p99
            FROM sms_latency GROUP BY step) x;
ROLLBACK;
"
declare -A S=()
while IFS='|' read -r k v; do
	[ -n "$k" ] && S[$k]=$v
done < <(psql_v -c "$SUMMARY_SQL" 2>"$WORK/summary.err" || { cat "$WORK/summary.err" >&2; })
if [ -z "${S[users]:-}" ]; then
	echo "demo.sh: the summary query failed" >&2
	exit 1
fi

per_s() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", n / s; else printf "n/a" }'; }

echo
say "summary"
printf '   %-28s %s\n' \
	"signups committed" "${S[users]} (rows in users)" \
	"signups rolled back" "${S[rollbacks]} (burned ${S[burned_ids]} user ids)" \
	"emails delivered" "${S[delivered_users]} users (${S[deliveries]} rows in deliveries; ${S[by_worker]})" \
	"dead-lettered" "${S[dlq]} messages in emails_dlq (${S[dlq_errors]})" \
	"bad addresses (by hash)" "${S[bad]} users, ${S[bad_in_dlq]} of them in the DLQ, ${S[bad_delivered]} delivered" \
	"signup throughput" "$(per_s "${S[users]}" "${S[signup_span_s]}") signups/s committed (over ${S[signup_span_s]} s); pgbench latency ${pgbench_latency:-?}" \
	"email throughput" "$(per_s "${S[deliveries]}" "${S[delivery_span_s]}") emails/s (over ${S[delivery_span_s]} s; provider limit $PROVIDER_RATE/s)" \
	"signup -> email delivered" "p50 ${S[p50]} s, p99 ${S[p99]} s, max ${S[max]} s" \
	"" "($COMMIT_TIME_SRC to deliveries.delivered_at)" \
	"email queue backlog" "max $max_backlog messages" \
	"SMS delivered" "${S[sms_rows]} (${S[sms_by_step]}) to ${S[sms_users]} users; ${S[sms_by_worker]}" \
	"SMS hand-outs" "${S[sms_claims]} claims, ${S[sms_retried_claims]} of them retries (attempt > 1)" \
	"SMS dead-lettered" "${S[sms_dlq]} messages in sms_dlq (${S[sms_dlq_errors]})" \
	"bad phone numbers (by hash)" "${S[sms_bad]} users, ${S[sms_bad_all_dlq]} with all 3 steps in the DLQ, ${S[sms_bad_delivered]} with an SMS delivered" \
	"SMS sequences complete" "${S[sms_complete]} of ${S[users]} users got all 3 steps (${S[sms_partial]} some, ${S[sms_none]} none: their other steps are dead letters)" \
	"SMS order violations" "${S[sms_violations]} users (${S[sms_out_of_order]} with outcomes out of step order, ${S[sms_early_claim]} with a step handed out before the previous one's outcome)" \
	"SMS throughput" "$(per_s "${S[sms_rows]}" "${S[sms_span_s]}") SMS/s (over ${S[sms_span_s]} s; provider limit $SMS_RATE/s)" \
	"signup -> SMS delivered" "p50 ${S[sms_p50]} s, p99 ${S[sms_p99]} s over all steps" \
	"" "${S[sms_steps_latency]}" \
	"" "(step N waits for step N-1; step 3 is sent with a ${CHECKIN_DELAY} s delay)" \
	"SMS queue backlog" "max $max_sms_backlog messages (ready + in flight + delayed + blocked)" \
	"drain" "both queues drained ${drain_s}s after the signups stopped"

echo
say "checks"
fails=0
check() {
	# check DESCRIPTION OK: OK is an arithmetic result, 1 = pass
	if [ "$2" = 1 ]; then
		printf '   PASS  %s\n' "$1"
	else
		printf '   FAIL  %s\n' "$1"
		fails=$((fails + 1))
	fi
}
users=${S[users]} deliveries=${S[deliveries]} delivered_users=${S[delivered_users]}
dlq=${S[dlq]} dlq_users=${S[dlq_users]} dlq_depth=${S[dlq_depth]}
orphan_deliveries=${S[orphan_deliveries]} orphan_dlq=${S[orphan_dlq]}
delivered_and_dlq=${S[delivered_and_dlq]} rollbacks=${S[rollbacks]} burned_ids=${S[burned_ids]}
bad=${S[bad]} bad_delivered=${S[bad_delivered]} bad_in_dlq=${S[bad_in_dlq]}

check "queues drained: emails and sms empty (nothing ready, in flight, delayed or blocked) within ${DRAIN_TIMEOUT}s after the signups" \
	$((drained == 1))
check "every committed signup has one outcome: $users users = $delivered_users delivered + $dlq dead-lettered" \
	$((users == delivered_users + dlq && dlq == dlq_users && dlq == dlq_depth && delivered_and_dlq == 0))
check "no user emailed twice: $deliveries deliveries, $delivered_users distinct users" \
	$((deliveries == delivered_users))
check "every delivery's user exists ($orphan_deliveries without one)" \
	$((orphan_deliveries == 0))
check "every dead letter's user exists ($orphan_dlq without one) and was not delivered too ($delivered_and_dlq)" \
	$((orphan_dlq == 0 && delivered_and_dlq == 0))
check "rolled-back signups sent no email: $rollbacks rolled back, their $burned_ids user ids have no delivery and no dead letter" \
	$((rollbacks > 0 && rollbacks == burned_ids && orphan_deliveries == 0 && orphan_dlq == 0))
check "every bad address was dead-lettered, never delivered ($bad_in_dlq of $bad in the DLQ, $bad_delivered delivered)" \
	$((bad_delivered == 0 && bad_in_dlq == bad))
check "pgbench ran without errors (exit ${pgbench_rc:-?}, ${pgbench_failed:-?} failed transactions)" \
	$((${pgbench_rc:-1} == 0 && ${pgbench_failed:-0} == 0))
sms_rows=${S[sms_rows]} sms_distinct=${S[sms_distinct]} sms_dlq=${S[sms_dlq]}
sms_dlq_distinct=${S[sms_dlq_distinct]} sms_dlq_depth=${S[sms_dlq_depth]}
sms_delivered_and_dlq=${S[sms_delivered_and_dlq]} sms_orphans=${S[sms_orphans]}
sms_3_outcomes=${S[sms_3_outcomes]} sms_violations=${S[sms_violations]}
sms_dead_recorded=${S[sms_dead_recorded]} sms_dead_unmatched=${S[sms_dead_unmatched]}
sms_bad=${S[sms_bad]} sms_bad_all_dlq=${S[sms_bad_all_dlq]} sms_bad_delivered=${S[sms_bad_delivered]}
check "every committed signup has 3 SMS outcomes: 3 x $users = $sms_distinct delivered + $sms_dlq dead-lettered; $sms_3_outcomes of $users users have one per step" \
	$((3 * users == sms_distinct + sms_dlq && sms_3_outcomes == users && sms_dlq == sms_dlq_distinct && sms_dlq == sms_dlq_depth && sms_delivered_and_dlq == 0))
check "no SMS sent twice: $sms_rows deliveries, $sms_distinct distinct (user, step)" \
	$((sms_rows == sms_distinct))
check "rolled-back signups got no SMS: every SMS delivery and dead letter has its user ($sms_orphans without one)" \
	$((sms_orphans == 0 && rollbacks > 0 && rollbacks == burned_ids))
check "SMS order violations = $sms_violations: each user's steps went out in order 1, 2, 3, none handed out before the previous step's outcome" \
	$((sms_violations == 0))
check "every SMS dead letter was recorded with its place in the order ($sms_dead_recorded recorded, $sms_dead_unmatched unmatched)" \
	$((sms_dead_unmatched == 0))
check "every bad phone number had all 3 steps dead-lettered, none delivered ($sms_bad_all_dlq of $sms_bad, $sms_bad_delivered delivered)" \
	$((sms_bad_all_dlq == sms_bad && sms_bad_delivered == 0))
check "workers exited 0 on SIGTERM" $((workers_ok == 1))

echo
if [ "$fails" -eq 0 ]; then
	say "all checks passed"
else
	say "$fails check(s) FAILED (logs: rerun with --keep)"
	exit 1
fi
