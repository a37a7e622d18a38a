/*-------------------------------------------------------------------------
 *
 * mq-worker.c
 *	  mq-worker: run a command once per message of an mq queue.
 *
 *	  mq-worker --queue emails --concurrency 4 -- ./send-email.sh [ARGS]
 *
 * Each claimed message runs the command (fork/exec, no shell) with the
 * payload on stdin and the metadata in MQ_* environment variables.  Exit
 * status 0 acks the message; anything else nacks it with the queue's
 * backoff and the tail of the command's stderr as last_error.  Up to
 * --concurrency commands run at once.  See docs/mq-worker.md.
 *
 * Structure: one process, one event loop around poll(2), two libpq
 * connections:
 *
 *	- the read connection carries only the long-polling claim
 *	  (mq.read(..., wait), or mq.poll in partitioned mode), sent
 *	  asynchronously so that the loop keeps running while it waits;
 *	- the control connection carries the short synchronous calls: ack,
 *	  nack, extend (heartbeat), commit, and the startup checks.
 *
 * Two connections because a waiting read occupies its connection for up
 * to --wait seconds, and acks and heartbeats of running commands must not
 * wait for it.  The claims belong to the read connection's session: the
 * server releases them when that session ends (mq.release_on_session_end),
 * so a broken control connection is reopened alone, never by closing the
 * read connection; a broken read connection has released the claims of
 * the running commands, which the log says, and their acks are refused as
 * stale if another worker took the messages meanwhile.  Children are tracked in slots; SIGCHLD, SIGTERM, SIGINT
 * and SIGHUP only write a byte to a self-pipe, which wakes poll().  A
 * watchdog process (start_watchdog) kills the commands' process groups if
 * the worker dies without stopping them.
 *
 * Lifecycle of a slot (work-queue mode):
 *	FREE -> RUNNING (command started; heartbeat every vt/3 via mq.extend)
 *		 -> DONE (command exited; outcome waits to be reported)
 *		 -> FREE (ack / nack sent, or the claim was lost)
 * A DONE slot whose report could not be sent (connection down) keeps its
 * place, so concurrency is never exceeded and nothing is forgotten; it is
 * reported after the reconnect.  The receipt makes a late report safe: if
 * the claim lapsed meanwhile, the server refuses it.
 *
 * Every value goes to the server as a parameter of PQexecParams; nothing
 * is spliced into SQL text.
 *
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

#define PROGNAME			"mq-worker"

/*
 * The version of mq this worker comes with: its Makefile passes
 * -DMQ_VERSION from the top-level Makefile's EXTVERSION, the library's
 * one home for it.
 */
#ifndef MQ_VERSION
#error "MQ_VERSION is not defined: build with src/bin/mq-worker/Makefile"
#endif

/* Exit status when the command cannot be executed (see docs/mq-worker.md). */
#define EXIT_CANNOT_EXEC	3

/*
 * A message's key, headers or last_error longer than this goes to the
 * command in a file (MQ_KEY_FILE...), not in the environment: Linux
 * refuses an environment string over 128 KiB (execve fails with E2BIG),
 * and all of them together over a quarter of the stack limit.
 */
#define ENV_VALUE_MAX		65536

/* The variables that can be that long: the message's, not the worker's. */
#define N_SPILLABLE			3
static const char *const spillable[N_SPILLABLE] = {"MQ_KEY", "MQ_HEADERS", "MQ_LAST_ERROR"};

/* Bytes of the command's stderr kept for last_error. */
#define ERR_TAIL_SIZE		1024

/* After the grace period: SIGTERM, then SIGKILL this much later. */
#define KILL_DELAY_S		5.0

/* Reconnect backoff bounds. */
#define RECONNECT_MIN_S		0.5
#define RECONNECT_MAX_S		30.0

/* Partitioned mode: local retry backoff of a failed command. */
#define PART_RETRY_MIN_S	1.0
#define PART_RETRY_MAX_S	60.0

#define MAX_CONCURRENCY		1024

/* ---------------------------------------------------------------- options */

static const char *dsn = NULL;
static const char *queue = NULL;
static int	concurrency = 1;
static int	batch = 0;			/* 0: free slots */
static double vt_s = 0;			/* 0: the queue's visibility_timeout */
static double wait_s = 20;
static double grace_s = 30;
static double progress_s = 0;	/* 0: no progress line */
static const char *consumer_id = NULL;
static const char *group = NULL;
static const char *member = NULL;
static bool quiet = false;
static bool log_json = false;	/* --log-format json */
static char **command = NULL;	/* argv of the command, NULL-terminated */

/* ------------------------------------------------------------------ state */

typedef enum
{
	SLOT_FREE,
	SLOT_RUNNING,
	SLOT_DONE
} SlotState;

typedef struct Slot
{
	SlotState	state;
	pid_t		pid;
	int			in_fd;			/* write end of the command's stdin, or -1 */
	int			err_fd;			/* read end of the command's stderr, or -1 */
	char	   *input;			/* payload + "\n" */
	size_t		input_len;
	size_t		input_off;
	char		tail[ERR_TAIL_SIZE];	/* ring buffer of stderr */
	size_t		tail_pos;		/* next write position */
	size_t		tail_total;		/* bytes ever written (capped use) */
	int			status;			/* waitpid status, valid when DONE */
	bool		lost;			/* heartbeat found the claim gone */
	bool		killed;			/* we signalled it at shutdown */
	double		started;
	double		next_heartbeat;
	/* work-queue mode */
	char		msg_id[24];
	char		receipt[24];
	/* partitioned mode */
	int			part_msg;		/* index into pending[], or -1 */
	char	   *spill[N_SPILLABLE]; /* files of values too long for the
									 * environment, or NULL */
} Slot;

/* Partitioned mode: messages polled and not yet committed. */
typedef struct PartMsg
{
	bool		used;
	bool		running;
	long long	partition;
	long long	offset;
	char		partition_str[24];
	char		offset_str[24];
	char	   *key;
	char	   *payload;
	char	   *headers;
	char	   *enqueued_at;
	int			failures;
	double		retry_at;
} PartMsg;

static Slot *slots;
static PartMsg *pending;
static int	n_pending_max;

/* Partitioned mode: member heartbeat (mq.heartbeat) cadence. */
static double session_s = 10;
static double next_member_hb = 0;

/*
 * Partitioned mode: a commit waits while a poll is in flight (see
 * report_partition); a poll in flight this long is taken to be waiting
 * for messages and is cancelled, so that the commit need not wait --wait.
 */
#define POLL_CANCEL_AFTER_S	0.2

static PGconn *read_conn = NULL;
static PGconn *ctl_conn = NULL;
static bool db_ok = false;
static double reconnect_at = 0;
static double reconnect_delay = RECONNECT_MIN_S;
static bool read_in_flight = false;
static double read_sent_at = 0;	/* when the read in flight was sent */
static bool read_cancelled = false;
static double read_retry_at = 0;	/* after a failed read: not before */
static double read_retry_delay = RECONNECT_MIN_S;
static bool fatal_error = false;
static bool cannot_exec = false;	/* the command could not be executed */
static PGresult *read_result = NULL;	/* claimed rows, until the read commits */

/*
 * Write end of the pipe to the watchdog process (see start_watchdog), or
 * -1.  The worker tells it the process group of each command it starts
 * and reaps; when the worker dies, even by SIGKILL, the watchdog reads
 * EOF and kills the groups still listed.
 */
static int	watchdog_fd = -1;

static volatile sig_atomic_t got_stop = 0;
static int	self_pipe[2] = {-1, -1};
static bool stopping = false;
static double stop_at = 0;
static bool sent_term = false;
static double kill_at = 0;

/* Counters */
static long n_processed = 0;	/* exit 0, acked (or committed) */
static long n_failed = 0;		/* non-zero exit, nacked */
static long n_lost = 0;			/* claim lost: not acked/nacked */
static long n_released = 0;		/* killed at shutdown, given back */
static long last_progress_done = 0;
static double started_at;
static double next_progress = 0;

/* ---------------------------------------------------------------- helpers */

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * What a log line is about, for --log-format json: set while a message is
 * started or reported (set_log_about), cleared after.  Text lines say it
 * in their wording instead.
 */
static struct
{
	char		msg_id[24];		/* work-queue mode, or "" */
	char		partition[24];	/* partitioned mode, or "" */
	char		offset[24];
	int			status;			/* waitpid status of the command, or -1 */
}			log_about = {"", "", "", -1};

/* Digits only (ids and offsets, printed as JSON numbers); NULL: none. */
static void
set_log_about(const char *msg_id, const char *partition, const char *offset, int status)
{
	snprintf(log_about.msg_id, sizeof(log_about.msg_id), "%s", msg_id ? msg_id : "");
	snprintf(log_about.partition, sizeof(log_about.partition), "%s", partition ? partition : "");
	snprintf(log_about.offset, sizeof(log_about.offset), "%s", offset ? offset : "");
	log_about.status = status;
}

static void
clear_log_about(void)
{
	set_log_about(NULL, NULL, NULL, -1);
}

static void sanitize_utf8(char *s, size_t len);

/* A JSON string: UTF-8 made valid, quotes, backslashes, controls escaped. */
static void
json_string(FILE *out, const char *in)
{
	size_t		len = strlen(in);
	char	   *s = malloc(len + 1);
	size_t		i;

	if (s == NULL)
	{
		fputs("\"?\"", out);
		return;
	}
	memcpy(s, in, len + 1);
	sanitize_utf8(s, len);
	fputc('"', out);
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			fprintf(out, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", out);
		else if (c < 0x20 || c == 0x7f)
			fprintf(out, "\\u%04x", c);
		else
			fputc(c, out);
	}
	fputc('"', out);
	free(s);
}

static void
json_field(FILE *out, const char *name, const char *value)
{
	fprintf(out, ",\"%s\":", name);
	json_string(out, value);
}

/*
 * One log line on stderr.  Text: "TIME mq-worker[PID]: [LEVEL: ]MESSAGE".
 * JSON (--log-format json): one object per line with time, level (info,
 * warning, error), pid, msg, queue, consumer_id, group and member in
 * partitioned mode, and what the line is about (log_about): msg_id, or
 * partition and offset; exit_status or signal of the command.
 */
static void
vlog_line(const char *level, const char *fmt, va_list ap)
{
	char		ts[32];
	struct timespec rt;
	struct tm	tm;

	clock_gettime(CLOCK_REALTIME, &rt);
	gmtime_r(&rt.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	if (log_json)
	{
		char		msg[8192];
		int			st = log_about.status;

		vsnprintf(msg, sizeof(msg), fmt, ap);
		fprintf(stderr, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"pid\":%d",
				ts, rt.tv_nsec / 1000000, level, (int) getpid());
		json_field(stderr, "msg", msg);
		if (queue)
			json_field(stderr, "queue", queue);
		if (consumer_id)
			json_field(stderr, "consumer_id", consumer_id);
		if (group)
		{
			json_field(stderr, "group", group);
			json_field(stderr, "member", member);
		}
		if (log_about.msg_id[0])
			fprintf(stderr, ",\"msg_id\":%s", log_about.msg_id);
		if (log_about.partition[0] && log_about.offset[0])
			fprintf(stderr, ",\"partition\":%s,\"offset\":%s",
					log_about.partition, log_about.offset);
		if (st != -1 && WIFEXITED(st))
			fprintf(stderr, ",\"exit_status\":%d", WEXITSTATUS(st));
		else if (st != -1 && WIFSIGNALED(st))
			fprintf(stderr, ",\"signal\":%d", WTERMSIG(st));
		fputs("}\n", stderr);
	}
	else
	{
		fprintf(stderr, "%s.%03ldZ %s[%d]: %s%s", ts, rt.tv_nsec / 1000000,
				PROGNAME, (int) getpid(), strcmp(level, "info") == 0 ? "" : level,
				strcmp(level, "info") == 0 ? "" : ": ");
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
	}
	fflush(stderr);
}

/* Informational: suppressed by --quiet. */
static void
log_info(const char *fmt,...) __attribute__((format(printf, 1, 2)));
static void
log_info(const char *fmt,...)
{
	va_list		ap;

	if (quiet)
		return;
	va_start(ap, fmt);
	vlog_line("info", fmt, ap);
	va_end(ap);
}

/* Warnings and errors: always printed. */
static void
log_error(const char *fmt,...) __attribute__((format(printf, 1, 2)));
static void
log_error(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vlog_line("error", fmt, ap);
	va_end(ap);
}

static void
log_warning(const char *fmt,...) __attribute__((format(printf, 1, 2)));
static void
log_warning(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vlog_line("warning", fmt, ap);
	va_end(ap);
}

/* Always printed (asked for with --progress). */
static void
log_always(const char *fmt,...) __attribute__((format(printf, 1, 2)));
static void
log_always(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vlog_line("info", fmt, ap);
	va_end(ap);
}

static void *
xmalloc(size_t n)
{
	void	   *p = calloc(1, n ? n : 1);

	if (p == NULL)
	{
		log_error("out of memory");
		exit(1);
	}
	return p;
}

static char *
xstrdup(const char *s)
{
	char	   *p = strdup(s ? s : "");

	if (p == NULL)
	{
		log_error("out of memory");
		exit(1);
	}
	return p;
}

/* A libpq error message without its trailing newline. */
static const char *
pq_msg(const char *m)
{
	static char buf[1024];
	size_t		n;

	snprintf(buf, sizeof(buf), "%s", m ? m : "");
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return buf;
}

static void
set_nonblock(int fd)
{
	int			fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		(void) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static void
fmt_seconds(char *buf, size_t len, double s)
{
	snprintf(buf, len, "%.3f", s);
}

/* ---------------------------------------------------------------- signals */

static void
wake_self(void)
{
	int			save = errno;
	char		c = 0;

	if (self_pipe[1] >= 0)
		(void) !write(self_pipe[1], &c, 1);
	errno = save;
}

static void
handle_stop(int signo)
{
	(void) signo;
	got_stop++;
	wake_self();
}

static void
handle_chld(int signo)
{
	(void) signo;
	wake_self();
}

/* Set one signal's disposition: HANDLER (or SIG_IGN, SIG_DFL) with FLAGS. */
static void
set_signal(int signo, void (*handler) (int), int flags)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = flags;
	sa.sa_handler = handler;
	sigaction(signo, &sa, NULL);
}

static void
setup_signals(void)
{
	if (pipe2(self_pipe, O_CLOEXEC | O_NONBLOCK) != 0)
	{
		log_error("could not create pipe: %s", strerror(errno));
		exit(1);
	}
	set_signal(SIGTERM, handle_stop, SA_RESTART);
	set_signal(SIGINT, handle_stop, SA_RESTART);

	/*
	 * SIGHUP drains as SIGTERM does.  There is nothing to reload (every
	 * setting is on the command line), and its default action would kill
	 * the worker without releasing anything: a closed terminal or a
	 * "reload" by a service manager must not cost running commands.
	 */
	set_signal(SIGHUP, handle_stop, SA_RESTART);
	set_signal(SIGCHLD, handle_chld, SA_RESTART | SA_NOCLDSTOP);
	/* a command that closes its stdin early must not kill us */
	set_signal(SIGPIPE, SIG_IGN, 0);
}

/*
 * The watchdog: a small child process that outlives the worker just long
 * enough to kill the process groups of its commands.  PR_SET_PDEATHSIG
 * (start_command) kills each command when the worker dies, but only the
 * command's own process, not what it started (sh -c '...' runs its
 * programs as children); without this, a kill -9 of the worker would leave
 * them running while their message is delivered to another command.
 *
 * Protocol on the pipe: "+PID\n" when a command (leader of process group
 * PID) starts, "-PID\n" once it is reaped.  At EOF (the worker exited or
 * died) the watchdog sends SIGKILL to every group still listed and exits.
 * A normal exit lists none: every command has been reaped by then.
 */
static void
watchdog_main(int fd)
{
	pid_t	   *groups = NULL;
	int			n = 0,
				cap = 0;
	char		buf[4096];
	size_t		have = 0;
	int			i;

	/* stay until the worker is gone, whatever the terminal sends */
	set_signal(SIGINT, SIG_IGN, 0);
	set_signal(SIGTERM, SIG_IGN, 0);
	set_signal(SIGHUP, SIG_IGN, 0);
	set_signal(SIGPIPE, SIG_IGN, 0);
	set_signal(SIGCHLD, SIG_DFL, 0);

	for (;;)
	{
		ssize_t		r = read(fd, buf + have, sizeof(buf) - have);
		char	   *line,
				   *nl;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		have += (size_t) r;
		line = buf;
		while ((nl = memchr(line, '\n', have - (size_t) (line - buf))) != NULL)
		{
			long		pid;

			*nl = '\0';
			pid = strtol(line + 1, NULL, 10);
			if (pid > 1 && line[0] == '+')
			{
				if (n == cap)
				{
					cap = cap ? cap * 2 : 64;
					groups = realloc(groups, sizeof(pid_t) * cap);
					if (groups == NULL)
						_exit(1);
				}
				groups[n++] = (pid_t) pid;
			}
			else if (pid > 1 && line[0] == '-')
			{
				for (i = 0; i < n; i++)
					if (groups[i] == (pid_t) pid)
					{
						groups[i] = groups[--n];
						break;
					}
			}
			line = nl + 1;
		}
		have -= (size_t) (line - buf);
		memmove(buf, line, have);
	}
	for (i = 0; i < n; i++)
	{
		(void) kill(-groups[i], SIGKILL);
		(void) kill(groups[i], SIGKILL);
	}
	_exit(0);
}

static void
start_watchdog(void)
{
	int			p[2];
	pid_t		pid;

	if (pipe2(p, O_CLOEXEC) != 0)
	{
		log_error("could not create pipe: %s", strerror(errno));
		exit(1);
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		log_error("could not fork: %s", strerror(errno));
		exit(1);
	}
	if (pid == 0)
	{
		close(p[1]);
		if (self_pipe[0] >= 0)
			close(self_pipe[0]);
		if (self_pipe[1] >= 0)
			close(self_pipe[1]);
		watchdog_main(p[0]);
	}
	close(p[0]);
	watchdog_fd = p[1];
}

static void
watchdog_tell(char op, pid_t pid)
{
	char		line[32];
	int			len;

	if (watchdog_fd < 0)
		return;
	len = snprintf(line, sizeof(line), "%c%d\n", op, (int) pid);
	/* a short line on a pipe is written whole; a dead watchdog: EPIPE */
	if (write(watchdog_fd, line, (size_t) len) != len)
	{
		log_warning("the watchdog process is gone: commands may outlive a killed worker");
		close(watchdog_fd);
		watchdog_fd = -1;
	}
}

/* ------------------------------------------------------------- connection */

static PGconn *
connect_one(const char *appname)
{
	/*
	 * Keywords are processed in order and the last value wins: the defaults
	 * before dbname (which expands --dsn) may be overridden by the DSN; the
	 * client encoding after it may not, since payloads and error text are
	 * handled as UTF-8.
	 */
	const char *keywords[9];
	const char *values[9];
	int			i = 0;
	PGconn	   *c;

	if (getenv("PGCONNECT_TIMEOUT") == NULL)
	{
		keywords[i] = "connect_timeout";
		values[i++] = "10";
	}
	/* notice a half-open TCP connection within about a minute */
	keywords[i] = "keepalives_idle";
	values[i++] = "30";
	keywords[i] = "keepalives_interval";
	values[i++] = "10";
	keywords[i] = "keepalives_count";
	values[i++] = "3";
	keywords[i] = "fallback_application_name";
	values[i++] = appname;
	keywords[i] = "dbname";
	values[i++] = dsn ? dsn : "";
	keywords[i] = "client_encoding";
	values[i++] = "UTF8";
	keywords[i] = NULL;
	values[i] = NULL;

	c = PQconnectdbParams(keywords, values, 1);
	if (c == NULL || PQstatus(c) != CONNECTION_OK)
	{
		log_error("could not connect: %s", pq_msg(c ? PQerrorMessage(c) : "out of memory"));
		PQfinish(c);
		return NULL;
	}
	return c;
}

static void
disconnect_all(void)
{
	/* rows of a read that did not commit: the server rolls the claim back */
	PQclear(read_result);
	read_result = NULL;
	PQfinish(read_conn);
	PQfinish(ctl_conn);
	read_conn = ctl_conn = NULL;
	db_ok = false;
	read_in_flight = false;
	read_cancelled = false;
}

static int	running_claims(void);

/*
 * Reconnect after a broken connection: not before reconnect_at; while a
 * connection is missing nothing is read or reported (db_ok false).
 */
static void
lost(const char *what)
{
	if (db_ok)
		log_error("connection lost during %s; reconnecting", what);
	db_ok = false;
	reconnect_at = now_s() + reconnect_delay;
}

/*
 * The control connection broke: drop it alone.  The read connection stays,
 * and with it the session that owns the claims of the running commands:
 * the server releases a session's claims when it ends, so closing it here
 * would hand them to other workers while they run.
 */
static void
ctl_lost(const char *what)
{
	lost(what);
	PQfinish(ctl_conn);
	ctl_conn = NULL;
}

/*
 * The read connection broke: its session ended, and the server released
 * its claims (those of the running commands too, unless
 * mq.release_on_session_end is off for our role): other workers may take
 * those messages while our commands still run, and our ack of such a
 * message is refused (its receipt is stale).  Said here, and again for
 * each refused ack.  Rows of a read that did not commit were rolled back.
 */
static void
read_lost(const char *what)
{
	int			n = running_claims();

	lost(what);
	if (n > 0)
		log_warning("the read connection's session ended with %d message(s) running: the server released their claims, "
					"so they may be delivered to another worker meanwhile; acks of those are refused", n);
	PQclear(read_result);
	read_result = NULL;
	read_in_flight = false;
	read_cancelled = false;
	PQfinish(read_conn);
	read_conn = NULL;
}

static bool
try_connect(void)
{
	/*
	 * No session-level SET here: through a transaction pooler it would stay
	 * on the server connection for its next client.  The long-polling read
	 * lifts statement_timeout in its own transaction (begin_read).  Only
	 * the missing connections are opened (see ctl_lost).
	 */
	if (read_conn == NULL)
		read_conn = connect_one(PROGNAME);
	if (read_conn != NULL && ctl_conn == NULL)
		ctl_conn = connect_one(PROGNAME);
	if (read_conn != NULL && ctl_conn != NULL)
	{
		db_ok = true;
		reconnect_delay = RECONNECT_MIN_S;
		return true;
	}
	db_ok = false;
	reconnect_at = now_s() + reconnect_delay;
	reconnect_delay *= 2;
	if (reconnect_delay > RECONNECT_MAX_S)
		reconnect_delay = RECONNECT_MAX_S;
	return false;
}

/* SQLSTATEs after which retrying cannot help. */
static bool
is_fatal_sqlstate(const char *state)
{
	return state != NULL &&
		(strcmp(state, "42704") == 0 ||		/* no such queue */
		 strcmp(state, "42501") == 0 ||		/* no privilege */
		 strcmp(state, "42883") == 0 ||		/* mq not installed / old */
		 strcmp(state, "42809") == 0 ||		/* wrong kind of queue */
		 strcmp(state, "3F000") == 0);		/* no schema mq */
}

/*
 * Run one short statement on the control connection.  Returns the result
 * (caller PQclears) when its status is PGRES_TUPLES_OK; otherwise logs,
 * handles a broken connection or a fatal error, and returns NULL.
 */
static PGresult *
ctl_exec(const char *what, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res;

	if (!db_ok)
		return NULL;
	res = PQexecParams(ctl_conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK)
		return res;
	if (PQstatus(ctl_conn) == CONNECTION_BAD)
	{
		PQclear(res);
		ctl_lost(what);
		return NULL;
	}
	log_error("%s failed: %s", what,
			  pq_msg(res ? PQresultErrorMessage(res) : PQerrorMessage(ctl_conn)));
	if (res && is_fatal_sqlstate(PQresultErrorField(res, PG_DIAG_SQLSTATE)))
		fatal_error = true;
	PQclear(res);
	return NULL;
}

/* ---------------------------------------------------------- UTF-8 helpers */

/*
 * Make text safe to send as a UTF-8 parameter: invalid sequences and NUL
 * bytes become '?'.  Works in place (the output is never longer).
 */
static void
sanitize_utf8(char *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = (unsigned char) s[i];
		size_t		n,
					k;

		if (c == 0)
		{
			s[i++] = '?';
			continue;
		}
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c >= 0xC2 && c <= 0xDF)
			n = 2;
		else if (c >= 0xE0 && c <= 0xEF)
			n = 3;
		else if (c >= 0xF0 && c <= 0xF4)
			n = 4;
		else
		{
			s[i++] = '?';
			continue;
		}
		if (i + n > len)
		{
			s[i++] = '?';
			continue;
		}
		for (k = 1; k < n; k++)
			if ((((unsigned char) s[i + k]) & 0xC0) != 0x80)
				break;
		/* overlongs and surrogates */
		if (k == n)
		{
			unsigned char c1 = (unsigned char) s[i + 1];

			if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
				(c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F))
				k = 0;
		}
		if (k != n)
		{
			s[i++] = '?';
			continue;
		}
		i += n;
	}
}

/* The last ERR_TAIL_SIZE bytes of stderr, as a malloc'd UTF-8 string. */
static char *
slot_tail(Slot *s)
{
	size_t		n = s->tail_total < ERR_TAIL_SIZE ? s->tail_total : ERR_TAIL_SIZE;
	char	   *out = xmalloc(n + 1);
	size_t		start = (s->tail_pos + ERR_TAIL_SIZE - n) % ERR_TAIL_SIZE;
	size_t		i;
	size_t		skip = 0;

	for (i = 0; i < n; i++)
		out[i] = s->tail[(start + i) % ERR_TAIL_SIZE];
	out[n] = '\0';
	/* a cut tail starts mid-character: drop continuation bytes */
	if (s->tail_total > ERR_TAIL_SIZE)
		while (skip < n && (((unsigned char) out[skip]) & 0xC0) == 0x80)
			skip++;
	if (skip)
		memmove(out, out + skip, n - skip + 1);
	n -= skip;
	/* trailing newlines carry nothing */
	while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
	sanitize_utf8(out, n);
	return out;
}

/* --------------------------------------------------------------- commands */

static int
free_slots(void)
{
	int			i,
				n = 0;

	for (i = 0; i < concurrency; i++)
		if (slots[i].state == SLOT_FREE)
			n++;
	return n;
}

static int
in_flight(void)
{
	return concurrency - free_slots();
}

/* Work-queue mode: messages claimed and not yet reported (or lost). */
static int
running_claims(void)
{
	int			i,
				n = 0;

	for (i = 0; i < concurrency && !group; i++)
		if (slots[i].state != SLOT_FREE && !slots[i].lost)
			n++;
	return n;
}

static Slot *
get_free_slot(void)
{
	int			i;

	for (i = 0; i < concurrency; i++)
		if (slots[i].state == SLOT_FREE)
			return &slots[i];
	return NULL;
}

static void
close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Remove the files of a command's long values (it has ended). */
static void
slot_unspill(Slot *s)
{
	int			i;

	for (i = 0; i < N_SPILLABLE; i++)
		if (s->spill[i])
		{
			(void) unlink(s->spill[i]);
			free(s->spill[i]);
			s->spill[i] = NULL;
		}
}

static void
slot_reset(Slot *s)
{
	slot_unspill(s);
	close_fd(&s->in_fd);
	close_fd(&s->err_fd);
	free(s->input);
	memset(s, 0, sizeof(*s));
	s->state = SLOT_FREE;
	s->in_fd = s->err_fd = -1;
	s->part_msg = -1;
}

typedef struct EnvVar
{
	const char *name;
	const char *value;			/* NULL: unset */
} EnvVar;

typedef enum
{
	START_OK,
	START_FAILED,				/* fork or pipe failure: may pass */
	START_EXEC_FAILED			/* the command cannot be executed */
} StartResult;

/*
 * Write value to a new file, readable by this user only, in $TMPDIR (or
 * /tmp); returns its malloc'd path, or NULL (logged).
 */
static char *
spill_file(const char *name, const char *value)
{
	const char *dir = getenv("TMPDIR");
	size_t		len = strlen(value);
	size_t		off = 0;
	char	   *path;
	int			fd;

	if (dir == NULL || dir[0] == '\0')
		dir = "/tmp";
	path = xmalloc(strlen(dir) + strlen(name) + 32);
	sprintf(path, "%s/mq-worker-%s-XXXXXX", dir, name);
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0)
	{
		log_error("could not create a file in \"%s\" for %s: %s", dir, name, strerror(errno));
		free(path);
		return NULL;
	}
	while (off < len)
	{
		ssize_t		n = write(fd, value + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			log_error("could not write \"%s\": %s", path, strerror(errno));
			close(fd);
			unlink(path);
			free(path);
			return NULL;
		}
		off += (size_t) n;
	}
	close(fd);
	return path;
}

/*
 * The command's environment, with each spillable value longer than
 * ENV_VALUE_MAX moved to a file: NAME is unset and NAME_FILE names the
 * file (kept in s->spill until the command ends).  Otherwise NAME_FILE is
 * unset, so that one inherited from the worker cannot mislead.  out has
 * room for nenv + N_SPILLABLE entries; names_buf for their names.
 * Returns the new count, or -1 when a file could not be written.
 */
static int
spill_env(Slot *s, const EnvVar *env, int nenv, EnvVar *out,
		  char names_buf[N_SPILLABLE][32])
{
	int			i,
				k,
				n = 0;

	for (i = 0; i < nenv; i++)
	{
		out[n] = env[i];
		for (k = 0; k < N_SPILLABLE; k++)
			if (strcmp(env[i].name, spillable[k]) == 0)
				break;
		if (k == N_SPILLABLE)
		{
			n++;
			continue;
		}
		snprintf(names_buf[k], 32, "%s_FILE", spillable[k]);
		if (env[i].value && strlen(env[i].value) > ENV_VALUE_MAX)
		{
			s->spill[k] = spill_file(spillable[k], env[i].value);
			if (s->spill[k] == NULL)
				return -1;
			out[n++].value = NULL;
			out[n].name = names_buf[k];
			out[n++].value = s->spill[k];
		}
		else
		{
			n++;
			out[n].name = names_buf[k];
			out[n++].value = NULL;
		}
	}
	return n;
}

/*
 * Start the command in slot s with the given payload and environment.
 * START_EXEC_FAILED (execvp failed in the child: no such file, no
 * permission...) sets cannot_exec: retrying the next message cannot help.
 */
static StartResult
spawn_command(Slot *s, const char *payload, const EnvVar *env, int nenv)
{
	int			in_pipe[2],
				err_pipe[2],
				exec_pipe[2];
	pid_t		pid;
	pid_t		parent = getpid();
	size_t		plen = strlen(payload);
	int			child_errno = 0;
	ssize_t		r;

	if (pipe2(in_pipe, O_CLOEXEC) != 0)
	{
		log_error("could not create pipe: %s", strerror(errno));
		return START_FAILED;
	}
	if (pipe2(err_pipe, O_CLOEXEC) != 0)
	{
		log_error("could not create pipe: %s", strerror(errno));
		close(in_pipe[0]);
		close(in_pipe[1]);
		return START_FAILED;
	}
	/* closed by a successful exec; carries errno when exec fails */
	if (pipe2(exec_pipe, O_CLOEXEC) != 0)
	{
		log_error("could not create pipe: %s", strerror(errno));
		close(in_pipe[0]);
		close(in_pipe[1]);
		close(err_pipe[0]);
		close(err_pipe[1]);
		return START_FAILED;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
	{
		log_error("could not fork: %s", strerror(errno));
		close(in_pipe[0]);
		close(in_pipe[1]);
		close(err_pipe[0]);
		close(err_pipe[1]);
		close(exec_pipe[0]);
		close(exec_pipe[1]);
		return START_FAILED;
	}
	if (pid == 0)
	{
		int			i;
		int			e;

#ifdef __linux__

		/*
		 * Die with the worker: a command that outlives a kill -9 of its
		 * worker would run on while its message, its claim gone with the
		 * worker, is delivered to another command.  If the worker died
		 * before this line, we are already orphaned: do not start.
		 */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
			_exit(1);
#else
		(void) parent;
#endif
		/* own process group, so that a kill reaches its children too */
		setpgid(0, 0);
		set_signal(SIGPIPE, SIG_DFL, 0);
		set_signal(SIGTERM, SIG_DFL, 0);
		set_signal(SIGINT, SIG_DFL, 0);
		set_signal(SIGHUP, SIG_DFL, 0);
		set_signal(SIGCHLD, SIG_DFL, 0);
		if (dup2(in_pipe[0], STDIN_FILENO) < 0 ||
			dup2(err_pipe[1], STDERR_FILENO) < 0)
		{
			e = errno;
			(void) !write(exec_pipe[1], &e, sizeof(e));
			_exit(126);
		}
		for (i = 0; i < nenv; i++)
		{
			if (env[i].value)
				setenv(env[i].name, env[i].value, 1);
			else
				unsetenv(env[i].name);
		}
		execvp(command[0], command);
		e = errno;
		(void) !write(exec_pipe[1], &e, sizeof(e));
		_exit(127);
	}
	/* parent; both sides call setpgid to close the race */
	(void) setpgid(pid, pid);
	watchdog_tell('+', pid);
	close(in_pipe[0]);
	close(err_pipe[1]);
	close(exec_pipe[1]);

	/*
	 * Wait for the exec: EOF means it succeeded.  This takes as long as
	 * the child's few system calls before execvp.
	 */
	do
		r = read(exec_pipe[0], &child_errno, sizeof(child_errno));
	while (r < 0 && errno == EINTR);
	close(exec_pipe[0]);
	if (r == (ssize_t) sizeof(child_errno))
	{
		int			status;

		log_error("cannot execute \"%s\": %s", command[0], strerror(child_errno));
		close(in_pipe[1]);
		close(err_pipe[0]);
		while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
			;
		watchdog_tell('-', pid);
		cannot_exec = true;
		return START_EXEC_FAILED;
	}
	set_nonblock(in_pipe[1]);
	set_nonblock(err_pipe[0]);

	s->state = SLOT_RUNNING;
	s->pid = pid;
	s->in_fd = in_pipe[1];
	s->err_fd = err_pipe[0];
	s->input = xmalloc(plen + 2);
	memcpy(s->input, payload, plen);
	s->input[plen] = '\n';
	s->input_len = plen + 1;
	s->input_off = 0;
	s->started = now_s();
	s->next_heartbeat = s->started + vt_s / 3.0;
	return START_OK;
}

/* Start the command: its long values spilled to files (spill_env), then spawned. */
static StartResult
start_command(Slot *s, const char *payload, const EnvVar *env, int nenv)
{
	EnvVar	   *full_env = xmalloc(sizeof(EnvVar) * (nenv + N_SPILLABLE));
	char		names_buf[N_SPILLABLE][32];
	int			nfull = spill_env(s, env, nenv, full_env, names_buf);
	StartResult result = START_FAILED;

	if (nfull >= 0)
		result = spawn_command(s, payload, full_env, nfull);
	free(full_env);
	return result;
}

/* Feed stdin as far as the pipe takes it; close it when done. */
static void
slot_write_input(Slot *s)
{
	while (s->in_fd >= 0 && s->input_off < s->input_len)
	{
		ssize_t		n = write(s->in_fd, s->input + s->input_off,
							  s->input_len - s->input_off);

		if (n > 0)
			s->input_off += (size_t) n;
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && errno == EAGAIN)
			return;
		else
			break;				/* EPIPE: the command does not read stdin */
	}
	close_fd(&s->in_fd);
}

/* Read what stderr has; keep the tail.  Closes the fd at EOF. */
static void
slot_read_stderr(Slot *s)
{
	char		buf[4096];

	while (s->err_fd >= 0)
	{
		ssize_t		n = read(s->err_fd, buf, sizeof(buf));
		ssize_t		i;

		if (n > 0)
		{
			for (i = 0; i < n; i++)
			{
				s->tail[s->tail_pos] = buf[i];
				s->tail_pos = (s->tail_pos + 1) % ERR_TAIL_SIZE;
			}
			s->tail_total += (size_t) n;
		}
		else if (n < 0 && errno == EINTR)
			continue;
		else if (n < 0 && errno == EAGAIN)
			return;
		else
			close_fd(&s->err_fd);	/* EOF or error */
	}
}

/* Collect exited commands. */
static void
reap_children(void)
{
	for (;;)
	{
		int			status;
		pid_t		pid = waitpid(-1, &status, WNOHANG);
		int			i;

		if (pid <= 0)
			break;
		for (i = 0; i < concurrency; i++)
		{
			Slot	   *s = &slots[i];

			if (s->state == SLOT_RUNNING && s->pid == pid)
			{
				/*
				 * Everything the command wrote before exiting is in the pipe
				 * now; take it.  Output of leftover grandchildren is not
				 * waited for.
				 */
				slot_read_stderr(s);
				watchdog_tell('-', pid);
				slot_unspill(s);
				close_fd(&s->err_fd);
				close_fd(&s->in_fd);
				s->status = status;
				s->state = SLOT_DONE;
				break;
			}
		}
	}
}

static void
describe_status(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d (%s)", WTERMSIG(status),
				 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "status %d", status);
}

static bool
succeeded(int status)
{
	return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/*
 * 126 and 127 are the shell's "found but cannot execute" and "not found"
 * (POSIX; sh -c 'typo' exits 127): the command could not run what it was
 * asked to, which retrying the message cannot fix.
 */
static bool
could_not_execute(int status)
{
	return WIFEXITED(status) &&
		(WEXITSTATUS(status) == 126 || WEXITSTATUS(status) == 127);
}

/* ------------------------------------------------------- work-queue mode */

static const char *const SQL_READ =
"SELECT msg_id, receipt, key, payload, headers, attempts, "
"       pg_catalog.to_char(pg_catalog.timezone('UTC', enqueued_at), "
"                          'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
"       last_error "
"  FROM mq.read($1, $2::integer, pg_catalog.make_interval(secs => $3::float8), "
"               pg_catalog.make_interval(secs => $4::float8))";

/*
 * Open the read's transaction.  The long-polling read waits by design, so
 * a statement_timeout shorter than --wait would cancel every idle read;
 * SET LOCAL lifts it for this transaction only, where a session-level SET
 * would stay on a pooled server connection for its next client.  The
 * claim commits (end_read) before any command starts: a read whose
 * transaction never commits (worker killed, connection lost) claims
 * nothing.  Returns false (and arranges the retry) on failure.
 */
static bool
begin_read(void)
{
	PGresult   *res = PQexec(read_conn, "BEGIN; SET LOCAL statement_timeout = 0");

	if (PQresultStatus(res) == PGRES_COMMAND_OK)
	{
		PQclear(res);
		return true;
	}
	if (PQstatus(read_conn) == CONNECTION_BAD)
	{
		PQclear(res);
		read_lost(group ? "mq.poll" : "mq.read");
		return false;
	}
	log_error("could not begin the read's transaction: %s",
			  pq_msg(res ? PQresultErrorMessage(res) : PQerrorMessage(read_conn)));
	PQclear(res);
	/* leave a failed transaction block, if the BEGIN got that far */
	PQclear(PQexec(read_conn, "ROLLBACK"));
	read_retry_at = now_s() + read_retry_delay;
	read_retry_delay *= 2;
	if (read_retry_delay > RECONNECT_MAX_S)
		read_retry_delay = RECONNECT_MAX_S;
	return false;
}

static void
send_read(void)
{
	char		qty[16],
				vt[32],
				wt[32];
	const char *params[4];
	int			free_n = free_slots();
	int			n = batch > 0 && batch < free_n ? batch : free_n;

	snprintf(qty, sizeof(qty), "%d", n);
	fmt_seconds(vt, sizeof(vt), vt_s);
	fmt_seconds(wt, sizeof(wt), wait_s);
	params[0] = queue;
	params[1] = qty;
	params[2] = vt;
	params[3] = wt;
	if (!begin_read())
		return;
	if (!PQsendQueryParams(read_conn, SQL_READ, 4, NULL, params, NULL, NULL, 0))
	{
		read_lost("mq.read");
		return;
	}
	read_in_flight = true;
	read_cancelled = false;
}

/* Give a claim back at once (shutdown): visibility 0, no dead-lettering. */
static void
release_claim(const char *msg_id, const char *receipt)
{
	const char *params[3] = {queue, msg_id, receipt};
	PGresult   *res;

	res = ctl_exec("mq.extend (release)",
				   "SELECT mq.extend($1, $2::bigint, '0 seconds'::interval, $3::bigint)",
				   3, params);
	if (res)
	{
		if (!PQgetisnull(res, 0, 0))
			n_released++;
		PQclear(res);
	}
}

static void
start_message(PGresult *res, int row)
{
	Slot	   *s = get_free_slot();
	const char *msg_id = PQgetvalue(res, row, 0);
	const char *receipt = PQgetvalue(res, row, 1);
	EnvVar		env[10];
	int			n = 0;
	StartResult result;

	if (s == NULL || stopping)
	{
		/* cannot happen (qty <= free slots), or stop came meanwhile */
		release_claim(msg_id, receipt);
		return;
	}
	env[n].name = "MQ_QUEUE";
	env[n++].value = queue;
	env[n].name = "MQ_MSG_ID";
	env[n++].value = msg_id;
	env[n].name = "MQ_RECEIPT";
	env[n++].value = receipt;
	env[n].name = "MQ_KEY";
	env[n++].value = PQgetisnull(res, row, 2) ? "" : PQgetvalue(res, row, 2);
	env[n].name = "MQ_HEADERS";
	env[n++].value = PQgetisnull(res, row, 4) ? "" : PQgetvalue(res, row, 4);
	env[n].name = "MQ_ATTEMPTS";
	env[n++].value = PQgetvalue(res, row, 5);
	env[n].name = "MQ_ENQUEUED_AT";
	env[n++].value = PQgetvalue(res, row, 6);
	env[n].name = "MQ_LAST_ERROR";
	env[n++].value = PQgetisnull(res, row, 7) ? "" : PQgetvalue(res, row, 7);
	env[n].name = "MQ_CONSUMER_ID";
	env[n++].value = consumer_id;

	snprintf(s->msg_id, sizeof(s->msg_id), "%s", msg_id);
	snprintf(s->receipt, sizeof(s->receipt), "%s", receipt);
	set_log_about(msg_id, NULL, NULL, -1);
	result = start_command(s, PQgetvalue(res, row, 3), env, n);
	clear_log_about();
	switch (result)
	{
		case START_OK:
			return;
		case START_EXEC_FAILED:
			/* not the message's fault: give it back, then stop */
			release_claim(msg_id, receipt);
			log_error("message %s released; stopping", msg_id);
			slot_reset(s);
			return;
		case START_FAILED:
			break;
	}
	{
		/* treat as a failed attempt: the queue's backoff applies */
		const char *params[4] = {queue, msg_id, receipt, "mq-worker could not start the command"};
		PGresult   *r = ctl_exec("mq.nack",
								 "SELECT mq.nack($1, $2::bigint, $3::bigint, NULL, $4)",
								 4, params);

		PQclear(r);
		n_failed++;
		slot_reset(s);
	}
}

/* Heartbeat: extend running claims that are due. */
static void
heartbeats(double now)
{
	int			i;
	char		vt[32];

	fmt_seconds(vt, sizeof(vt), vt_s);
	for (i = 0; i < concurrency && db_ok; i++)
	{
		Slot	   *s = &slots[i];
		const char *params[4];
		PGresult   *res;

		if (s->state != SLOT_RUNNING || s->lost || now < s->next_heartbeat)
			continue;
		params[0] = queue;
		params[1] = s->msg_id;
		params[2] = vt;
		params[3] = s->receipt;
		res = ctl_exec("mq.extend",
					   "SELECT mq.extend($1, $2::bigint, pg_catalog.make_interval(secs => $3::float8), $4::bigint)",
					   4, params);
		if (res == NULL)
		{
			/* connection gone: retried after the reconnect */
			if (db_ok)
				s->next_heartbeat = now + vt_s / 3.0;
			continue;
		}
		if (PQgetisnull(res, 0, 0))
		{
			s->lost = true;
			set_log_about(s->msg_id, NULL, NULL, -1);
			log_warning("claim on message %s lost (visibility timeout lapsed, message removed, or claim released when the read connection's session ended); "
						"the command keeps running but its result will not be reported",
						s->msg_id);
			clear_log_about();
		}
		else
			s->next_heartbeat = now + vt_s / 3.0;
		PQclear(res);
	}
}

/* Report a finished command.  Returns true when the slot can be freed. */
static bool
report_message(Slot *s)
{
	char		how[128];
	PGresult   *res;

	if (s->lost)
	{
		n_lost++;
		describe_status(s->status, how, sizeof(how));
		log_warning("message %s finished (%s) after its claim was lost; not acked, it will be redelivered",
					s->msg_id, how);
		return true;
	}
	if (!db_ok)
		return false;

	if (s->killed && stopping && !succeeded(s->status))
	{
		/* killed at shutdown: not the message's fault; give it back */
		release_claim(s->msg_id, s->receipt);
		if (!db_ok)
			return false;
		log_info("message %s released (command stopped at shutdown)", s->msg_id);
		return true;
	}

	if (could_not_execute(s->status))
	{
		char	   *tail = slot_tail(s);

		describe_status(s->status, how, sizeof(how));
		release_claim(s->msg_id, s->receipt);
		if (!db_ok)
		{
			free(tail);
			return false;
		}
		log_error("message %s: the command could not be executed (%s%s%s); message released, stopping",
				  s->msg_id, how, *tail ? ": " : "", tail);
		free(tail);
		cannot_exec = true;
		return true;
	}

	if (succeeded(s->status))
	{
		const char *params[3] = {queue, s->msg_id, s->receipt};

		res = ctl_exec("mq.ack", "SELECT mq.ack($1, $2::bigint, $3::bigint)", 3, params);
		if (res == NULL)
			return !db_ok ? false : true;
		if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
			n_processed++;
		else
		{
			n_lost++;
			log_warning("ack of message %s refused: its receipt is stale (the claim lapsed, or was released when the read connection's session ended); "
						"the message will be delivered again", s->msg_id);
		}
		PQclear(res);
		return true;
	}
	else
	{
		char	   *tail = slot_tail(s);
		size_t		elen;
		char	   *error;
		const char *params[4];

		describe_status(s->status, how, sizeof(how));
		elen = strlen(how) + strlen(tail) + 4;
		error = xmalloc(elen);
		snprintf(error, elen, "%s%s%s", how, *tail ? ": " : "", tail);
		params[0] = queue;
		params[1] = s->msg_id;
		params[2] = s->receipt;
		params[3] = error;
		res = ctl_exec("mq.nack",
					   "SELECT mq.nack($1, $2::bigint, $3::bigint, NULL, $4)",
					   4, params);
		if (res == NULL)
		{
			free(tail);
			free(error);
			return !db_ok ? false : true;
		}
		if (strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		{
			n_failed++;
			log_info("message %s failed (%s), nacked", s->msg_id, how);
		}
		else
		{
			n_lost++;
			log_warning("nack of message %s refused: its receipt is stale (the claim lapsed, or was released when the read connection's session ended)",
						s->msg_id);
		}
		PQclear(res);
		free(tail);
		free(error);
		return true;
	}
}

/* -------------------------------------------------------- partitioned mode */

static const char *const SQL_POLL =
"SELECT \"partition\", \"offset\", key, payload, headers, "
"       pg_catalog.to_char(pg_catalog.timezone('UTC', enqueued_at), "
"                          'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
"  FROM mq.poll($1, $2, $3, $4::integer, pg_catalog.make_interval(secs => $5::float8), $6::integer[])";

static int
n_pending(bool only_ready, double now)
{
	int			i,
				n = 0;

	for (i = 0; i < n_pending_max; i++)
	{
		PartMsg    *m = &pending[i];

		if (!m->used)
			continue;
		if (only_ready && (m->running || m->retry_at > now))
			continue;
		n++;
	}
	return n;
}

static void
pending_free(PartMsg *m)
{
	free(m->key);
	free(m->payload);
	free(m->headers);
	free(m->enqueued_at);
	memset(m, 0, sizeof(*m));
}

/* qsort order of long long */
static int
cmp_ll(const void *a, const void *b)
{
	long long	x = *(const long long *) a;
	long long	y = *(const long long *) b;

	return x < y ? -1 : x > y;
}

/*
 * The partitions we still process, as an integer[] literal ("{0,3}"):
 * those with polled messages not yet committed (running, buffered or
 * waiting to retry).  mq.poll and mq.heartbeat get it as busy_partitions,
 * so that a rebalance hands such a partition to another member only once
 * its offsets are done here: otherwise the new owner would start again
 * after the committed offset, running an offset that still runs here, and
 * later offsets before it finished.  Returns a static buffer.
 */
static const char *
busy_partitions(void)
{
	static char *buf = NULL;
	static long long *parts = NULL;
	static int	cap = 0;
	size_t		len = 0;
	int			i,
				n = 0;

	if (cap < n_pending_max + 1)
	{
		cap = n_pending_max + 1;
		free(buf);
		free(parts);
		buf = xmalloc((size_t) cap * 22 + 3);
		parts = xmalloc(sizeof(long long) * cap);
	}
	for (i = 0; i < n_pending_max; i++)
		if (pending[i].used)
			parts[n++] = pending[i].partition;
	qsort(parts, n, sizeof(long long), cmp_ll);
	buf[len++] = '{';
	for (i = 0; i < n; i++)
		if (i == 0 || parts[i] != parts[i - 1])
			len += (size_t) sprintf(buf + len, "%s%lld", len > 1 ? "," : "", parts[i]);
	buf[len++] = '}';
	buf[len] = '\0';
	return buf;
}

static void
send_poll(void)
{
	char		qty[16],
				wt[32];
	const char *params[6];
	int			n = free_slots();

	if (batch > 0 && batch < n)
		n = batch;
	snprintf(qty, sizeof(qty), "%d", n);
	fmt_seconds(wt, sizeof(wt), wait_s);
	params[0] = queue;
	params[1] = group;
	params[2] = member;
	params[3] = qty;
	params[4] = wt;
	params[5] = busy_partitions();
	if (!begin_read())
		return;
	if (!PQsendQueryParams(read_conn, SQL_POLL, 6, NULL, params, NULL, NULL, 0))
	{
		read_lost("mq.poll");
		return;
	}
	read_sent_at = now_s();
	read_in_flight = true;
	read_cancelled = false;
}

/*
 * Buffer polled messages, skipping any we already hold.  The server moves
 * the group's position at each poll, so it returns a message again only
 * after a rebalance reset the position to the committed offset; then it
 * must be processed again (unless it is still buffered here).
 */
static void
buffer_polled(PGresult *res)
{
	int			r;
	int			n_new = 0;

	for (r = 0; r < PQntuples(res); r++)
	{
		long long	part = strtoll(PQgetvalue(res, r, 0), NULL, 10);
		long long	off = strtoll(PQgetvalue(res, r, 1), NULL, 10);
		PartMsg    *m = NULL;
		int			i;
		bool		held = false;

		for (i = 0; i < n_pending_max && !held; i++)
			held = pending[i].used && pending[i].partition == part &&
				pending[i].offset == off;
		if (held)
			continue;
		for (i = 0; i < n_pending_max; i++)
			if (!pending[i].used)
			{
				m = &pending[i];
				break;
			}
		if (m == NULL)
		{
			int			old = n_pending_max;

			n_pending_max = n_pending_max ? n_pending_max * 2 : 64;
			pending = realloc(pending, sizeof(PartMsg) * n_pending_max);
			if (pending == NULL)
			{
				log_error("out of memory");
				exit(1);
			}
			memset(pending + old, 0, sizeof(PartMsg) * (n_pending_max - old));
			m = &pending[old];
		}
		m->used = true;
		m->partition = part;
		m->offset = off;
		snprintf(m->partition_str, sizeof(m->partition_str), "%lld", part);
		snprintf(m->offset_str, sizeof(m->offset_str), "%lld", off);
		m->key = PQgetisnull(res, r, 2) ? NULL : xstrdup(PQgetvalue(res, r, 2));
		m->payload = xstrdup(PQgetvalue(res, r, 3));
		m->headers = PQgetisnull(res, r, 4) ? NULL : xstrdup(PQgetvalue(res, r, 4));
		m->enqueued_at = xstrdup(PQgetvalue(res, r, 5));
		n_new++;
	}

	/*
	 * Only messages we already hold (their partitions are busy): polling
	 * again at once would spin.  Wait for a command to finish, or 1 s.
	 */
	if (PQntuples(res) > 0 && n_new == 0)
		read_retry_at = now_s() + 1.0;
}

/*
 * Start ready messages: per partition only the lowest buffered offset, and
 * only when nothing of that partition runs, so a partition is processed in
 * offset order one message at a time.
 */
static void
dispatch_partitions(double now)
{
	int			i,
				j;

	for (i = 0; i < n_pending_max && !stopping && !cannot_exec; i++)
	{
		PartMsg    *m = &pending[i];
		bool		first = true;
		Slot	   *s;
		EnvVar		env[11];
		int			n = 0;
		StartResult result;

		if (!m->used || m->running || m->retry_at > now)
			continue;
		for (j = 0; j < n_pending_max && first; j++)
			if (pending[j].used && pending[j].partition == m->partition &&
				(pending[j].running || pending[j].offset < m->offset))
				first = false;
		if (!first)
			continue;
		s = get_free_slot();
		if (s == NULL)
			return;
		env[n].name = "MQ_QUEUE";
		env[n++].value = queue;
		env[n].name = "MQ_GROUP";
		env[n++].value = group;
		env[n].name = "MQ_MEMBER";
		env[n++].value = member;
		env[n].name = "MQ_PARTITION";
		env[n++].value = m->partition_str;
		env[n].name = "MQ_OFFSET";
		env[n++].value = m->offset_str;
		env[n].name = "MQ_KEY";
		env[n++].value = m->key ? m->key : "";
		env[n].name = "MQ_HEADERS";
		env[n++].value = m->headers ? m->headers : "";
		env[n].name = "MQ_ENQUEUED_AT";
		env[n++].value = m->enqueued_at;
		env[n].name = "MQ_CONSUMER_ID";
		env[n++].value = consumer_id;
		env[n].name = "MQ_MSG_ID";
		env[n++].value = NULL;
		env[n].name = "MQ_RECEIPT";
		env[n++].value = NULL;
		set_log_about(NULL, m->partition_str, m->offset_str, -1);
		result = start_command(s, m->payload, env, n);
		clear_log_about();
		switch (result)
		{
			case START_OK:
				break;
			case START_EXEC_FAILED:
				/* not committed; the worker stops (main loop) */
				slot_reset(s);
				return;
			case START_FAILED:
				m->failures++;
				m->retry_at = now + PART_RETRY_MIN_S;
				slot_reset(s);
				continue;
		}
		s->next_heartbeat = 1e300;	/* partition leases are not per message */
		s->part_msg = i;
		m->running = true;
	}
}

static bool
report_partition(Slot *s)
{
	PartMsg    *m = &pending[s->part_msg];
	char		how[128];

	if (s->killed && stopping && !succeeded(s->status))
	{
		/* not committed: the group gets it again */
		m->running = false;
		return true;
	}
	if (could_not_execute(s->status))
	{
		char	   *tail = slot_tail(s);

		describe_status(s->status, how, sizeof(how));
		log_error("partition %s offset %s: the command could not be executed (%s%s%s); not committed, stopping",
				  m->partition_str, m->offset_str, how, *tail ? ": " : "", tail);
		free(tail);
		m->running = false;
		cannot_exec = true;
		return true;
	}
	if (succeeded(s->status))
	{
		const char *params[5] = {queue, group, m->partition_str, m->offset_str, member};
		PGresult   *res;
		long long	part = m->partition;

		/*
		 * Not while a poll is in flight.  Its transaction may have renewed
		 * or given back leases, and until it commits mq.commit waits for
		 * those rows: here, synchronously, while the poll's COMMIT can only
		 * come from this loop.  Also, a partition stops being busy only
		 * here, so the busy list of a poll in flight is never out of date.
		 * The main loop cancels a poll that waits for messages.
		 */
		if (!db_ok || read_in_flight)
			return false;
		res = ctl_exec("mq.commit",
					   "SELECT mq.commit($1, $2, $3::integer, $4::bigint, $5)",
					   5, params);
		if (res == NULL && !db_ok)
			return false;
		if (res && strcmp(PQgetvalue(res, 0, 0), "t") == 0)
		{
			n_processed++;
			pending_free(m);
		}
		else
		{
			int			i;

			/*
			 * Fenced (or failed): this member no longer holds the partition;
			 * its next owner resumes after the committed offset.  Drop what
			 * we buffered of it.
			 */
			n_lost++;
			if (res)
				log_warning("commit of partition %s offset %s refused: the partition's lease was lost; "
							"its new owner processes it again", m->partition_str, m->offset_str);
			pending_free(m);
			for (i = 0; i < n_pending_max; i++)
				if (pending[i].used && !pending[i].running && pending[i].partition == part)
					pending_free(&pending[i]);
		}
		PQclear(res);
		return true;
	}
	else
	{
		double		delay = PART_RETRY_MIN_S;
		int			k;
		char	   *tail = slot_tail(s);

		/* a log has no nack: retry in place, keeping the partition's order */
		for (k = 0; k < m->failures && delay < PART_RETRY_MAX_S; k++)
			delay *= 2;
		if (delay > PART_RETRY_MAX_S)
			delay = PART_RETRY_MAX_S;
		m->failures++;
		m->running = false;
		m->retry_at = now_s() + delay;
		n_failed++;
		describe_status(s->status, how, sizeof(how));
		log_info("partition %s offset %s failed (%s%s%s); retrying in %.0f s",
				 m->partition_str, m->offset_str, how, *tail ? ": " : "", tail, delay);
		free(tail);
		return true;
	}
}

/* ------------------------------------------------------------ read result */

/*
 * The read (or poll) is over: commit its transaction, then take its rows.
 * Commands start only once the claim is committed; if the commit fails,
 * the claims were rolled back (or are unknown after a broken connection,
 * then they lapse with their visibility timeout) and nothing runs.
 */
static void
end_read(void)
{
	PGresult   *rows = read_result;
	PGresult   *res;
	int			i;

	read_result = NULL;
	read_in_flight = false;
	res = PQexec(read_conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		if (PQstatus(read_conn) == CONNECTION_BAD)
			read_lost(group ? "commit of mq.poll" : "commit of mq.read");
		else
			log_error("commit of the read failed: %s",
					  pq_msg(res ? PQresultErrorMessage(res) : PQerrorMessage(read_conn)));
		PQclear(res);
		PQclear(rows);
		return;
	}
	PQclear(res);
	if (rows == NULL)
		return;					/* the read failed or was cancelled */

	if (group)
	{
		if (stopping || cannot_exec)
			;					/* nothing to give back: not committed */
		else
			buffer_polled(rows);
	}
	else
	{
		for (i = 0; i < PQntuples(rows) && db_ok; i++)
		{
			if (stopping || cannot_exec)
			{
				/* the cancel came too late, or we stop: give these back */
				release_claim(PQgetvalue(rows, i, 0), PQgetvalue(rows, i, 1));
			}
			else
				start_message(rows, i);
		}
	}
	PQclear(rows);
}

/* The claim (read or poll) has a result: take it. */
static void
handle_read_result(void)
{
	PGresult   *res;

	if (!PQconsumeInput(read_conn))
	{
		read_lost(group ? "mq.poll" : "mq.read");
		return;
	}
	while (!PQisBusy(read_conn))
	{
		res = PQgetResult(read_conn);
		if (res == NULL)
		{
			end_read();
			return;
		}
		if (PQresultStatus(res) == PGRES_TUPLES_OK)
		{
			read_retry_delay = RECONNECT_MIN_S;
			/* kept until the transaction commits */
			PQclear(read_result);
			read_result = res;
			continue;
		}
		else if (PQstatus(read_conn) == CONNECTION_BAD)
		{
			PQclear(res);
			read_lost(group ? "mq.poll" : "mq.read");
			return;
		}
		else
		{
			const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

			if (!(read_cancelled && state && strcmp(state, "57014") == 0))
			{
				log_error("%s failed: %s", group ? "mq.poll" : "mq.read",
						  pq_msg(PQresultErrorMessage(res)));
				if (is_fatal_sqlstate(state))
					fatal_error = true;
				else
				{
					/* unexpected: retry with backoff, never in a tight loop */
					read_retry_at = now_s() + read_retry_delay;
					log_info("retrying in %.1f s", read_retry_delay);
					read_retry_delay *= 2;
					if (read_retry_delay > RECONNECT_MAX_S)
						read_retry_delay = RECONNECT_MAX_S;
				}
			}
		}
		PQclear(res);
	}
}

static void
cancel_read(void)
{
	PGcancel   *c;
	char		errbuf[256];

	if (!read_in_flight || read_cancelled)
		return;
	c = PQgetCancel(read_conn);
	if (c)
	{
		if (!PQcancel(c, errbuf, sizeof(errbuf)))
			log_warning("could not cancel the waiting read: %s", errbuf);
		PQfreeCancel(c);
	}
	read_cancelled = true;
}

/* --------------------------------------------------------------- startup */

/* Partitioned mode: leave the group, freeing our partitions at once. */
static void
member_leave(void)
{
	const char *params[3] = {queue, group, member};
	PGresult   *res = ctl_exec("mq.leave", "SELECT mq.leave($1, $2, $3)", 3, params);

	PQclear(res);
}

/*
 * Partitioned mode: keep our leases between polls, telling which
 * partitions we still process (busy_partitions).  Not while a poll is in
 * flight: the poll heartbeats itself, with the busy list it was sent with,
 * and in its transaction, whose lease rows this call would wait for.
 */
static void
member_heartbeat(double now)
{
	const char *params[4] = {queue, group, member, NULL};
	PGresult   *res;

	if (now < next_member_hb || read_in_flight)
		return;
	params[3] = busy_partitions();
	res = ctl_exec("mq.heartbeat", "SELECT mq.heartbeat($1, $2, $3, $4::integer[])", 4, params);
	PQclear(res);
	next_member_hb = now + session_s / 3.0;
}

static bool
startup_checks(void)
{
	PGresult   *res;
	const char *params[1] = {queue};

	res = ctl_exec("queue lookup",
				   group ?
				   "SELECT pg_catalog.date_part('epoch', visibility_timeout)::float8, "
				   "       pg_catalog.date_part('epoch', session_timeout)::float8 "
				   "  FROM mq.queues WHERE queue_name OPERATOR(pg_catalog.=) $1" :
				   "SELECT pg_catalog.date_part('epoch', visibility_timeout)::float8 "
				   "  FROM mq.queues WHERE queue_name OPERATOR(pg_catalog.=) $1",
				   1, params);
	if (res == NULL)
		return false;
	if (PQntuples(res) != 1)
	{
		log_error("queue \"%s\" does not exist", queue);
		PQclear(res);
		return false;
	}
	if (group)
	{
		if (!PQgetisnull(res, 0, 1) && strtod(PQgetvalue(res, 0, 1), NULL) > 0)
			session_s = strtod(PQgetvalue(res, 0, 1), NULL);
		if (vt_s <= 0)
			vt_s = 30;			/* unused: partitions are leased, not claimed */
	}
	if (vt_s <= 0)
	{
		vt_s = strtod(PQgetvalue(res, 0, 0), NULL);
		if (vt_s < 1)
		{
			log_error("queue \"%s\" has a visibility timeout under 1 second; pass --visibility-timeout", queue);
			PQclear(res);
			return false;
		}
	}
	PQclear(res);

	if (group)
	{
		res = ctl_exec("lookup of mq.poll",
					   "SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p "
					   "  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace "
					   " WHERE n.nspname OPERATOR(pg_catalog.=) 'mq' "
					   "   AND p.proname OPERATOR(pg_catalog.=) ANY (ARRAY['poll', 'commit'])",
					   0, NULL);
		if (res == NULL)
			return false;
		if (atoi(PQgetvalue(res, 0, 0)) < 2)
		{
			log_error("partitioned queues need mq.poll (not in this version)");
			PQclear(res);
			return false;
		}
		PQclear(res);

		/*
		 * Start from the committed offsets: a previous process with this
		 * member name may have polled past messages it never committed.
		 */
		member_leave();
		if (!db_ok || fatal_error)
			return false;
	}
	return true;
}

/* --------------------------------------------------------------- options */

static void
usage(void)
{
	printf("Usage: %s [OPTION]... --queue NAME -- COMMAND [ARG]...\n"
		   "Run COMMAND once per message of an mq queue.\n"
		   "\n"
		   "Each message runs COMMAND (no shell: use sh -c '...' for one) with the\n"
		   "payload (JSON, followed by a newline) on stdin and its metadata in the\n"
		   "environment.  Exit status 0 acks the message; any other status (or death\n"
		   "by a signal) nacks it with the queue's retry backoff and the last %d bytes\n"
		   "of the command's stderr as its last_error.  stdout is the worker's.\n"
		   "\n"
		   "Options:\n"
		   "  -d, --dsn CONNINFO, --connection CONNINFO\n"
		   "                             libpq connection string or URI (default:\n"
		   "                             $DATABASE_URL, else the PG* environment\n"
		   "                             variables)\n"
		   "  -q, --queue NAME           queue to consume (required)\n"
		   "  -c, --concurrency N        commands run at once, 1 to %d (default 1)\n"
		   "  -b, --batch N              messages claimed per read, at most the free\n"
		   "                             slots (default: the free slots)\n"
		   "      --visibility-timeout SECONDS\n"
		   "                             claim duration, 1 to 43200; renewed every\n"
		   "                             third of it while the command runs (default:\n"
		   "                             the queue's visibility_timeout)\n"
		   "  -w, --wait SECONDS         long-polling wait of an idle read, 1 to 900\n"
		   "                             (default 20)\n"
		   "  -g, --grace SECONDS        at SIGTERM, SIGINT or SIGHUP, time running\n"
		   "                             commands get to finish before they are killed\n"
		   "                             (default 30)\n"
		   "      --consumer-id ID       this worker's name in logs and MQ_CONSUMER_ID\n"
		   "                             (default HOST-PID)\n"
		   "      --group GROUP          partitioned-queue mode: consume as a member\n"
		   "                             of consumer group GROUP (needs mq.poll)\n"
		   "      --member NAME          member name in the group (default: the\n"
		   "                             consumer id); only with --group\n"
		   "  -p, --progress SECONDS     print a progress line every SECONDS\n"
		   "      --quiet                print only warnings, errors and progress\n"
		   "      --log-format FORMAT    text (default) or json: one JSON object per\n"
		   "                             line (time, level, msg, queue, msg_id or\n"
		   "                             partition and offset, exit_status...)\n"
		   "  -h, --help                 show this help and exit\n"
		   "      --version              print the version and exit\n"
		   "\n"
		   "Environment of COMMAND:\n"
		   "  MQ_QUEUE, MQ_MSG_ID, MQ_RECEIPT, MQ_KEY, MQ_ATTEMPTS (deliveries so far,\n"
		   "  this one included), MQ_HEADERS (JSON), MQ_ENQUEUED_AT (UTC, ISO 8601),\n"
		   "  MQ_LAST_ERROR (of the previous attempt), MQ_CONSUMER_ID; in partitioned\n"
		   "  mode MQ_GROUP, MQ_MEMBER, MQ_PARTITION, MQ_OFFSET instead of MQ_MSG_ID,\n"
		   "  MQ_RECEIPT and MQ_ATTEMPTS.  Empty when the message has none.\n"
		   "\n"
		   "Signals: SIGTERM, SIGINT or SIGHUP stops claiming and waits up to --grace\n"
		   "seconds for running commands; then their process groups get SIGTERM and,\n"
		   "%.0f s later, SIGKILL, and their messages are released for redelivery.  A\n"
		   "second signal ends the grace period at once.  If the worker itself is\n"
		   "killed, its commands and their process groups are killed too.\n"
		   "\n"
		   "Exit status: 0 after a signal-initiated stop, 1 on a fatal error (cannot\n"
		   "connect at startup, no such queue, no privilege), 2 on bad usage, 3 when\n"
		   "COMMAND cannot be executed (not found, not executable, or it exited 126\n"
		   "or 127: its message is released, not nacked).\n"
		   "Delivery is at least once: COMMAND must be idempotent.\n",
		   PROGNAME, ERR_TAIL_SIZE, MAX_CONCURRENCY, KILL_DELAY_S);
}

static void
bad_usage(const char *fmt,...) __attribute__((format(printf, 1, 2), noreturn));
static void
bad_usage(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s: ", PROGNAME);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry \"%s --help\" for more information.\n", PROGNAME);
	exit(2);
}

static double
parse_num(const char *opt, const char *s, double min, double max)
{
	char	   *end;
	double		v;

	errno = 0;
	v = strtod(s, &end);
	if (end == s || *end != '\0' || errno != 0 || !(v >= min && v <= max))
		bad_usage("invalid value for %s: \"%s\" (expected %g to %g)", opt, s, min, max);
	return v;
}

static int
parse_int(const char *opt, const char *s, int min, int max)
{
	double		v = parse_num(opt, s, min, max);

	if (v != (int) v)
		bad_usage("invalid value for %s: \"%s\" (expected an integer)", opt, s);
	return (int) v;
}

/* Names go to the server as parameters; only sanity is checked here. */
static void
check_name(const char *opt, const char *s)
{
	size_t		i;

	if (s[0] == '\0')
		bad_usage("%s must not be empty", opt);
	if (strlen(s) > 63)
		bad_usage("%s \"%s\" is longer than 63 bytes", opt, s);
	for (i = 0; s[i]; i++)
		if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
			bad_usage("%s must not contain control characters", opt);
}

static void
parse_options(int argc, char **argv)
{
	enum
	{
		OPT_VT = 256,
		OPT_CONSUMER,
		OPT_GROUP,
		OPT_MEMBER,
		OPT_QUIET,
		OPT_VERSION,
		OPT_LOG_FORMAT
	};
	static const struct option long_options[] = {
		{"dsn", required_argument, NULL, 'd'},
		{"connection", required_argument, NULL, 'd'},
		{"queue", required_argument, NULL, 'q'},
		{"concurrency", required_argument, NULL, 'c'},
		{"batch", required_argument, NULL, 'b'},
		{"visibility-timeout", required_argument, NULL, OPT_VT},
		{"wait", required_argument, NULL, 'w'},
		{"grace", required_argument, NULL, 'g'},
		{"consumer-id", required_argument, NULL, OPT_CONSUMER},
		{"group", required_argument, NULL, OPT_GROUP},
		{"member", required_argument, NULL, OPT_MEMBER},
		{"progress", required_argument, NULL, 'p'},
		{"quiet", no_argument, NULL, OPT_QUIET},
		{"log-format", required_argument, NULL, OPT_LOG_FORMAT},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, OPT_VERSION},
		{NULL, 0, NULL, 0}
	};
	int			c;
	static char default_id[300];

	/* "+": stop at the first non-option, so COMMAND's options stay its own */
	while ((c = getopt_long(argc, argv, "+d:q:c:b:w:g:p:h", long_options, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				dsn = optarg;
				break;
			case 'q':
				queue = optarg;
				break;
			case 'c':
				concurrency = parse_int("--concurrency", optarg, 1, MAX_CONCURRENCY);
				break;
			case 'b':
				batch = parse_int("--batch", optarg, 1, 10000);
				break;
			case OPT_VT:
				vt_s = parse_num("--visibility-timeout", optarg, 1, 43200);
				break;
			case 'w':
				wait_s = parse_num("--wait", optarg, 1, 900);
				break;
			case 'g':
				grace_s = parse_num("--grace", optarg, 0, 86400);
				break;
			case OPT_CONSUMER:
				consumer_id = optarg;
				break;
			case OPT_GROUP:
				group = optarg;
				break;
			case OPT_MEMBER:
				member = optarg;
				break;
			case 'p':
				progress_s = parse_num("--progress", optarg, 0.1, 86400);
				break;
			case OPT_QUIET:
				quiet = true;
				break;
			case OPT_LOG_FORMAT:
				if (strcmp(optarg, "json") == 0)
					log_json = true;
				else if (strcmp(optarg, "text") == 0)
					log_json = false;
				else
					bad_usage("invalid value for --log-format: \"%s\" (expected text or json)", optarg);
				break;
			case 'h':
				usage();
				exit(0);
			case OPT_VERSION:
				printf("%s %s\n", PROGNAME, MQ_VERSION);
				exit(0);
			default:
				fprintf(stderr, "Try \"%s --help\" for more information.\n", PROGNAME);
				exit(2);
		}
	}
	/*
	 * DATABASE_URL (Heroku, Render, Rails, Django...) when no --dsn: a URI
	 * or conninfo string.  libpq's PG* variables still fill in what it
	 * does not say, and are all that is used when neither is given.
	 */
	if (dsn == NULL && getenv("DATABASE_URL") != NULL && getenv("DATABASE_URL")[0] != '\0')
		dsn = getenv("DATABASE_URL");
	if (queue == NULL)
		bad_usage("--queue is required");
	check_name("--queue", queue);
	if (optind >= argc)
		bad_usage("no command given (put it after \"--\")");
	command = &argv[optind];

	if (consumer_id == NULL)
	{
		char		host[256];

		if (gethostname(host, sizeof(host)) != 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		snprintf(default_id, sizeof(default_id), "%s-%d", host, (int) getpid());
		consumer_id = default_id;
	}
	else
		check_name("--consumer-id", consumer_id);
	if (member && !group)
		bad_usage("--member needs --group");
	if (group)
	{
		check_name("--group", group);
		if (member == NULL)
			member = consumer_id;
		check_name("--member", member);
	}
}

/*
 * Refuse at startup a command that execvp could not start (no such file
 * in PATH, not executable), before anything is claimed: otherwise the
 * first message's delivery is spent discovering it.  The same search as
 * execvp: a name with a slash is a path, others are looked up in PATH (as
 * glibc does when PATH is unset: /bin:/usr/bin).  A failure the check
 * cannot see still stops the worker at the first message
 * (START_EXEC_FAILED), with that message released.
 */
static bool
executable(const char *path)
{
	struct stat st;

	return access(path, X_OK) == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static void
check_command(void)
{
	const char *name = command[0];
	const char *path;
	const char *p;
	size_t		nlen = strlen(name);
	char	   *buf;
	int			saved = ENOENT;

	if (name[0] == '\0')
	{
		log_error("cannot execute \"\": empty command name");
		exit(EXIT_CANNOT_EXEC);
	}
	if (strchr(name, '/') != NULL)
	{
		if (executable(name))
			return;
		log_error("cannot execute \"%s\": %s", name,
				  access(name, F_OK) != 0 ? strerror(errno) :
				  access(name, X_OK) != 0 ? strerror(EACCES) : "not a regular file");
		exit(EXIT_CANNOT_EXEC);
	}
	path = getenv("PATH");
	if (path == NULL)
		path = "/bin:/usr/bin";
	buf = xmalloc(strlen(path) + nlen + 3);
	for (p = path;; p++)
	{
		const char *end = strchr(p, ':');
		size_t		dlen = end ? (size_t) (end - p) : strlen(p);

		/* an empty entry is the current directory */
		if (dlen == 0)
			sprintf(buf, "./%s", name);
		else
			sprintf(buf, "%.*s/%s", (int) dlen, p, name);
		if (executable(buf))
		{
			free(buf);
			return;
		}
		if (access(buf, F_OK) == 0)
			saved = EACCES;
		if (end == NULL)
			break;
		p = end;
	}
	free(buf);
	log_error("cannot execute \"%s\": %s (PATH=%s)", name, strerror(saved), path);
	exit(EXIT_CANNOT_EXEC);
}

/* -------------------------------------------------------------- main loop */

static void
progress_line(double now)
{
	long		done = n_processed + n_failed;
	double		rate = (done - last_progress_done) / progress_s;

	log_always("progress: processed=%ld failed=%ld lost=%ld rate=%.1f/s in_flight=%d",
			   n_processed, n_failed, n_lost, rate, in_flight());
	last_progress_done = done;
	next_progress = now + progress_s;
}

static void
begin_stop(double now, const char *why)
{
	if (stopping)
		return;
	stopping = true;
	stop_at = now;
	log_info("%s: no more claims; waiting up to %.0f s for %d running command(s)",
			 why, grace_s, in_flight());
	cancel_read();
	if (group)
	{
		int			i;

		/* uncommitted buffered messages go back to the group */
		for (i = 0; i < n_pending_max; i++)
			if (pending[i].used && !pending[i].running)
				pending_free(&pending[i]);
	}
}

static void
signal_running(int sig)
{
	int			i;

	for (i = 0; i < concurrency; i++)
		if (slots[i].state == SLOT_RUNNING)
		{
			slots[i].killed = true;
			(void) kill(-slots[i].pid, sig);
			(void) kill(slots[i].pid, sig);	/* in case setpgid lost a race */
		}
}

static bool
any_running(void)
{
	int			i;

	for (i = 0; i < concurrency; i++)
		if (slots[i].state == SLOT_RUNNING)
			return true;
	return false;
}

static bool
any_done(void)
{
	int			i;

	for (i = 0; i < concurrency; i++)
		if (slots[i].state == SLOT_DONE)
			return true;
	return false;
}

int
main(int argc, char **argv)
{
	struct pollfd *pfds;
	int			i;
	int			exit_code = 0;
	int			seen_signals = 0;

	parse_options(argc, argv);
	check_command();
	setup_signals();
	start_watchdog();

	slots = xmalloc(sizeof(Slot) * concurrency);
	for (i = 0; i < concurrency; i++)
		slot_reset(&slots[i]);
	pfds = xmalloc(sizeof(struct pollfd) * (2 + 2 * concurrency));

	if (!try_connect() || !startup_checks())
	{
		disconnect_all();
		return 1;
	}
	started_at = now_s();
	if (progress_s > 0)
		next_progress = started_at + progress_s;
	log_info("consumer %s: queue \"%s\"%s%s%s%s, concurrency %d, visibility timeout %.0f s, wait %.0f s",
			 consumer_id, queue,
			 group ? ", group \"" : "", group ? group : "",
			 group ? "\" member " : "", group ? member : "",
			 concurrency, vt_s, wait_s);

	for (;;)
	{
		double		now = now_s();
		double		deadline = now + 3600;
		int			nfds = 0;
		int			timeout_ms;
		int			read_idx = -1;
		int			rc;

		/* signals */
		if (got_stop != seen_signals)
		{
			if (stopping && !sent_term)
			{
				log_info("second signal: ending the grace period");
				stop_at = now - grace_s;
			}
			seen_signals = got_stop;
			begin_stop(now, "signal received");
		}
		if (cannot_exec && exit_code != EXIT_CANNOT_EXEC)
		{
			exit_code = EXIT_CANNOT_EXEC;
			begin_stop(now, "the command cannot be executed");
		}
		if (fatal_error && !stopping)
		{
			exit_code = 1;
			begin_stop(now, "fatal error");
		}

		reap_children();

		/* shutdown: grace, then SIGTERM, then SIGKILL */
		if (stopping && any_running())
		{
			if (!sent_term && now >= stop_at + grace_s)
			{
				log_info("grace period over: stopping %d command(s)", in_flight());
				signal_running(SIGTERM);
				sent_term = true;
				kill_at = now + KILL_DELAY_S;
			}
			else if (sent_term && now >= kill_at)
			{
				signal_running(SIGKILL);
				kill_at = now + 3600;
			}
		}

		/* connection */
		if (!db_ok && now >= reconnect_at)
		{
			if (try_connect())
				log_info("reconnected");
		}

		/* report finished commands */
		for (i = 0; i < concurrency; i++)
		{
			Slot	   *s = &slots[i];
			bool		reported;

			if (s->state != SLOT_DONE)
				continue;
			if (group)
				set_log_about(NULL, pending[s->part_msg].partition_str,
							  pending[s->part_msg].offset_str, s->status);
			else
				set_log_about(s->msg_id, NULL, NULL, s->status);
			reported = group ? report_partition(s) : report_message(s);
			clear_log_about();
			if (reported)
			{
				slot_reset(s);
				if (group)
					read_retry_at = 0;	/* a partition may be free again */
			}
		}

		if (db_ok && !group)
			heartbeats(now);
		/*
		 * Partitioned mode: while stopping, the leases of partitions whose
		 * commands still run are kept too (a lapse would hand one over with
		 * its offset running here).  A finished command's commit waits for
		 * the poll in flight: cancel it if it is waiting for messages.
		 */
		if (db_ok && group && (!stopping || any_running()))
			member_heartbeat(now);
		if (group && !stopping)
			dispatch_partitions(now);
		if (group && read_in_flight && !read_cancelled && any_done() &&
			now >= read_sent_at + POLL_CANCEL_AFTER_S)
			cancel_read();

		/* done? */
		if (stopping && in_flight() == 0 && !read_in_flight)
			break;
		if (stopping && !any_running() && !db_ok && now >= stop_at + grace_s)
		{
			log_warning("database unreachable at shutdown: %d result(s) not reported; those messages will be redelivered",
						in_flight());
			for (i = 0; i < concurrency; i++)
				if (slots[i].state == SLOT_DONE)
					n_lost++;
			break;
		}

		/* claim more */
		if (db_ok && !stopping && !cannot_exec && !read_in_flight &&
			free_slots() > 0 && now >= read_retry_at)
		{
			if (!group)
				send_read();
			else if (n_pending(true, now) < free_slots() &&
					 n_pending(false, now) < 10 * concurrency)
				send_poll();
		}

		if (progress_s > 0 && now >= next_progress)
			progress_line(now);

		/* wait */
		pfds[nfds].fd = self_pipe[0];
		pfds[nfds++].events = POLLIN;
		if (db_ok && read_in_flight)
		{
			read_idx = nfds;
			pfds[nfds].fd = PQsocket(read_conn);
			pfds[nfds++].events = POLLIN;
		}
		for (i = 0; i < concurrency; i++)
		{
			Slot	   *s = &slots[i];

			if (s->state != SLOT_RUNNING)
				continue;
			if (s->in_fd >= 0)
			{
				pfds[nfds].fd = s->in_fd;
				pfds[nfds++].events = POLLOUT;
			}
			if (s->err_fd >= 0)
			{
				pfds[nfds].fd = s->err_fd;
				pfds[nfds++].events = POLLIN;
			}
			if (db_ok && !s->lost && s->next_heartbeat < deadline)
				deadline = s->next_heartbeat;
		}
		if (!db_ok && reconnect_at < deadline)
			deadline = reconnect_at;
		if (db_ok && group && (!stopping || any_running()) && !read_in_flight &&
			next_member_hb < deadline)
			deadline = next_member_hb;
		if (group && read_in_flight && !read_cancelled && any_done() &&
			read_sent_at + POLL_CANCEL_AFTER_S < deadline)
			deadline = read_sent_at + POLL_CANCEL_AFTER_S;
		if (db_ok && !read_in_flight && read_retry_at > now && read_retry_at < deadline)
			deadline = read_retry_at;
		if (progress_s > 0 && next_progress < deadline)
			deadline = next_progress;
		if (stopping)
		{
			double		d = sent_term ? kill_at : stop_at + grace_s;

			if (d > now && d < deadline)
				deadline = d;
		}
		if (group)
		{
			for (i = 0; i < n_pending_max; i++)
				if (pending[i].used && !pending[i].running &&
					pending[i].retry_at > now && pending[i].retry_at < deadline)
					deadline = pending[i].retry_at;
		}
		/* a DONE slot waiting for the database: retry with the reconnect */
		timeout_ms = deadline <= now ? 0 : (int) ((deadline - now) * 1000) + 1;

		rc = poll(pfds, nfds, timeout_ms);
		if (rc < 0 && errno != EINTR)
		{
			log_error("poll failed: %s", strerror(errno));
			exit_code = 1;
			break;
		}
		if (rc <= 0)
			continue;

		if (pfds[0].revents)
		{
			char		buf[64];

			while (read(self_pipe[0], buf, sizeof(buf)) > 0)
				;
		}
		for (i = 0; i < concurrency; i++)
		{
			Slot	   *s = &slots[i];

			if (s->state != SLOT_RUNNING)
				continue;
			if (s->in_fd >= 0)
				slot_write_input(s);
			if (s->err_fd >= 0)
				slot_read_stderr(s);
		}
		if (read_idx >= 0 && pfds[read_idx].revents && db_ok && read_in_flight)
			handle_read_result();
	}

	/* partitioned mode: the killed ones were not committed */
	{
		double		elapsed = now_s() - started_at;

		log_info("stopped: processed=%ld failed=%ld lost=%ld released=%ld in %.1f s (%.1f/s)",
				 n_processed, n_failed, n_lost, n_released, elapsed,
				 elapsed > 0 ? (n_processed + n_failed) / elapsed : 0.0);
	}
	if (group && db_ok)
		member_leave();
	disconnect_all();
	return exit_code;
}
