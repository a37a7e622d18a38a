/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  mq-signup-worker: drains a queue of the signup demo: the welcome
 *	  emails ('emails', --mode email) or the onboarding SMS sequence
 *	  ('sms', a keyed queue, --mode sms).
 *
 * The worker is a plain libpq client; it uses only the public SQL API of
 * the mq extension (mq.read, mq.ack, mq.nack, mq.extend, mq.queues):
 *
 *	  loop:
 *		SELECT ... FROM mq.read(queue, batch, vt, wait)	-- claim a batch,
 *									long polling up to wait when empty
 *		for each message:
 *			wait for a token from the provider's rate limit (token bucket)
 *			"call the provider" (a few ms of simulated work)
 *			transient failure  -> mq.nack(..., NULL, 'provider 503'):
 *								  the queue's retry backoff applies
 *			permanent failure  -> mq.nack(..., NULL, 'provider 550 ...'):
 *								  fails on every attempt, so after
 *								  max_attempts it lands in the DLQ
 *			success			   -> BEGIN; INSERT INTO deliveries; mq.ack;
 *								  COMMIT  (a delivery is recorded iff acked)
 *		empty queue: nothing to sleep on our side: the read itself waited
 *		(server-side long polling) and returned as soon as a message was
 *		visible, or empty after --wait seconds
 *
 * A permanent failure ("bad address") is decided by a hash of user_id, so
 * it is the same on every attempt and on every worker, and the demo can
 * recompute it in SQL:
 *
 *	  h(user_id) := (user_id * 2654435761) % 1000000
 *	  email: bad(user_id) := h / 1e6 < permanent_fail
 *	  sms:	 bad(user_id) := h >= 1000000 - floor(permanent_fail * 1e6 + 0.5)
 *
 * (exact in both C and SQL bigint arithmetic for user_id < 3.4e9).  The SMS
 * rule takes the other end of the hash range, so a bad phone number and a
 * bad email address are different users.
 *
 * --mode sms: the payload is {"template", "user_id", "step"} and the queue
 * is keyed by user id, so mq hands out a user's step N+1 only after step N
 * was acked or dead-lettered.  The worker records, through the demo's
 * sequence sms_seq, every hand-out (a row in sms_claims, claim_seq taken
 * right after mq.read returned, in the claiming statement) and each
 * message's outcome (seq, taken in the outcome's transaction):
 *
 *		success				   -> BEGIN; INSERT INTO sms_deliveries; mq.ack;
 *								  COMMIT
 *		failure at the last
 *		attempt				   -> BEGIN; INSERT INTO sms_dead_letters;
 *								  mq.nack (dead-letters it); COMMIT
 *
 * so demo.sh can check that, per user, every claim of a step came after
 * the earlier steps' outcomes had committed, and that the outcomes are in
 * step order.  (claim_seq > seq of an outcome means the claim was made
 * after that outcome's transaction took its seq, i.e. -- as the outcome's
 * commit is what unblocks the key -- after it committed.)
 *
 * Stopping while a long poll waits: the read is sent asynchronously and the
 * worker cancels it (PQcancel) on SIGTERM/SIGINT; a cancelled mq.read
 * claims nothing.
 *
 * Every value goes to the server as a parameter of PQexecParams; nothing
 * is spliced into SQL text.  Any unexpected error is fatal (exit 1): this
 * is a demo, reconnecting is out of scope.
 *
 * Usage: mq-signup-worker [options] [CONNINFO]   (see usage() below)
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

/* Hash multiplier shared with demo.sh's SQL check (Knuth's constant). */
#define BAD_ADDRESS_MULT	UINT64_C(2654435761)
#define BAD_ADDRESS_MOD		UINT64_C(1000000)

/* Options */
static const char *conninfo = NULL;
static bool sms_mode = false;
static const char *queue = NULL;	/* default: emails, or sms */
static double wait_seconds = 5.0;	/* long polling */
static int	worker_id = 0;
static int	batch = 10;
static double vt_seconds = 30.0;
static double rate_per_sec = 25.0 / 60.0;	/* a typical provider: 25/min */
static double burst = 1.0;
static int	work_ms = 5;
static double transient_fail = 0.0;
static double permanent_fail = 0.0;
static double exit_when_idle = -1.0;	/* < 0: never */
static bool verbose = false;

/* Counters for the final line */
static long n_read = 0;
static long n_delivered = 0;
static long n_transient = 0;
static long n_permanent = 0;
static long n_gave_up = 0;		/* nacks at the last attempt (-> DLQ) */
static long n_stale = 0;		/* ack/nack refused: claim had lapsed */
static long n_released = 0;		/* unprocessed claims given back at stop */
static long n_empty_reads = 0;

static volatile sig_atomic_t stop_requested = 0;

static PGconn *conn = NULL;

/* Token bucket state */
static double tokens;
static double tokens_at;

static void
handle_stop(int signo)
{
	(void) signo;
	stop_requested = 1;
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Sleep, but return early when a stop signal arrives: the handler is
 * installed without SA_RESTART, so nanosleep() fails with EINTR.
 */
static void
sleep_seconds(double s)
{
	struct timespec ts;

	if (s <= 0 || stop_requested)
		return;
	ts.tv_sec = (time_t) s;
	ts.tv_nsec = (long) ((s - (double) ts.tv_sec) * 1e9);
	(void) nanosleep(&ts, NULL);
}

static void
die(const char *what, PGresult *res)
{
	fprintf(stderr, "mq-signup-worker %d: %s failed: %s",
			worker_id, what,
			res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
	if (res)
		PQclear(res);
	PQfinish(conn);
	exit(1);
}

/*
 * Run one statement with text parameters; die unless the result status is
 * the expected one.  Returns the result, which the caller must PQclear().
 */
static PGresult *
run(const char *what, const char *sql, int nparams,
	const char *const *params, ExecStatusType expect)
{
	PGresult   *res = PQexecParams(conn, sql, nparams, NULL, params,
								   NULL, NULL, 0);

	if (res == NULL || PQresultStatus(res) != expect)
		die(what, res);
	return res;
}

static void
run_command(const char *what, const char *sql)
{
	PQclear(run(what, sql, 0, NULL, PGRES_COMMAND_OK));
}

/*
 * Parse "25/min", "10/s", "3600/h" or a bare number (per second).
 */
static bool
parse_rate(const char *s, double *out)
{
	char	   *end;
	double		n = strtod(s, &end);
	double		per;

	if (end == s || n <= 0)
		return false;
	if (*end == '\0')
		per = 1.0;
	else if (strcmp(end, "/s") == 0 || strcmp(end, "/sec") == 0)
		per = 1.0;
	else if (strcmp(end, "/m") == 0 || strcmp(end, "/min") == 0)
		per = 60.0;
	else if (strcmp(end, "/h") == 0 || strcmp(end, "/hour") == 0)
		per = 3600.0;
	else
		return false;
	*out = n / per;
	return true;
}

/*
 * Take one token from the provider's rate-limit bucket, waiting for it if
 * needed.  Returns false if a stop was requested while waiting.
 *
 * The bucket is per worker: demo.sh divides the provider's limit among its
 * workers.  (A limit shared by all workers would need coordination through
 * the database; out of scope for the demo.)
 */
static bool
take_token(void)
{
	for (;;)
	{
		double		now = now_seconds();

		tokens += (now - tokens_at) * rate_per_sec;
		if (tokens > burst)
			tokens = burst;
		tokens_at = now;
		if (tokens >= 1.0)
		{
			tokens -= 1.0;
			return true;
		}
		if (stop_requested)
			return false;
		sleep_seconds((1.0 - tokens) / rate_per_sec);
	}
}

/* Deterministic "bad address" (or bad phone number) verdict; see the file header. */
static bool
is_bad_address(int64_t user_id)
{
	uint64_t	h = ((uint64_t) user_id * BAD_ADDRESS_MULT) % BAD_ADDRESS_MOD;

	if (sms_mode)
		return h >= BAD_ADDRESS_MOD - (uint64_t) (permanent_fail * 1e6 + 0.5);
	return (double) h / 1e6 < permanent_fail;
}

/* One claimed message, as the worker handles it. */
typedef struct Claim
{
	const char *msg_id;
	const char *receipt;
	int			attempts;
	const char *user_id;
	const char *step;			/* sms mode */
	const char *claim_seq;		/* sms mode */
} Claim;

/*
 * Release a claim we will not process (stopping): make the message visible
 * again at once with mq.extend(vt => 0).  nack would also release it, but
 * at the last attempt nack dead-letters, which a worker shutdown must not
 * cause.  Best effort: if this fails the claim simply lapses after the vt.
 */
static void
release_claim(const char *msg_id, const char *receipt)
{
	const char *params[3] = {queue, msg_id, receipt};
	PGresult   *res;

	res = PQexecParams(conn,
					   "SELECT mq.extend($1, $2::bigint, '0 seconds'::interval, $3::bigint)",
					   3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		n_released++;
	else
		fprintf(stderr, "mq-signup-worker %d: could not release message %s (it comes back after its visibility timeout): %s",
				worker_id, msg_id, PQresultErrorMessage(res));
	PQclear(res);
}

/*
 * The provider refused the message: give it back with the queue's retry
 * backoff (delay NULL), recording why.  At the last attempt the nack
 * dead-letters it; in sms mode the worker then records the dead letter in
 * sms_dead_letters in the nack's transaction (rolled back if the nack was
 * refused), so that its place in the user's sequence is known.
 */
static void
fail_message(const Claim *c, int max_attempts, const char *error)
{
	const char *params[4] = {queue, c->msg_id, c->receipt, error};
	bool		last = max_attempts > 0 && c->attempts >= max_attempts;
	bool		record = sms_mode && last;
	bool		nacked;
	PGresult   *res;

	if (record)
	{
		char		worker_str[16];
		const char *ins_params[6] = {c->user_id, c->step, c->msg_id,
		c->claim_seq, worker_str, error};

		snprintf(worker_str, sizeof(worker_str), "%d", worker_id);
		run_command("BEGIN", "BEGIN");
		PQclear(run("INSERT INTO sms_dead_letters",
					"INSERT INTO sms_dead_letters (user_id, step, msg_id, claim_seq, worker, error) "
					"VALUES ($1::bigint, $2::int, $3::bigint, $4::bigint, $5::int, $6)",
					6, ins_params, PGRES_COMMAND_OK));
	}
	res = run("mq.nack",
			  "SELECT mq.nack($1, $2::bigint, $3::bigint, NULL, $4)",
			  4, params, PGRES_TUPLES_OK);
	nacked = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (record)
		run_command(nacked ? "COMMIT" : "ROLLBACK", nacked ? "COMMIT" : "ROLLBACK");
	if (!nacked)
		n_stale++;
	else if (last)
		n_gave_up++;
}

/*
 * The email went out: record the delivery and ack the message in one
 * transaction, so deliveries holds a row iff the message was acked.  If the
 * ack is refused (our claim lapsed and another worker may hold the message
 * now), roll back: that worker records the delivery instead.
 */
static void
deliver_message(const Claim *c)
{
	char		worker_str[16];
	const char *msg_id = c->msg_id;
	const char *ack_params[3] = {queue, c->msg_id, c->receipt};
	PGresult   *res;
	bool		acked;

	snprintf(worker_str, sizeof(worker_str), "%d", worker_id);

	run_command("BEGIN", "BEGIN");
	if (sms_mode)
	{
		const char *ins_params[5] = {c->user_id, c->step, c->msg_id,
		c->claim_seq, worker_str};

		/* sms_deliveries.seq defaults to nextval('sms_seq'): taken here */
		PQclear(run("INSERT INTO sms_deliveries",
					"INSERT INTO sms_deliveries (user_id, step, msg_id, claim_seq, worker) "
					"VALUES ($1::bigint, $2::int, $3::bigint, $4::bigint, $5::int)",
					5, ins_params, PGRES_COMMAND_OK));
	}
	else
	{
		const char *ins_params[3] = {c->user_id, c->msg_id, worker_str};

		PQclear(run("INSERT INTO deliveries",
					"INSERT INTO deliveries (user_id, msg_id, worker) "
					"VALUES ($1::bigint, $2::bigint, $3::int)",
					3, ins_params, PGRES_COMMAND_OK));
	}
	res = run("mq.ack", "SELECT mq.ack($1, $2::bigint, $3::bigint)",
			  3, ack_params, PGRES_TUPLES_OK);
	acked = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);

	if (acked)
	{
		run_command("COMMIT", "COMMIT");
		n_delivered++;
	}
	else
	{
		run_command("ROLLBACK", "ROLLBACK");
		n_stale++;
		if (verbose)
			fprintf(stderr, "mq-signup-worker %d: stale receipt for message %s, delivery rolled back\n",
					worker_id, msg_id);
	}
}

/*
 * Claim a batch: mq.read with long polling.  The statement is sent
 * asynchronously so that a stop signal can cut a long wait short: the
 * worker then cancels the read (a cancelled mq.read claims nothing) and
 * returns NULL.  If the read returned rows before the cancel took effect,
 * they are returned as usual and the caller releases them.
 */
static PGresult *
read_batch(const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = NULL;
	PGresult   *r;
	bool		cancel_sent = false;

	if (!PQsendQueryParams(conn, sql, nparams, NULL, params, NULL, NULL, 0))
		die("mq.read (send)", NULL);
	for (;;)
	{
		struct pollfd pfd;

		if (stop_requested && !cancel_sent)
		{
			PGcancel   *cancel = PQgetCancel(conn);
			char		errbuf[256];

			if (cancel == NULL || !PQcancel(cancel, errbuf, sizeof(errbuf)))
				fprintf(stderr, "mq-signup-worker %d: could not cancel the long poll: %s\n",
						worker_id, cancel ? errbuf : "no cancel object");
			if (cancel)
				PQfreeCancel(cancel);
			cancel_sent = true;
		}
		if (!PQconsumeInput(conn))
			die("mq.read (receive)", NULL);
		if (!PQisBusy(conn))
			break;
		/* a signal interrupts poll() (no SA_RESTART); 1 s covers the race */
		pfd.fd = PQsocket(conn);
		pfd.events = POLLIN;
		pfd.revents = 0;
		if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
		{
			perror("poll");
			exit(1);
		}
	}
	while ((r = PQgetResult(conn)) != NULL)
	{
		if (res == NULL)
			res = r;
		else
			PQclear(r);
	}
	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
		return res;
	if (cancel_sent && res != NULL)
	{
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

		if (state != NULL && strcmp(state, "57014") == 0)
		{
			PQclear(res);
			return NULL;		/* query_canceled: we are stopping */
		}
	}
	die("mq.read", res);
	return NULL;				/* not reached */
}

static void
usage(void)
{
	printf("Usage: mq-signup-worker [OPTION]... [CONNINFO]\n"
		   "Drain an mq queue of the signup demo: welcome emails, or the onboarding SMS sequence.\n\n"
		   "CONNINFO is a libpq connection string or URI (default: $MQ_DSN, else the PG* variables).\n\n"
		   "  -d, --dsn CONNINFO         same as the CONNINFO argument\n"
		   "  -m, --mode email|sms       what to deliver (default email): email records in deliveries;\n"
		   "                             sms records in sms_deliveries and sms_dead_letters\n"
		   "  -q, --queue NAME           queue to drain (default emails, or sms with --mode sms)\n"
		   "  -i, --id N                 worker number, stored in the worker column (default 0)\n"
		   "  -b, --batch N              messages claimed per mq.read (default 10)\n"
		   "      --vt SECONDS           visibility timeout of a claim (default 30)\n"
		   "      --wait SECONDS         long polling: how long an mq.read waits on an empty queue (default 5)\n"
		   "      --rate N[/s|/min|/h]   provider rate limit for this worker (default 25/min)\n"
		   "      --burst N              token bucket capacity (default 1)\n"
		   "      --work-ms N            simulated duration of one provider call (default 5)\n"
		   "      --transient-fail P     share of calls failing transiently, 0..1 (default 0)\n"
		   "      --permanent-fail P     share of addresses (phone numbers) failing permanently, by hash of user_id (default 0)\n"
		   "      --exit-when-idle S     exit once the queue has been empty for S seconds\n"
		   "  -v, --verbose              report every failure\n"
		   "  -h, --help                 this help\n\n"
		   "SIGTERM/SIGINT: finish the current message, release the rest of the batch, exit 0.\n");
}

static double
parse_double(const char *opt, const char *s, double min, double max)
{
	char	   *end;
	double		v = strtod(s, &end);

	if (end == s || *end != '\0' || v < min || v > max)
	{
		fprintf(stderr, "mq-signup-worker: invalid value for %s: \"%s\"\n", opt, s);
		exit(2);
	}
	return v;
}

static void
parse_options(int argc, char **argv)
{
	static const struct option long_options[] = {
		{"dsn", required_argument, NULL, 'd'},
		{"mode", required_argument, NULL, 'm'},
		{"wait", required_argument, NULL, 8},
		{"queue", required_argument, NULL, 'q'},
		{"id", required_argument, NULL, 'i'},
		{"batch", required_argument, NULL, 'b'},
		{"vt", required_argument, NULL, 1},
		{"rate", required_argument, NULL, 2},
		{"burst", required_argument, NULL, 3},
		{"work-ms", required_argument, NULL, 4},
		{"transient-fail", required_argument, NULL, 5},
		{"permanent-fail", required_argument, NULL, 6},
		{"exit-when-idle", required_argument, NULL, 7},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;

	conninfo = getenv("MQ_DSN");
	while ((c = getopt_long(argc, argv, "d:m:q:i:b:vh", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				conninfo = optarg;
				break;
			case 'm':
				if (strcmp(optarg, "sms") == 0)
					sms_mode = true;
				else if (strcmp(optarg, "email") == 0)
					sms_mode = false;
				else
				{
					fprintf(stderr, "mq-signup-worker: invalid --mode \"%s\" (email or sms)\n", optarg);
					exit(2);
				}
				break;
			case 'q':
				queue = optarg;
				break;
			case 8:
				wait_seconds = parse_double("--wait", optarg, 0, 900);
				break;
			case 'i':
				worker_id = (int) parse_double("--id", optarg, 0, 1000000);
				break;
			case 'b':
				batch = (int) parse_double("--batch", optarg, 1, 10000);
				break;
			case 1:
				vt_seconds = parse_double("--vt", optarg, 0.001, 86400);
				break;
			case 2:
				if (!parse_rate(optarg, &rate_per_sec))
				{
					fprintf(stderr, "mq-signup-worker: invalid --rate \"%s\" (e.g. 25/min, 10/s)\n", optarg);
					exit(2);
				}
				break;
			case 3:
				burst = parse_double("--burst", optarg, 1, 1e6);
				break;
			case 4:
				work_ms = (int) parse_double("--work-ms", optarg, 0, 60000);
				break;
			case 5:
				transient_fail = parse_double("--transient-fail", optarg, 0, 1);
				break;
			case 6:
				permanent_fail = parse_double("--permanent-fail", optarg, 0, 1);
				break;
			case 7:
				exit_when_idle = parse_double("--exit-when-idle", optarg, 0, 1e9);
				break;
			case 'v':
				verbose = true;
				break;
			case 'h':
				usage();
				exit(0);
			default:
				fprintf(stderr, "Try \"mq-signup-worker --help\".\n");
				exit(2);
		}
	}
	if (queue == NULL)
		queue = sms_mode ? "sms" : "emails";
	if (optind < argc)
		conninfo = argv[optind++];
	if (optind < argc)
	{
		fprintf(stderr, "mq-signup-worker: too many arguments\n");
		exit(2);
	}
}

int
main(int argc, char **argv)
{
	const char *keywords[] = {"dbname", "fallback_application_name", NULL};
	const char *values[] = {NULL, "mq-signup-worker", NULL};
	struct sigaction sa;
	PGresult   *res;
	int			max_attempts = 0;
	int			eff_batch;
	char		batch_str[16];
	char		vt_str[32];
	char		wait_str[32];
	char		worker_str[16];
	double		started;
	double		idle_since;
	const char *read_sql;

	parse_options(argc, argv);

	/* No SA_RESTART: a signal must cut short the sleeps. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = handle_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	values[0] = conninfo ? conninfo : "";
	conn = PQconnectdbParams(keywords, values, 1);
	if (PQstatus(conn) != CONNECTION_OK)
		die("connect", NULL);

	/*
	 * Learn max_attempts only to tell, in the final line, how many of our
	 * nacks dead-lettered their message.  The queue must exist.
	 */
	{
		const char *params[1] = {queue};

		res = run("lookup of the queue",
				  "SELECT max_attempts FROM mq.queues WHERE queue_name = $1",
				  1, params, PGRES_TUPLES_OK);
		if (PQntuples(res) != 1)
		{
			fprintf(stderr, "mq-signup-worker %d: queue \"%s\" does not exist\n",
					worker_id, queue);
			PQclear(res);
			PQfinish(conn);
			return 1;
		}
		max_attempts = atoi(PQgetvalue(res, 0, 0));
		PQclear(res);
	}

	/*
	 * Claim no more than we can send within half the visibility timeout at
	 * the rate limit: claimed messages wait for tokens, and a claim that
	 * lapses before we get to it is wasted work (the ack would be refused).
	 */
	eff_batch = batch;
	if (rate_per_sec * vt_seconds / 2 < eff_batch)
		eff_batch = (int) (rate_per_sec * vt_seconds / 2);
	if (eff_batch < 1)
		eff_batch = 1;
	snprintf(batch_str, sizeof(batch_str), "%d", eff_batch);
	snprintf(vt_str, sizeof(vt_str), "%.3f", vt_seconds);
	snprintf(wait_str, sizeof(wait_str), "%.3f", wait_seconds);
	snprintf(worker_str, sizeof(worker_str), "%d", worker_id);

	/*
	 * In sms mode every hand-out is logged in sms_claims by the claiming
	 * statement itself.  nextval('sms_seq') is evaluated on the rows
	 * mq.read returned, so after the claim: it orders the claim after every
	 * outcome that had committed before it.
	 */
	read_sql = sms_mode ?
		"WITH c AS MATERIALIZED ("
		" SELECT m.msg_id, m.receipt, m.attempts, m.payload->>'user_id' AS user_id,"
		" m.payload->>'step' AS step, nextval('sms_seq') AS claim_seq"
		" FROM mq.read($1, $2::int, make_interval(secs => $3::float8),"
		" make_interval(secs => $4::float8)) m),"
		" log AS (INSERT INTO sms_claims (claim_seq, user_id, step, msg_id, attempt, worker)"
		" SELECT claim_seq, user_id::bigint, step::int, msg_id, attempts, $5::int FROM c)"
		" SELECT msg_id, receipt, attempts, user_id, step, claim_seq FROM c ORDER BY msg_id" :
		"SELECT m.msg_id, m.receipt, m.attempts, m.payload->>'user_id', NULL, NULL "
		"FROM mq.read($1, $2::int, make_interval(secs => $3::float8), "
		"make_interval(secs => $4::float8)) m";

	/* Per-worker PRNG for transient failures; need not be reproducible. */
	srand48((long) getpid() ^ (long) time(NULL));

	tokens = burst;
	started = tokens_at = idle_since = now_seconds();

	while (!stop_requested)
	{
		const char *params[5] = {queue, batch_str, vt_str, wait_str, worker_str};
		int			n;
		int			i;

		/*
		 * Long polling: on an empty queue the read waits on the server
		 * until a message becomes visible or --wait passes; no sleeping
		 * and re-polling here.
		 */
		res = read_batch(read_sql, sms_mode ? 5 : 4, params);
		if (res == NULL)
			break;				/* stopped during the wait */
		n = PQntuples(res);

		if (n == 0)
		{
			PQclear(res);
			n_empty_reads++;
			if (exit_when_idle >= 0 && now_seconds() - idle_since >= exit_when_idle)
				break;
			continue;
		}
		n_read += n;

		for (i = 0; i < n; i++)
		{
			Claim		c;
			const char *user_id = PQgetvalue(res, i, 3);
			char	   *end = NULL;
			long long	uid;

			c.msg_id = PQgetvalue(res, i, 0);
			c.receipt = PQgetvalue(res, i, 1);
			c.attempts = atoi(PQgetvalue(res, i, 2));
			c.user_id = user_id;
			c.step = PQgetisnull(res, i, 4) ? NULL : PQgetvalue(res, i, 4);
			c.claim_seq = PQgetisnull(res, i, 5) ? NULL : PQgetvalue(res, i, 5);

			/* Stopping: give back what we have not started. */
			if (stop_requested || !take_token())
			{
				release_claim(c.msg_id, c.receipt);
				continue;
			}

			/* A payload without a numeric user_id (or step) can never succeed. */
			uid = PQgetisnull(res, i, 3) ? -1 : strtoll(user_id, &end, 10);
			if (uid < 0 || *end != '\0' || (sms_mode && c.step == NULL))
			{
				fail_message(&c, max_attempts,
							 sms_mode ? "payload has no user_id or step" : "payload has no user_id");
				n_permanent++;
				continue;
			}

			/* "Call the provider": a few ms, jittered. */
			if (work_ms > 0)
				sleep_seconds(work_ms * (0.5 + drand48()) / 1000.0);

			if (is_bad_address((int64_t) uid))
			{
				n_permanent++;
				if (verbose)
					fprintf(stderr, "mq-signup-worker %d: message %s user %s: bad %s (attempt %d)\n",
							worker_id, c.msg_id, user_id,
							sms_mode ? "phone number" : "address", c.attempts);
				fail_message(&c, max_attempts,
							 sms_mode ? "provider 21211: invalid phone number" :
							 "provider 550: mailbox unavailable");
			}
			else if (drand48() < transient_fail)
			{
				n_transient++;
				if (verbose)
					fprintf(stderr, "mq-signup-worker %d: message %s user %s: provider 503 (attempt %d)\n",
							worker_id, c.msg_id, user_id, c.attempts);
				fail_message(&c, max_attempts, "provider 503");
			}
			else
				deliver_message(&c);
		}
		PQclear(res);
		idle_since = now_seconds();
	}

	{
		double		elapsed = now_seconds() - started;

		printf("%s worker %d: delivered=%ld transient_failures=%ld permanent_failures=%ld "
			   "dead_lettered=%ld stale_receipts=%ld released=%ld read=%ld empty_reads=%ld "
			   "elapsed=%.1fs rate=%.1f/s (%s)\n",
			   sms_mode ? "sms" : "email", worker_id, n_delivered, n_transient, n_permanent, n_gave_up,
			   n_stale, n_released, n_read, n_empty_reads, elapsed,
			   elapsed > 0 ? n_delivered / elapsed : 0.0,
			   stop_requested ? "stopped by signal" : "idle");
		fflush(stdout);
	}
	PQfinish(conn);
	return 0;
}
