#!/usr/bin/env bash
# examples/signup/demo.sh: the signup demo, end to end, with its own checks.
#
#   examples/signup/demo.sh            # about a minute
#   examples/signup/demo.sh --short    # about 20-25 s (CI)
#
# pgbench plays the web application: each signup inserts a user, sends the
# welcome email to queue `emails` and the onboarding SMS sequence (welcome,
# product tour, check-in) to the keyed queue `sms` (key = user id), all in
# one transaction; one in ten signups rolls back.  The shipped mq-worker
# sends the emails (mq-worker --queue emails -- send-email.sh) under the
# queue's server-side rate limit (the provider's limit, for all workers
# together); mq-signup-worker processes send the SMS.  Both use long
# polling and see transient failures (retried with backoff) and bad
# addresses or phone numbers (dead-lettered after 4 or 3 attempts).  When
# the queues are drained the demo checks that every committed signup got
# exactly one email outcome and three SMS outcomes, no one got a message
# twice, rolled-back signups got nothing, every user's SMS went out in step
# order (order violations = 0) and the provider never saw more than its limit.
# It prints each check as PASS/FAIL and exits non-zero if any failed.
# See README.md for the options and the environment.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
WORKER_BIN=$HERE/mq-signup-worker
MQ_WORKER=${MQ_WORKER:-$PG_BIN/mq-worker}   # installed by make install

# ---- options -----------------------------------------------------------------
SHORT=0
KEEP=${MQ_DEMO_KEEP:-0}
WORKERS=${MQ_DEMO_WORKERS:-2}          # mq-worker processes for the emails
CONCURRENCY=${MQ_DEMO_CONCURRENCY:-4}  # send-email.sh commands at once per mq-worker
PROVIDER_BURST=10       # the emails queue's rate_limit_burst
SMS_WORKERS=${MQ_DEMO_SMS_WORKERS:-4}
CLIENTS=4
TRANSIENT_FAIL=0.1      # share of email provider calls that fail with a 503
PERMANENT_FAIL=0.01     # share of addresses that always fail (by user_id hash)
SMS_TRANSIENT_FAIL=0.15 # share of SMS provider calls that fail with a 503
SMS_PERMANENT_FAIL=0.01 # share of phone numbers that always fail (other end of the hash)
CHECKIN_DELAY=2         # seconds; the check-in SMS is sent with this delay
WAIT=5                  # long polling: how long a worker's mq.read waits on an empty queue
# The rate check times each provider call when send-email.sh starts, which is
# after the server handed the message out (mq-worker forks, bash starts): a
# delayed start can squeeze calls that were handed out at the limit into a
# shorter window.  The check allows this much of such delay.
CALL_DELAY_S=0.1

usage() {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
	cat <<'EOF'

Options:
  --short               short run (CI): about 20-25 s
  --workers N           number of email mq-worker processes (default 2)
  --concurrency K       send-email.sh commands run at once by each mq-worker (default 4)
  --sms-workers N       number of SMS worker processes (default 4)
  --seconds N           how long pgbench signs users up
  --signup-rate N       signups per second offered by pgbench (incl. rollbacks)
  --provider-rate N     email provider limit, emails per second for all email workers
                        together: the emails queue's rate_limit
  --provider-burst N    the emails queue's rate_limit_burst (default 10)
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
		--concurrency) CONCURRENCY=$2; shift ;;
		--provider-burst) PROVIDER_BURST=$2; shift ;;
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
# The email provider's limit is the emails queue's rate limit, enforced by the
# server for all workers together (it needs mq preloaded; see step 3 for the
# fallback).  The SMS provider's limit is split evenly: each SMS worker has its
# own token bucket.
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
if [ ! -x "$MQ_WORKER" ]; then
	echo "demo.sh: $MQ_WORKER not found: run 'make && make install' at the top of the repository (or set MQ_WORKER)" >&2
	exit 1
fi

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
		# mq preloaded: the emails queue's rate limit lives in shared memory,
		# and long polls are woken through it
		echo "shared_preload_libraries = 'mq'"
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

# A queue rate limit needs mq in shared_preload_libraries.  The throwaway
# cluster has it; the user's server may not: then the email workers limit
# themselves, each to its share of the provider's limit.
PRELOAD=$(psql_v -c "SHOW shared_preload_libraries")
if [ "$(psql_v -c "SELECT 'mq' = ANY (SELECT regexp_replace(regexp_replace(btrim(l, ' \"'), '^.*/', ''), '[.]so$', '')
                                       FROM unnest(string_to_array(current_setting('shared_preload_libraries'), ',')) l)")" = t ]; then
	RATE_MODE=server
	QUEUE_RATE="$PROVIDER_RATE/s" QUEUE_BURST=$PROVIDER_BURST
	RATE_BURST=$PROVIDER_BURST
else
	RATE_MODE=per-worker
	QUEUE_RATE='' QUEUE_BURST=''
	# send-email.sh spaces each mq-worker's calls by this interval
	RATE_INTERVAL_US=$(awk -v r="$PROVIDER_RATE" -v w="$WORKERS" 'BEGIN { printf "%d", 1e6 * w / r + 0.5 }')
	RATE_BURST=$WORKERS     # each worker may be one call ahead of its share
	say "NOTE: mq is not in this server's shared_preload_libraries (SHOW shared_preload_libraries: '$PRELOAD')."
	say "      A queue rate limit needs it (rate_limit on mq.create_queue), so the emails queue gets none."
	say "      Falling back to per-worker rate limiting: each of the $WORKERS mq-worker processes spaces its"
	say "      own send-email.sh calls at $(awk -v r="$PROVIDER_RATE" -v w="$WORKERS" 'BEGIN { printf "%g", r / w }')/s.  For the server-side limit add mq"
	say "      to shared_preload_libraries and restart the server."
fi

# ---- 3. schema: the extension, the queues, the application tables ------------
if [ "$RATE_MODE" = server ]; then
	say "CREATE EXTENSION mq; queues emails (rate_limit => '$QUEUE_RATE', rate_limit_burst => $QUEUE_BURST), emails_dlq, sms (keyed), sms_dlq; tables users, deliveries, email_*, sms_*"
else
	say "CREATE EXTENSION mq; queues emails (no rate limit: mq not preloaded), emails_dlq, sms (keyed), sms_dlq; tables users, deliveries, email_*, sms_*"
fi
"$PG_BIN/psql" -X -q -o /dev/null -v ON_ERROR_STOP=1 \
	-v rate_limit="$QUEUE_RATE" -v rate_limit_burst="$QUEUE_BURST" <<'SQL'
CREATE EXTENSION mq;
SELECT mq.create_queue('emails_dlq');
-- The email provider allows so many sends a second (a typical one: 25/min),
-- however many workers run: the queue's rate limit, a token bucket in the
-- server's shared memory, makes mq.read hand out no more than that to all
-- consumers together.  Empty :rate_limit (mq not preloaded): no limit.
SELECT mq.create_queue('emails',
                       visibility_timeout => '10 seconds',
                       max_attempts => 4,
                       dead_letter_queue => 'emails_dlq',
                       retry_delay => '200 ms',
                       retry_backoff => 2,
                       rate_limit => nullif(:'rate_limit', ''),
                       rate_limit_burst => nullif(:'rate_limit_burst', '')::integer);
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
-- One row per email sent, written by send-email.sh (run by mq-worker) before
-- it exits 0 and mq-worker acks: outside the ack's transaction.  So the
-- record is idempotent: at most one row per message (msg_id unique), and a
-- second success for a message already delivered goes to email_duplicates.
-- No constraint on user_id on purpose: two emails to one user (two messages
-- for one signup) is what the demo checks for, so it must be able to happen.
CREATE TABLE deliveries (
    user_id      bigint NOT NULL,
    msg_id       bigint NOT NULL UNIQUE,
    delivered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    worker       text NOT NULL          -- mq-worker's consumer id
);
CREATE TABLE email_duplicates (
    msg_id      bigint NOT NULL,
    user_id     bigint NOT NULL,
    attempt     int NOT NULL,
    worker      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Every provider call (every run of send-email.sh): when it started and how
-- it ended (sent, transient, bad_address).  The provider's limit counts
-- calls, failed ones too; the demo measures the rate from called_at.
CREATE TABLE email_calls (
    msg_id    bigint NOT NULL,
    attempt   int NOT NULL,
    user_id   bigint NOT NULL,
    called_at timestamptz NOT NULL,
    outcome   text NOT NULL,
    worker    text NOT NULL
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
if [ "$RATE_MODE" = server ]; then
	# what the queue really got (mq.queues), for the summary
	IFS='|' read -r RATE_LIMIT RATE_BURST < <(psql_v -c \
		"SELECT rate_limit_per_second, rate_limit_burst FROM mq.queues WHERE queue_name = 'emails'")
	RATE_DESC="the emails queue's rate limit: $RATE_LIMIT/s, burst $RATE_BURST, for all $WORKERS x $CONCURRENCY commands together"
else
	RATE_LIMIT=$PROVIDER_RATE
	RATE_DESC="per-worker limits (mq not preloaded): $WORKERS x $(awk -v r="$PROVIDER_RATE" -v w="$WORKERS" 'BEGIN { printf "%g", r / w }')/s, 1 call of burst each"
fi

# ---- 4. workers ----------------------------------------------------------------
# The emails: the shipped mq-worker runs send-email.sh once per message
# (payload on stdin, MQ_MSG_ID, MQ_ATTEMPTS, ... in the environment, the PG*
# connection variables passed on), acks on exit 0, nacks otherwise, and
# extends each claim while its command runs.
ppm() { awk -v p="$1" 'BEGIN { printf "%d", p * 1e6 + 0.5 }'; }
export DEMO_PSQL="$PG_BIN/psql" DEMO_WORK_MS=5
export DEMO_TRANSIENT_PPM=$(ppm "$TRANSIENT_FAIL") DEMO_BAD_PPM=$(ppm "$PERMANENT_FAIL")
if [ "$RATE_MODE" = per-worker ]; then
	mkdir "$WORK/rate"
	export DEMO_RATE_INTERVAL_US=$RATE_INTERVAL_US DEMO_RATE_DIR=$WORK/rate
fi
say "starting $WORKERS email workers: mq-worker --queue emails --concurrency $CONCURRENCY -- send-email.sh; provider limit $PROVIDER_RATE emails/s ($RATE_DESC), $TRANSIENT_FAIL transient failures, $PERMANENT_FAIL bad addresses"
EMAIL_PIDS=()
for i in $(seq 1 "$WORKERS"); do
	"$MQ_WORKER" --queue emails --concurrency "$CONCURRENCY" --wait "$WAIT" \
		--consumer-id "email-$i" --progress 10 --grace 10 \
		-- "$HERE/send-email.sh" \
		>"$WORK/email-worker$i.log" 2>&1 &
	EMAIL_PIDS+=($!)
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
# mq-worker: stops claiming (a waiting read is cancelled), lets running
# commands finish within --grace, reports them, prints its totals, exits 0.
say "stopping the workers (SIGTERM)"
for pid in "${WORKER_PIDS[@]}"; do
	kill -TERM "$pid" 2>/dev/null || true
done
email_ok=1 email_rcs=
for pid in "${EMAIL_PIDS[@]}"; do
	if wait "$pid"; then rc=0; else rc=$?; fi
	email_rcs+="${email_rcs:+, }$rc"
	[ "$rc" = 0 ] || email_ok=0
done
workers_ok=1
for pid in "${WORKER_PIDS[@]}"; do
	case " ${EMAIL_PIDS[*]} " in *" $pid "*) continue ;; esac
	if ! wait "$pid"; then workers_ok=0; fi
done
WORKER_PIDS=()
# mq-worker's log: its start line, warnings and errors, and its totals (not
# the per-message "failed ... nacked" lines nor the progress lines)
mqw_processed=0 mqw_failed=0 mqw_lost=0 mqw_released=0 mqw_totals=0
for i in $(seq 1 "$WORKERS"); do
	log=$WORK/email-worker$i.log
	grep -E 'consumer |warning: |error: |stopped: ' "$log" | sed "s/^/   email-$i: /" || true
	last=$(grep ' stopped: ' "$log" | tail -n 1 || true)
	if [[ $last =~ processed=([0-9]+)\ failed=([0-9]+)\ lost=([0-9]+)\ released=([0-9]+) ]]; then
		mqw_totals=$((mqw_totals + 1))
		mqw_processed=$((mqw_processed + BASH_REMATCH[1])) mqw_failed=$((mqw_failed + BASH_REMATCH[2]))
		mqw_lost=$((mqw_lost + BASH_REMATCH[3])) mqw_released=$((mqw_released + BASH_REMATCH[4]))
	fi
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
-- The provider's limit over every window: with the calls in time order
-- (i = 1, 2, ...; t_i seconds after the first), the window from call i to
-- call j holds j - i + 1 calls and the limit allows rate * (t_j - t_i) +
-- burst.  With x = i - rate * t, the largest j - i + 1 - rate * (t_j - t_i)
-- is max over j of x_j - min(x_i, i <= j) + 1: call_worst, with its j.
CREATE TEMP TABLE call_x AS
    SELECT i, s, i - $RATE_LIMIT * s AS x
      FROM (SELECT row_number() OVER (ORDER BY called_at, msg_id, attempt) AS i,
                   extract(epoch FROM called_at - min(called_at) OVER ())::float8 AS s
              FROM email_calls) c;
CREATE TEMP TABLE call_worst AS
    SELECT i AS j, s AS sj, x - min_x + 1 AS over
      FROM (SELECT i, s, x, min(x) OVER (ORDER BY i) AS min_x FROM call_x) c
     ORDER BY x - min_x DESC, i
     LIMIT 1;
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
UNION ALL SELECT 'by_worker', coalesce(string_agg(worker || ': ' || n, ', ' ORDER BY worker), 'none')
    FROM (SELECT worker, count(*) AS n FROM deliveries GROUP BY worker) w
UNION ALL SELECT 'max_per_user', coalesce(max(n), 0)::text
    FROM (SELECT count(*) AS n FROM deliveries GROUP BY user_id) x
UNION ALL SELECT 'duplicates', count(*)::text FROM email_duplicates
UNION ALL SELECT 'calls', count(*)::text FROM email_calls
UNION ALL SELECT 'calls_sent', count(*)::text FROM email_calls WHERE outcome = 'sent'
UNION ALL SELECT 'calls_failed', count(*)::text FROM email_calls WHERE outcome <> 'sent'
UNION ALL SELECT 'calls_by_outcome', coalesce(string_agg(outcome || ' ' || n, ', ' ORDER BY n DESC), 'none')
    FROM (SELECT outcome, count(*) AS n FROM email_calls GROUP BY outcome) x
UNION ALL SELECT 'call_span_s', round(extract(epoch FROM max(called_at) - min(called_at)), 1)::text FROM email_calls
UNION ALL SELECT 'calls_peak10', coalesce(max(n), 0)::text FROM (
    SELECT count(*) OVER (ORDER BY called_at RANGE BETWEEN CURRENT ROW AND '10 seconds' FOLLOWING) AS n
      FROM email_calls) x
UNION ALL SELECT 'calls_peak1', coalesce(max(n), 0)::text FROM (
    SELECT count(*) OVER (ORDER BY called_at RANGE BETWEEN CURRENT ROW AND '1 second' FOLLOWING) AS n
      FROM email_calls) x
UNION ALL SELECT 'calls_over_rate', coalesce(round(max(over)::numeric, 2), 0)::text FROM call_worst
UNION ALL SELECT 'calls_over_rate_window', coalesce(max(format('%s calls in %s s, from %s s after the first call',
                                                          w.j - lo.i + 1, round((w.sj - lo.s)::numeric, 3),
                                                          round(lo.s::numeric, 3))), 'none')
    FROM call_worst w
    CROSS JOIN LATERAL (SELECT i, s FROM call_x WHERE i <= w.j ORDER BY x, i LIMIT 1) lo;

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
	"duplicate deliveries" "${S[duplicates]} (send-email.sh ran again for a message whose delivery it had recorded)" \
	"dead-lettered" "${S[dlq]} messages in emails_dlq (${S[dlq_errors]})" \
	"bad addresses (by hash)" "${S[bad]} users, ${S[bad_in_dlq]} of them in the DLQ, ${S[bad_delivered]} delivered" \
	"signup throughput" "$(per_s "${S[users]}" "${S[signup_span_s]}") signups/s committed (over ${S[signup_span_s]} s); pgbench latency ${pgbench_latency:-?}" \
	"email throughput" "$(per_s "${S[deliveries]}" "${S[delivery_span_s]}") emails/s delivered (over ${S[delivery_span_s]} s; provider limit $PROVIDER_RATE/s)" \
	"provider calls" "${S[calls]} (${S[calls_by_outcome]}): $(per_s "${S[calls]}" "${S[call_span_s]}")/s over ${S[call_span_s]} s" \
	"" "busiest 10 s: $(per_s "${S[calls_peak10]}" 10)/s; busiest 1 s: ${S[calls_peak1]} calls" \
	"provider limit" "$PROVIDER_RATE/s: $RATE_DESC" \
	"" "most calls above limit x window: ${S[calls_over_rate]} (burst: $RATE_BURST)" \
	"" "(${S[calls_over_rate_window]})" \
	"email workers (mq-worker)" "$WORKERS x concurrency $CONCURRENCY: processed=$mqw_processed failed=$mqw_failed lost=$mqw_lost released=$mqw_released; exit status $email_rcs" \
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
duplicates=${S[duplicates]} max_per_user=${S[max_per_user]}
check "no email delivered twice: $deliveries deliveries for $delivered_users distinct users (at most $max_per_user per user), $duplicates duplicates (a message's command run again after its delivery was recorded)" \
	$((deliveries == delivered_users && max_per_user <= 1 && duplicates == 0))
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
calls=${S[calls]} calls_sent=${S[calls_sent]} calls_failed=${S[calls_failed]} over=${S[calls_over_rate]}
check "the provider never saw more than its limit: in every window, calls <= $RATE_LIMIT/s x (window + ${CALL_DELAY_S} s) + $RATE_BURST; the most was $over above $RATE_LIMIT/s x window (allowed $(awk -v r="$RATE_LIMIT" -v b="$RATE_BURST" -v d="$CALL_DELAY_S" 'BEGIN { printf "%g", b + r * d }'))" \
	"$(awk -v o="$over" -v r="$RATE_LIMIT" -v b="$RATE_BURST" -v d="$CALL_DELAY_S" 'BEGIN { print (o <= b + r * d) ? 1 : 0 }')"
check "mq-worker's totals match send-email.sh's records: processed $mqw_processed = $calls_sent calls sent, failed $mqw_failed = $calls_failed calls failed, lost $mqw_lost, released $mqw_released" \
	$((mqw_totals == WORKERS && mqw_processed == calls_sent && mqw_failed == calls_failed && mqw_lost == 0 && mqw_released == 0))
check "email workers (mq-worker) stopped by SIGTERM and exited 0 (exit status $email_rcs)" $((email_ok == 1))
check "SMS workers (mq-signup-worker) exited 0 on SIGTERM" $((workers_ok == 1))

echo
if [ "$fails" -eq 0 ]; then
	say "all checks passed"
else
	say "$fails check(s) FAILED (logs: rerun with --keep)"
	exit 1
fi
