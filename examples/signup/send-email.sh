#!/usr/bin/env bash
# examples/signup/send-email.sh: the signup demo's email command, run by
# mq-worker once per message of queue `emails`:
#
#   mq-worker --queue emails --concurrency 2 -- examples/signup/send-email.sh
#
# stdin: the payload, {"template": "welcome", "user_id": 42}, and a newline.
# Environment (from mq-worker): MQ_MSG_ID, MQ_ATTEMPTS, MQ_CONSUMER_ID, ...;
# the connection comes from the PG* variables, which mq-worker passes on.
# Settings (from demo.sh; defaults in brackets):
#   DEMO_PSQL              psql to run [psql]
#   DEMO_WORK_MS           how long a provider call takes, ms [5]
#   DEMO_TRANSIENT_PPM     provider calls that fail with a 503, per million [100000]
#   DEMO_BAD_PPM           addresses that always fail, per million of the
#                          user_id hash range [10000]
#   DEMO_RATE_INTERVAL_US  only when mq is not preloaded (no server-side rate
#   DEMO_RATE_DIR          limit): space this worker's calls this many
#                          microseconds apart, with state in DEMO_RATE_DIR
#
# It "calls the provider" (a short sleep), then:
#   bad address (deterministic, by user_id hash, as worker.c):
#       exit 1, stderr "provider 550: mailbox unavailable"; after 4 attempts
#       the message is in emails_dlq
#   transient failure (random, DEMO_TRANSIENT_PPM): exit 1, stderr
#       "provider 503: service unavailable"; the queue's backoff applies
#   success: records the delivery, exit 0 (mq-worker acks)
# Every call is logged in email_calls (when it started, its outcome), which
# the demo uses to measure the rate the provider saw.
#
# The command runs outside the ack's transaction: mq-worker acks after we
# exit 0, so if the ack were lost the message would come back and we would
# run again for it.  The record is therefore idempotent: deliveries has one
# row per msg_id at most (unique), and a second success for the same message
# lands in email_duplicates instead (the demo expects 0 of those: mq-worker
# keeps its claims alive with heartbeats).  A real sender would pass
# "Idempotency-Key: emails-$MQ_MSG_ID" to the provider for the same reason.
set -u

PSQL=${DEMO_PSQL:-psql}
WORK_MS=${DEMO_WORK_MS:-5}
TRANSIENT_PPM=${DEMO_TRANSIENT_PPM:-100000}
BAD_PPM=${DEMO_BAD_PPM:-10000}

now_us() { local t=$EPOCHREALTIME; REPLY=${t//[!0-9]/}; }   # no fork

IFS= read -r payload || true
if [[ ! $payload =~ \"user_id\":\ *([0-9]+) ]]; then
	echo "send-email.sh: no user_id in the payload: $payload" >&2
	exit 2
fi
user_id=${BASH_REMATCH[1]}
msg_id=${MQ_MSG_ID:?send-email.sh: MQ_MSG_ID not set: run me from mq-worker}
attempt=${MQ_ATTEMPTS:-0}
worker=${MQ_CONSUMER_ID:-?}

# Without a server-side rate limit (mq not preloaded), each worker spaces its
# own calls: one call every DEMO_RATE_INTERVAL_US, shared by the worker's
# concurrent commands through a lock file.
if [ -n "${DEMO_RATE_INTERVAL_US:-}" ]; then
	state=${DEMO_RATE_DIR:?}/rate-$worker
	exec 9>>"$state.lock"
	flock 9
	next=0
	[ -s "$state" ] && read -r next <"$state"
	now_us; now=$REPLY
	slot=$((now > next ? now : next))
	echo $((slot + DEMO_RATE_INTERVAL_US)) >"$state"
	exec 9>&-
	if [ $((slot - now)) -gt 0 ]; then
		printf -v pause '%d.%06d' $(((slot - now) / 1000000)) $(((slot - now) % 1000000))
		sleep "$pause"
	fi
fi

# The provider call.
now_us; call_us=$REPLY
printf -v pause '0.%03d' "$WORK_MS"
[ "$WORK_MS" -ge 1000 ] && pause=$((WORK_MS / 1000))
sleep "$pause"

if [ $(((user_id * 2654435761) % 1000000)) -lt "$BAD_PPM" ]; then
	outcome=bad_address error='provider 550: mailbox unavailable'
elif [ $((((RANDOM << 15) | RANDOM) % 1000000)) -lt "$TRANSIENT_PPM" ]; then
	outcome=transient error='provider 503: service unavailable'
else
	outcome=sent error=
fi

run_psql() {
	"$PSQL" -X -q -v ON_ERROR_STOP=1 -v msg_id="$msg_id" -v attempt="$attempt" \
		-v user_id="$user_id" -v call_us="$call_us" -v worker="$worker" \
		-v outcome="$outcome"
}

if [ "$outcome" != sent ]; then
	run_psql <<'SQL'
INSERT INTO email_calls (msg_id, attempt, user_id, called_at, outcome, worker)
VALUES (:msg_id, :attempt, :user_id,
        'epoch'::timestamptz + :call_us * interval '1 microsecond', :'outcome', :'worker');
SQL
	echo "$error" >&2
	exit 1
fi

# Success: the call, and the delivery unless this message has one already.
run_psql <<'SQL' || exit 1
WITH c AS (
    INSERT INTO email_calls (msg_id, attempt, user_id, called_at, outcome, worker)
    VALUES (:msg_id, :attempt, :user_id,
            'epoch'::timestamptz + :call_us * interval '1 microsecond', :'outcome', :'worker')
), d AS (
    INSERT INTO deliveries (user_id, msg_id, worker)
    VALUES (:user_id, :msg_id, :'worker')
    ON CONFLICT (msg_id) DO NOTHING
    RETURNING msg_id
)
INSERT INTO email_duplicates (msg_id, user_id, attempt, worker)
SELECT :msg_id, :user_id, :attempt, :'worker'
 WHERE NOT EXISTS (SELECT FROM d);
SQL
exit 0
