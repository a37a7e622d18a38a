/*
 * bench/latency.c -- consumer client for bench/push.sh (issue 4) and the
 * delayed-message latency check of bench/shapes.sh (shape 1).
 *
 * Built by push.sh and shapes.sh:
 *     cc -O2 -o latency latency.c -I$(pg_config --includedir) -lpq
 *
 * usage: latency MODE QUEUE SECONDS [WAIT_MS]
 *        latency delayed QUEUE TRIES [DELAY_MS [JITTER_MS]]
 *   Connection parameters come from the environment (PGHOST, PGPORT, ...).
 *   MODE
 *     longpoll  loop: mq.read(QUEUE, 50, wait => WAIT_MS) (default 5000 ms)
 *     listen    mq.listen(QUEUE); loop: mq.read(QUEUE, 50) without waiting;
 *               when it returned fewer than 50, select() on the socket until a
 *               notification arrives (PQconsumeInput / PQnotifies), then read
 *     poll      loop: mq.read(QUEUE, 50) without waiting; when it returned
 *               nothing, sleep 100 ms
 *     drain     mq.listen(QUEUE) and only count notifications (no reads)
 *     rawdrain  plain LISTEN "mq.QUEUE" (before the NOTIFY relay mq did not count it as a listener)
 *               and only count notifications: shows whether mq notified
 *   Every read claims, acks and records the messages in one statement (one
 *   transaction): msg_id and clock_timestamp() right after the claim go into
 *   the table lat_recv(msg_id, recv_at, mode); push.sh joins it with the
 *   producer's commit timestamps.
 *   Runs SECONDS seconds, then prints one line:
 *     mode=... queries=N messages=M empty=E notifies=K seconds=S
 *
 *   delayed: how late a delayed message reaches a reader that is already
 *     waiting.  Two connections.  Per try: the reader starts
 *       SELECT ... FROM mq.read(QUEUE, 1, NULL, '5 seconds')
 *     on the (empty) queue; once its backend is active, and after a further
 *     random 20-270 ms, the other connection sends (autocommit)
 *       SELECT mq.send(QUEUE, '{"n":1}', delay => D)
 *     with D = DELAY_MS (default 1000), plus a random 0..JITTER_MS-1 ms when
 *     JITTER_MS > 0 (a delay of 0 measures plain commit-to-delivery latency).
 *     Client clock (CLOCK_REALTIME, the server's clock on this machine):
 *       t1 = when the send returned (its commit is acknowledged)
 *       t2 = when the read's result arrived
 *     late_ms = t2 - (t1 + D): how long after its due time the message came
 *     (its due time counted from the commit, the latest it can be; the
 *     commit happens before t1, so this is a lower bound by the commit's
 *     acknowledgement, a few microseconds over a unix socket).
 *     late_server_ms = the reader backend's clock_timestamp() right after
 *     the read - (enqueued_at + D), the due time counted from the send.
 *     The message is then acked (not timed).  Prints one line per try
 *       try=N delay_ms=D late_ms=X late_server_ms=Y send_ms=Z
 *     (send_ms: how long the send took, commit included), or
 *       try=N delay_ms=D timeout
 *     when the read returned nothing within its wait.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define BATCH 50

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
die(PGconn *conn, const char *what)
{
	fprintf(stderr, "latency: %s: %s", what, PQerrorMessage(conn));
	exit(1);
}

/* one read: claim up to BATCH, ack them, record receive times; returns count */
static long
read_once(PGconn *conn, const char *queue, const char *mode, long wait_ms)
{
	static const char *sql =
		"WITH m AS MATERIALIZED ("
		"   SELECT msg_id, clock_timestamp() AS recv_at"
		"     FROM mq.read($1, 50, NULL, ($2 || ' ms')::interval)),"
		" a AS (SELECT mq.ack($1, array_agg(msg_id)) FROM m HAVING count(*) > 0)"
		" INSERT INTO lat_recv(msg_id, recv_at, mode)"
		" SELECT m.msg_id, m.recv_at, $3 FROM m, a";
	char		waitbuf[32];
	const char *params[3];
	PGresult   *res;
	long		n;

	snprintf(waitbuf, sizeof(waitbuf), "%ld", wait_ms);
	params[0] = queue;
	params[1] = waitbuf;
	params[2] = mode;
	res = PQexecParams(conn, sql, 3, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		die(conn, "read");
	n = atol(PQcmdTuples(res));
	PQclear(res);
	return n;
}

/* wait on the socket until a notification arrives or timeout; returns count */
static long
wait_notify(PGconn *conn, double timeout_s)
{
	long		got = 0;
	PGnotify   *nt;

	/* notifications that came in with the last result are already parsed */
	while ((nt = PQnotifies(conn)) != NULL)
	{
		got++;
		PQfreemem(nt);
	}
	if (got > 0)
		return got;
	{
		int			sock = PQsocket(conn);
		fd_set		in;
		struct timeval tv;

		FD_ZERO(&in);
		FD_SET(sock, &in);
		tv.tv_sec = (long) timeout_s;
		tv.tv_usec = (long) ((timeout_s - (long) timeout_s) * 1e6);
		if (select(sock + 1, &in, NULL, NULL, &tv) < 0 && errno != EINTR)
		{
			perror("select");
			exit(1);
		}
	}
	if (!PQconsumeInput(conn))
		die(conn, "PQconsumeInput");
	while ((nt = PQnotifies(conn)) != NULL)
	{
		got++;
		PQfreemem(nt);
	}
	return got;
}

static double
real_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static PGconn *
connect_or_die(void)
{
	PGconn	   *conn = PQconnectdb("");

	if (PQstatus(conn) != CONNECTION_OK)
		die(conn, "connect");
	return conn;
}

/* delayed mode: see the banner */
static int
run_delayed(const char *queue, int tries, long base_ms, long jitter_ms)
{
	static const char *read_sql =
		"SELECT msg_id, extract(epoch FROM enqueued_at)::float8,"
		"       extract(epoch FROM clock_timestamp())::float8"
		"  FROM mq.read($1, 1, NULL, '5 seconds')";
	static const char *active_sql =
		"SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'";
	static const char *send_sql =
		"SELECT mq.send($1, '{\"n\":1}'::jsonb, delay => ($2 || ' ms')::interval)";
	static const char *ack_sql = "SELECT mq.ack($1, $2::bigint)";
	PGconn	   *rd = connect_or_die();
	PGconn	   *sd = connect_or_die();
	char		pidbuf[16];
	int			t;

	snprintf(pidbuf, sizeof(pidbuf), "%d", PQbackendPID(rd));
	srandom((unsigned) getpid() ^ (unsigned) time(NULL));
	for (t = 1; t <= tries; t++)
	{
		const char *rparams[1] = {queue};
		const char *aparams[1] = {pidbuf};
		const char *sparams[2];
		char		delaybuf[32];
		long		delay_ms = base_ms + (jitter_ms > 0 ? random() % jitter_ms : 0);
		double		t0, t1, t2;
		PGresult   *res;
		int			i;

		if (!PQsendQueryParams(rd, read_sql, 1, NULL, rparams, NULL, NULL, 0))
			die(rd, "send read");
		/* until the reader's statement is running */
		for (i = 0; i < 2000; i++)
		{
			int			active;

			res = PQexecParams(sd, active_sql, 1, NULL, aparams, NULL, NULL, 0);
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				die(sd, "pg_stat_activity");
			active = atoi(PQgetvalue(res, 0, 0));
			PQclear(res);
			if (active)
				break;
			usleep(1000);
		}
		/* then a random while, so the send falls at any phase of its wait */
		usleep(20000 + random() % 250000);

		snprintf(delaybuf, sizeof(delaybuf), "%ld", delay_ms);
		sparams[0] = queue;
		sparams[1] = delaybuf;
		t0 = real_s();
		res = PQexecParams(sd, send_sql, 2, NULL, sparams, NULL, NULL, 0);
		t1 = real_s();
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die(sd, "send");
		PQclear(res);

		res = PQgetResult(rd);	/* blocks until the read returns */
		t2 = real_s();
		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die(rd, "read");
		if (PQntuples(res) != 1)
			printf("try=%d delay_ms=%ld timeout\n", t, delay_ms);
		else
		{
			const char *ap[2];
			PGresult   *ar;
			double		enq = atof(PQgetvalue(res, 0, 1));
			double		srv = atof(PQgetvalue(res, 0, 2));

			printf("try=%d delay_ms=%ld late_ms=%.3f late_server_ms=%.3f send_ms=%.3f\n",
				   t, delay_ms, (t2 - t1) * 1000 - delay_ms,
				   (srv - enq) * 1000 - delay_ms, (t1 - t0) * 1000);
			ap[0] = queue;
			ap[1] = PQgetvalue(res, 0, 0);
			ar = PQexecParams(sd, ack_sql, 2, NULL, ap, NULL, NULL, 0);
			if (PQresultStatus(ar) != PGRES_TUPLES_OK)
				die(sd, "ack");
			PQclear(ar);
		}
		fflush(stdout);
		PQclear(res);
		while ((res = PQgetResult(rd)) != NULL)
			PQclear(res);
	}
	PQfinish(rd);
	PQfinish(sd);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *mode, *queue;
	double		seconds, start, deadline;
	long		wait_ms = 5000;
	long		queries = 0, messages = 0, empty = 0, notifies = 0;
	PGconn	   *conn;

	if (argc < 4)
	{
		fprintf(stderr, "usage: latency longpoll|listen|poll|drain|rawdrain QUEUE SECONDS [WAIT_MS]\n"
				"       latency delayed QUEUE TRIES [DELAY_MS [JITTER_MS]]\n");
		return 2;
	}
	if (strcmp(argv[1], "delayed") == 0)
		return run_delayed(argv[2], atoi(argv[3]), argc > 4 ? atol(argv[4]) : 1000,
						   argc > 5 ? atol(argv[5]) : 0);
	mode = argv[1];
	queue = argv[2];
	seconds = atof(argv[3]);
	if (argc > 4)
		wait_ms = atol(argv[4]);

	conn = PQconnectdb("");
	if (PQstatus(conn) != CONNECTION_OK)
		die(conn, "connect");

	if (strcmp(mode, "listen") == 0 || strcmp(mode, "drain") == 0)
	{
		const char *params[1] = {queue};
		PGresult   *res = PQexecParams(conn, "SELECT mq.listen($1)", 1, NULL, params, NULL, NULL, 0);

		if (PQresultStatus(res) != PGRES_TUPLES_OK)
			die(conn, "mq.listen");
		PQclear(res);
		queries++;
	}
	else if (strcmp(mode, "rawdrain") == 0)
	{
		char		sql[200];
		char	   *chan;
		PGresult   *res;

		snprintf(sql, sizeof(sql), "mq.%s", queue);
		chan = PQescapeIdentifier(conn, sql, strlen(sql));
		snprintf(sql, sizeof(sql), "LISTEN %s", chan);
		PQfreemem(chan);
		res = PQexec(conn, sql);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			die(conn, "LISTEN");
		PQclear(res);
		queries++;
		mode = "drain";
	}
	else if (strcmp(mode, "longpoll") != 0 && strcmp(mode, "poll") != 0)
	{
		fprintf(stderr, "latency: unknown mode %s\n", mode);
		return 2;
	}

	start = now_s();
	deadline = start + seconds;
	for (;;)
	{
		double		left = deadline - now_s();
		long		n;

		if (left <= 0)
			break;
		if (strcmp(mode, "drain") == 0)
		{
			notifies += wait_notify(conn, left < 1 ? left : 1);
			continue;
		}
		if (strcmp(mode, "longpoll") == 0)
		{
			long		w = (long) (left * 1000);

			n = read_once(conn, queue, mode, w < wait_ms ? w : wait_ms);
		}
		else
			n = read_once(conn, queue, mode, 0);
		queries++;
		messages += n;
		if (n == 0)
			empty++;
		if (n >= BATCH)
			continue;			/* there may be more: read again at once */
		if (strcmp(mode, "listen") == 0)
		{
			if (n == 0)			/* else read once more: cheap, and catches a race */
				notifies += wait_notify(conn, left < 1 ? left : 1);
			else
			{
				PGnotify   *nt;

				while ((nt = PQnotifies(conn)) != NULL)
				{
					notifies++;
					PQfreemem(nt);
				}
			}
		}
		else if (strcmp(mode, "poll") == 0 && n == 0)
			usleep(100000);
	}
	printf("mode=%s queries=%ld messages=%ld empty=%ld notifies=%ld seconds=%.2f\n",
		   mode, queries, messages, empty, notifies, now_s() - start);
	PQfinish(conn);
	return 0;
}
