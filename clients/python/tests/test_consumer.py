"""Consumer: the exactly-once-effects handler, retries, long polling,
concurrency, graceful stop and reconnecting, against a real server."""

import itertools
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading

import psycopg
import pytest

import mq_client
from conftest import create_high_id_queue, scalar, wait_until

_apps = itertools.count(1)


@pytest.fixture
def consume(dsn):
    """consume(queue, handler, **options) starts a Consumer; all are
    stopped and joined at the end of the test."""
    started = []

    def start(queue, handler, **options):
        options.setdefault("wait", 300)        # far longer than any test waits
        options.setdefault("application_name", f"mq-client-test-{next(_apps)}")
        c = mq_client.Consumer(dsn, queue, handler, **options)
        c.start()
        started.append(c)
        return c

    yield start
    for c in started:
        c.stop()
    for c in started:
        assert c.join(60), "a consumer did not stop"


def record(queue):
    """A handler that writes one row per delivery in its transaction."""
    def handler(m, conn):
        conn.execute(f"INSERT INTO {queue}_done VALUES (%s, %s, %s)",
                     (m.msg_id, m.attempts, threading.current_thread().name))
    return handler


def done(db, queue):
    return db.execute(f"SELECT msg_id, attempt FROM {queue}_done ORDER BY msg_id, attempt").fetchall()


def gone(db, queue):
    return scalar(db, "SELECT depth + in_flight + delayed FROM mq.metrics(%s)", (queue,)) == 0


def polling(db, app, n=1):
    """Whether n sessions of the consumer wait in mq.read."""
    return scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                      " AND state = 'active' AND query LIKE '%%mq.read%%'", (app,)) >= n


def test_success_commits_write_and_ack_together(db, queue, consume):
    msg_id = mq_client.send(db, queue, {"n": 1})
    consume(queue, record(queue))
    wait_until(lambda: gone(db, queue), what="the ack")
    assert done(db, queue) == [(msg_id, 1)]


def test_exception_rolls_back_then_nacks_and_redelivers(db, queue, consume):
    seen = []

    def handler(m, conn):
        record(queue)(m, conn)
        seen.append((m.attempts, m.last_error))
        if m.attempts < 3:
            raise RuntimeError(f"boom {m.attempts}")

    msg_id = mq_client.send(db, queue, {"n": 1})
    consume(queue, handler)
    wait_until(lambda: gone(db, queue), what="the third attempt's ack")
    assert seen == [(1, None), (2, "RuntimeError: boom 1"), (3, "RuntimeError: boom 2")]
    assert done(db, queue) == [(msg_id, 3)]      # the failed attempts' writes rolled back


def test_connection_lost_in_the_handler_applies_nothing(db, queue, consume):
    """The connection dies after the handler wrote, before the commit: the
    write is lost with the ack, and the redelivery applies it once."""
    wrote = threading.Event()
    go_on = threading.Event()
    pids = []

    def handler(m, conn):
        record(queue)(m, conn)
        if m.attempts == 1:
            pids.append(conn.info.backend_pid)
            wrote.set()
            go_on.wait(60)                       # the test kills the session here

    msg_id = mq_client.send(db, queue, {"n": 1})
    consume(queue, handler, visibility_timeout=1)
    assert wrote.wait(60)
    assert scalar(db, "SELECT pg_terminate_backend(%s)", (pids[0],))
    wait_until(lambda: scalar(db, "SELECT NOT EXISTS (SELECT FROM pg_stat_activity"
                                  " WHERE pid = %s)", (pids[0],)), what="the session to end")
    go_on.set()                                  # the handler returns; the ack fails
    wait_until(lambda: gone(db, queue), what="the redelivery's ack")
    assert done(db, queue) == [(msg_id, 2)]


def test_failure_between_write_and_ack_applies_nothing(dsn, db, queue, consume):
    """The handler wrote and returned, and the ack fails (the consumer's
    role lost its right meanwhile): the write is rolled back with it, and
    the redelivery applies it once."""
    role = "mq_client_py_worker"
    db.execute(f"DROP ROLE IF EXISTS {role}")
    db.execute(f"CREATE ROLE {role} LOGIN IN ROLE mq_consumer")
    db.execute(f"GRANT INSERT ON {queue}_done TO {role}")
    wrote = threading.Event()
    go_on = threading.Event()
    logged = []
    catch = logging.Handler()
    catch.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("mq_client").addHandler(catch)

    def handler(m, conn):
        record(queue)(m, conn)
        if m.attempts == 1:
            wrote.set()
            go_on.wait(60)                       # the test revokes the right here

    try:
        msg_id = mq_client.send(db, queue, {"n": 1})
        consume(queue, handler, visibility_timeout=1, reconnect_min=0.05,
                connect_kwargs={"user": role})
        assert wrote.wait(60)
        db.execute(f"REVOKE mq_consumer FROM {role}")
        go_on.set()                              # the handler returns; the ack fails (42501)
        wait_until(lambda: any("permission denied" in r for r in logged),
                   what="the consumer to log the failed nack")
        db.execute(f"GRANT mq_consumer TO {role}")
        wait_until(lambda: gone(db, queue), what="the redelivery's ack")
        assert done(db, queue) == [(msg_id, 2)]
    finally:
        logging.getLogger("mq_client").removeHandler(catch)
        db.execute(f"DROP OWNED BY {role}")
        db.execute(f"DROP ROLE {role}")


def test_stale_claim_rolls_the_writes_back(dsn, db, queue, consume):
    """The claim lapses during the handler and another reader gets the
    message: the first handler's ack is refused, its writes undone."""
    wrote = threading.Event()
    go_on = threading.Event()

    def handler(m, conn):
        record(queue)(m, conn)
        wrote.set()
        go_on.wait(60)

    mq_client.send(db, queue, {"n": 1})
    c = consume(queue, handler, visibility_timeout=0)   # lapses at once
    assert wrote.wait(60)
    other = []
    wait_until(lambda: other.extend(mq_client.read(db, queue, visibility_timeout=600)) or other,
               what="the second delivery")
    assert other[0].receipt == 2
    c.stop()                                     # claim nothing more
    go_on.set()
    assert c.join(60)
    assert done(db, queue) == []
    assert mq_client.ack(db, queue, other[0].msg_id, receipt=2)


def test_long_poll_wakes_on_send(db, queue, consume):
    app = "mq-client-test-wake"
    consume(queue, record(queue), application_name=app)
    wait_until(lambda: polling(db, app), what="the consumer to wait in mq.read")
    msg_id = mq_client.send(db, queue, {"n": 1})
    wait_until(lambda: gone(db, queue), timeout=60,
               what="the waiting read (wait => 300 s) to return the message")
    assert done(db, queue) == [(msg_id, 1)]


def test_concurrency_n_processes_each_message_once(db, queue, consume):
    n = 4
    barrier = threading.Barrier(n, timeout=60)   # breaks unless n run at once
    ids = mq_client.send_batch(db, queue, [{"i": i} for i in range(200)])

    def handler(m, conn):
        record(queue)(m, conn)
        if m.msg_id in ids[:n]:
            barrier.wait()

    consume(queue, handler, concurrency=n)
    wait_until(lambda: gone(db, queue), what="all 200 acks")
    assert done(db, queue) == [(i, 1) for i in ids]
    assert not barrier.broken
    assert scalar(db, f"SELECT count(DISTINCT note) FROM {queue}_done") >= n


def test_graceful_stop_finishes_the_running_handler(db, queue, consume):
    app = "mq-client-test-stop"
    started = threading.Event()
    go_on = threading.Event()

    def handler(m, conn):
        started.set()
        go_on.wait(60)
        record(queue)(m, conn)

    msg_id = mq_client.send(db, queue, {"n": 1})
    c = consume(queue, handler, concurrency=2, application_name=app)
    assert started.wait(60)
    wait_until(lambda: polling(db, app), what="the idle worker to wait in mq.read")
    c.stop()
    assert scalar(db, "SELECT in_flight FROM mq.metrics(%s)", (queue,)) == 1
    go_on.set()
    assert c.join(60)                            # the idle worker's wait was cancelled
    assert done(db, queue) == [(msg_id, 1)] and gone(db, queue)
    assert scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                  (app,)) == 0


def test_stop_event_stops_run(dsn, queue):
    stop = threading.Event()
    c = mq_client.Consumer(dsn, queue, record(queue), wait=300, stop_event=stop)
    t = threading.Thread(target=c.run, kwargs={"handle_signals": False})
    t.start()
    stop.set()
    t.join(60)
    assert not t.is_alive()


def test_reconnects_after_its_session_is_terminated(db, queue, consume):
    app = "mq-client-test-reconnect"
    consume(queue, record(queue), application_name=app, reconnect_min=0.05)
    wait_until(lambda: polling(db, app), what="the consumer to wait in mq.read")
    pid = scalar(db, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))
    assert scalar(db, "SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(lambda: scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                  " AND pid <> %s", (app, pid)) == 1, what="a new session")
    msg_id = mq_client.send(db, queue, {"n": 1})
    wait_until(lambda: gone(db, queue), what="the message, through the new session")
    assert done(db, queue) == [(msg_id, 1)]


def test_claim_commits_before_the_handler_runs(db, queue, consume):
    """While a handler runs, its claim is committed: in flight for
    monitoring, and not readable by others."""
    started = threading.Event()
    go_on = threading.Event()

    def handler(m, conn):
        started.set()
        go_on.wait(60)

    mq_client.send(db, queue, {"n": 1})
    consume(queue, handler)
    assert started.wait(60)
    assert scalar(db, "SELECT in_flight FROM mq.metrics(%s)", (queue,)) == 1
    assert mq_client.read(db, queue) == []
    go_on.set()
    wait_until(lambda: gone(db, queue), what="the ack")


def test_high_ids_through_the_consumer(db, consume):
    qid = create_high_id_queue(db, "big_consumer")
    db.execute("CREATE TABLE big_consumer_done (msg_id bigint, attempt int, note text)")
    got = []

    def handler(m, conn):
        got.append(m.msg_id)
        record("big_consumer")(m, conn)

    ids = mq_client.send_batch(db, "big_consumer", [{"n": 1}, {"n": 2}])
    consume("big_consumer", handler)
    wait_until(lambda: gone(db, "big_consumer"), what="the acks")
    assert qid > 2**53 and got == ids and all(i > 2**53 for i in ids)
    assert done(db, "big_consumer") == [(i, 1) for i in ids]


def test_sigterm_stops_run(dsn, db, queue):
    """run() in a program of its own: SIGTERM cancels the wait and it exits."""
    app = "mq-client-test-sigterm"
    program = (f"import mq_client\n"
               f"def handler(m, conn):\n"
               f"    conn.execute('INSERT INTO {queue}_done VALUES (%s, %s, %s)', (m.msg_id, m.attempts, 'p'))\n"
               f"mq_client.Consumer({dsn!r}, {queue!r}, handler, wait=300,"
               f" application_name={app!r}).run()\n")
    root = pathlib.Path(__file__).resolve().parents[1]
    p = subprocess.Popen([sys.executable, "-c", program],
                         env={**os.environ, "PYTHONPATH": str(root)})
    try:
        msg_id = mq_client.send(db, queue, {"n": 1})
        wait_until(lambda: gone(db, queue), what="the program to handle the message")
        wait_until(lambda: polling(db, app), what="the program to wait in mq.read")
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
        assert done(db, queue) == [(msg_id, 1)]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
