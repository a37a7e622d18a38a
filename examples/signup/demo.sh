#!/usr/bin/env bash
# examples/signup/demo.sh: the signup demo, end to end, with its own checks.
#
#   examples/signup/demo.sh            # about a minute
#   examples/signup/demo.sh --short    # about 15-20 s (CI)
#
# pgbench plays the web application: each signup inserts a user and sends
# the welcome email to queue `emails` in one transaction; one in ten signups
# rolls back.  mq-signup-worker processes drain the queue at the email
# provider's rate limit, with transient failures (retried with backoff) and
# bad addresses (dead-lettered to `emails_dlq` after 4 attempts).  When the
# queue is drained the demo checks that every committed signup got exactly
# one outcome, no one was emailed twice, and rolled-back signups got nothing.
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
CLIENTS=4
TRANSIENT_FAIL=0.1      # share of provider calls that fail with a 503
PERMANENT_FAIL=0.01     # share of addresses that always fail (by user_id hash)

usage() {
	sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
	cat <<'EOF'

Options:
  --short               short run (CI): about 15-20 s
  --workers N           number of worker processes (default 4)
  --seconds N           how long pgbench signs users up
  --signup-rate N       signups per second offered by pgbench (incl. rollbacks)
  --provider-rate N     email provider limit, emails per second, shared by all workers
  --keep                keep the temporary cluster and the logs
EOF
}

SECONDS_OPT='' SIGNUP_RATE_OPT='' PROVIDER_RATE_OPT=''
while [ $# -gt 0 ]; do
	case $1 in
		--short) SHORT=1 ;;
		--workers) WORKERS=$2; shift ;;
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
	# The provider keeps up with the signups: the queue stays short.
	SIGNUP_SECONDS=12 SIGNUP_RATE=40 PROVIDER_RATE=60 DRAIN_TIMEOUT=45
else
	# Signups outrun the provider: the queue absorbs the backlog while the
	# signup transactions stay fast, and drains after the rush.
	SIGNUP_SECONDS=30 SIGNUP_RATE=60 PROVIDER_RATE=40 DRAIN_TIMEOUT=120
fi
SIGNUP_SECONDS=${SECONDS_OPT:-$SIGNUP_SECONDS}
SIGNUP_RATE=${SIGNUP_RATE_OPT:-$SIGNUP_RATE}
PROVIDER_RATE=${PROVIDER_RATE_OPT:-$PROVIDER_RATE}
# The provider's limit is split evenly: each worker has its own token bucket.
WORKER_RATE=$(awk -v r="$PROVIDER_RATE" -v w="$WORKERS" 'BEGIN { printf "%.3f", r / w }')

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
say "CREATE EXTENSION mq; queues emails and emails_dlq; tables users, deliveries"
"$PG_BIN/psql" -X -q -o /dev/null -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION mq;
SELECT mq.create_queue('emails_dlq');
SELECT mq.create_queue('emails',
                       visibility_timeout => '10 seconds',
                       max_attempts => 4,
                       dead_letter_queue => 'emails_dlq',
                       retry_delay => '200 ms',
                       retry_backoff => 2);

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
SQL
TRACK_COMMIT_TS=$(psql_v -c "SHOW track_commit_timestamp")

# ---- 4. workers ----------------------------------------------------------------
say "starting $WORKERS workers: provider limit $PROVIDER_RATE emails/s ($WORKER_RATE/s each), $TRANSIENT_FAIL transient failures, $PERMANENT_FAIL bad addresses"
for i in $(seq 1 "$WORKERS"); do
	"$WORKER_BIN" --id "$i" --queue emails --batch 10 --vt 10 \
		--rate "$WORKER_RATE/s" --work-ms 5 \
		--transient-fail "$TRANSIENT_FAIL" --permanent-fail "$PERMANENT_FAIL" \
		>"$WORK/worker$i.log" 2>&1 &
	WORKER_PIDS+=($!)
done

# ---- 5. signups ------------------------------------------------------------------
say "pgbench: $CLIENTS clients, $SIGNUP_RATE signups/s for $SIGNUP_SECONDS s (9 in 10 commit, 1 in 10 rolls back)"
"$PG_BIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$SIGNUP_SECONDS" -R "$SIGNUP_RATE" \
	-f "$HERE/signup.sql@9" -f "$HERE/signup_rollback.sql@1" \
	>"$WORK/pgbench.log" 2>&1 &
PGBENCH_PID=$!

# ---- 6. watch until pgbench is done and the queue is drained -------------------
# One line every 2 s.  mq.maintain() dead-letters messages whose last
# attempt's visibility timeout lapsed (none expected here: no worker dies).
STATUS_SQL="SELECT (SELECT count(*) FROM users),
       (SELECT count(*) FROM deliveries),
       m.depth, m.in_flight, m.delayed,
       (SELECT depth + in_flight + delayed FROM mq.metrics('emails_dlq')),
       (SELECT mq.maintain())
  FROM mq.metrics('emails') m"
start=$(date +%s)
pgbench_rc=
drained=0
max_backlog=0
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
	IFS='|' read -r n_users n_deliv depth in_flight delayed dlq _ < <(psql_v -c "$STATUS_SQL")
	if [ -z "$n_users" ]; then
		echo "demo.sh: could not read the queue metrics" >&2
		exit 1
	fi
	backlog=$((depth + in_flight + delayed))
	[ "$backlog" -gt "$max_backlog" ] && max_backlog=$backlog
	if [ $((now - last_print)) -ge 2 ]; then
		printf '   t=%3ds  signups=%-6s delivered=%-6s queue: ready=%-5s in_flight=%-4s delayed=%-4s dlq=%s\n' \
			"$now" "$n_users" "$n_deliv" "$depth" "$in_flight" "$delayed" "$dlq"
		last_print=$now
	fi
	if [ -n "$pgbench_rc" ]; then
		if [ "$backlog" -eq 0 ]; then
			drained=1
			break
		fi
		if [ $((now - pgbench_done_at)) -ge "$DRAIN_TIMEOUT" ]; then
			say "queue not drained ${DRAIN_TIMEOUT}s after pgbench finished"
			break
		fi
	fi
	alive=0
	for pid in "${WORKER_PIDS[@]}"; do
		kill -0 "$pid" 2>/dev/null && alive=$((alive + 1))
	done
	if [ "$alive" -eq 0 ]; then
		say "FAIL: all workers exited early:"
		cat "$WORK"/worker*.log
		exit 1
	fi
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
	"queue backlog" "max $max_backlog messages; drained ${drain_s}s after the signups stopped"

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

check "queue drained: depth + in_flight + delayed = 0 within ${DRAIN_TIMEOUT}s after the signups" \
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
check "workers exited 0 on SIGTERM" $((workers_ok == 1))

echo
if [ "$fails" -eq 0 ]; then
	say "all checks passed"
else
	say "$fails check(s) FAILED (logs: rerun with --keep)"
	exit 1
fi
