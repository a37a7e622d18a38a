"""Fixtures: a database of our own in the cluster the PG* variables name
(test/run.sh's), with mq installed; a queue per test."""

import itertools
import os
import time

import psycopg
import pytest

DB = "mq_client_py"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def dsn():
    with psycopg.connect(dbname=os.environ.get("PGDATABASE", "postgres"),
                         autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB}")
    with psycopg.connect(dbname=DB, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION mq")
    yield f"dbname={DB}"
    with psycopg.connect(dbname=os.environ.get("PGDATABASE", "postgres"),
                         autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture
def db(dsn):
    """An autocommit connection for setting up and checking."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def queue(db):
    """A fresh work queue: short visibility timeout, retries at once."""
    name = f"q{next(_names)}"
    db.execute("SELECT mq.create_queue(%s, visibility_timeout => '30 seconds',"
               " max_attempts => 5, retry_delay => '0')", (name,))
    db.execute(f"CREATE TABLE {name}_done (msg_id bigint, attempt int, note text)")
    return name


def wait_until(predicate, timeout=60.0, what="condition"):
    """Poll predicate until true; fail after timeout (a hang guard, not a
    timing assertion)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def scalar(conn, sql, params=()):
    return conn.execute(sql, params).fetchone()[0]


def create_high_id_queue(conn, name):
    """A queue whose id and msg_ids are above 2**53.

    The ids' sequences are raised with setval (as test/sql/queue_ids.sql
    does for queue ids).  The msg_id sequence is raised before any send,
    and maintenance then seals the queue's first segment (it has fallen
    65,536 ids behind) and makes a new one current at the high id, so that
    reads do not walk the 2**53 ids between the first segment's start and
    the new ids; maintain() runs until the sealed segment is emptied.
    """
    conn.execute("SELECT setval('mq.queue_queue_id_seq', greatest(9007199254740993,"
                 " (SELECT last_value FROM mq.queue_queue_id_seq)))")
    conn.execute("SELECT mq.create_queue(%s, retry_delay => '0')", (name,))
    qid = scalar(conn, "SELECT queue_id FROM mq.queue WHERE queue_name = %s", (name,))
    conn.execute("SELECT setval(format('mq.q_%%s_seq', %s::bigint)::regclass,"
                 " 9007199254741000)", (qid,))
    wait_until(lambda: conn.execute("SELECT mq.maintain()") and scalar(
        conn, "SELECT NOT EXISTS (SELECT FROM mq.segment WHERE queue_id = %s"
              " AND (state = 'sealed' OR (state = 'current' AND lo < 9007199254741000)))",
        (qid,)), what="the first segment to be sealed and emptied")
    return qid
