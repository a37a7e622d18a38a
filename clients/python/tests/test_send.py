"""send / send_batch in the caller's transaction, read, typed messages."""

import psycopg
import pytest

import mq_client
from conftest import create_high_id_queue, scalar


def test_rolled_back_send_is_not_delivered(dsn, db, queue):
    with psycopg.connect(dsn) as conn:            # psycopg's default: a transaction
        mq_client.send(conn, queue, {"n": 1})
        conn.rollback()
    assert mq_client.read(db, queue) == []


def test_committed_send_is_delivered(dsn, db, queue):
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(f"INSERT INTO {queue}_done VALUES (0, 0, 'the order')")
            msg_id = mq_client.send(conn.cursor(), queue, {"n": 1, "tags": ["a", "b"]},
                                    key="k1", headers={"trace": "t-1"})
    [m] = mq_client.read(db, queue)
    assert isinstance(m, mq_client.Message)
    assert (m.queue, m.msg_id, m.receipt, m.attempts) == (queue, msg_id, 1, 1)
    assert (m.key, m.payload, m.headers) == ("k1", {"n": 1, "tags": ["a", "b"]}, {"trace": "t-1"})
    assert m.enqueued_at.tzinfo is not None and m.visible_at > m.enqueued_at
    assert m.last_error is None and m.dead_letter is None
    assert mq_client.ack(db, queue, m.msg_id, receipt=m.receipt) is True


def test_send_batch_keeps_order_and_is_all_or_nothing(dsn, db, queue):
    with psycopg.connect(dsn) as conn:
        ids = mq_client.send_batch(conn, queue, [{"n": i} for i in range(5)],
                                   keys=["a", None, "c", None, "e"],
                                   headers=[None, {"h": 1}, None, None, None])
        conn.commit()
    assert ids == sorted(ids) and len(set(ids)) == 5
    got = mq_client.read(db, queue, 10)
    assert [(m.msg_id, m.payload["n"], m.key) for m in got] == \
        list(zip(ids, range(5), ["a", None, "c", None, "e"]))
    assert got[1].headers == {"h": 1}
    with pytest.raises(psycopg.errors.InvalidParameterValue):   # 22023: lengths differ
        mq_client.send_batch(db, queue, [{"n": 1}, {"n": 2}], keys=["a"])


def test_read_commits_the_claim(dsn, db, queue):
    """The psycopg trap: with autocommit off, a SELECT opens a transaction
    that stays open.  read() commits its claim, so no lock or snapshot is
    left held and monitoring sees the message in flight."""
    mq_client.send(db, queue, {"n": 1})
    with psycopg.connect(dsn) as conn:             # autocommit off
        [m] = mq_client.read(conn, queue)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert scalar(db, "SELECT in_flight FROM mq.metrics(%s)", (queue,)) == 1
        assert scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
                      " AND backend_xmin IS NULL AND state = 'idle'", (conn.info.backend_pid,)) == 1
        assert mq_client.ack(conn, queue, m.msg_id, receipt=m.receipt)
        conn.commit()


def test_ids_above_2_pow_53_are_exact(db):
    qid = create_high_id_queue(db, "big_ids")
    assert qid > 2**53
    first = mq_client.send(db, "big_ids", {"n": 1})
    batch = mq_client.send_batch(db, "big_ids", [{"n": 2}, {"n": 3}])
    assert first > 2**53 and float(first) != first     # no double holds it
    assert batch == [first + 1, first + 2]
    got = mq_client.read(db, "big_ids", 3)
    assert [m.msg_id for m in got] == [first, first + 1, first + 2]
    for m in got:
        assert mq_client.ack(db, "big_ids", m.msg_id, receipt=m.receipt)
    assert scalar(db, "SELECT depth + in_flight FROM mq.metrics('big_ids')") == 0
