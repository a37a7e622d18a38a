"""mq's SQL calls, one function each, run on the caller's connection.

Every function takes a psycopg Connection or Cursor and runs in whatever
transaction that connection is in: none of them commits, except read(),
whose claim must be committed before the messages are worked on (see
read's docstring).  Arguments go as parameters, never into SQL text.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, List, Optional, Sequence, Union

import psycopg
from psycopg.types.json import Jsonb

from .message import COLUMNS, Message

Target = Union[psycopg.Connection, psycopg.Cursor]
Seconds = Union[int, float, timedelta]


def _cursor(target: Target) -> psycopg.Cursor:
    return target.cursor() if isinstance(target, psycopg.Connection) else target


def _interval(value: Optional[Seconds]) -> Optional[timedelta]:
    """Seconds (a number) or a timedelta as the timedelta psycopg sends as interval."""
    if value is None or isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


def _json(value: Any) -> Optional[Jsonb]:
    return None if value is None else Jsonb(value)


def send(target: Target, queue: str, payload: Any, *, key: Optional[str] = None,
         headers: Any = None, delay: Optional[Seconds] = None) -> int:
    """mq.send in the caller's transaction; returns the msg_id (an offset
    for a partitioned queue).

    The message exists only if that transaction commits.  On a connection
    in autocommit mode outside `with conn.transaction()` the send commits
    at once, like any statement.  delay: seconds or a timedelta.
    """
    cur = _cursor(target)
    cur.execute("SELECT mq.send(%s, %s::jsonb, key => %s, headers => %s::jsonb,"
                " delay => coalesce(%s::interval, '0'))",
                (queue, Jsonb(payload), key, _json(headers), _interval(delay)))
    return cur.fetchone()[0]


def send_batch(target: Target, queue: str, payloads: Sequence[Any], *,
               keys: Optional[Sequence[Optional[str]]] = None,
               headers: Optional[Sequence[Any]] = None,
               delay: Optional[Seconds] = None) -> List[int]:
    """mq.send_batch in the caller's transaction: all or nothing; returns
    the msg_ids in the order of payloads.  keys and headers, when given,
    have one element per payload (None allowed)."""
    cur = _cursor(target)
    cur.execute("SELECT id FROM mq.send_batch(%s, %s::jsonb[], keys => %s::text[],"
                " headers => %s::jsonb[], delay => coalesce(%s::interval, '0'))"
                " WITH ORDINALITY AS t(id, n) ORDER BY n",
                (queue, [Jsonb(p) for p in payloads],
                 None if keys is None else list(keys),
                 None if headers is None else [_json(h) for h in headers],
                 _interval(delay)))
    return [row[0] for row in cur.fetchall()]


def read(conn: psycopg.Connection, queue: str, qty: int = 1, *,
         visibility_timeout: Optional[Seconds] = None,
         wait: Optional[Seconds] = None) -> List[Message]:
    """Claim up to qty messages with mq.read and commit the claim.

    The claim runs in `with conn.transaction()` with statement_timeout
    lifted for it (a long poll waits by design), so that it commits when
    this returns: on a connection in autocommit mode, or one with no
    transaction open.  A claim left in an open transaction (psycopg's
    implicit transaction when autocommit is off) would keep the claimed
    rows locked and the xmin horizon held, and monitoring (mq.metrics)
    would not see it in flight.  If the caller already has a transaction
    open, the claim becomes part of it and commits with it.

    wait: long polling, seconds or a timedelta (0 to 15 minutes).
    """
    with conn.transaction():
        cur = conn.cursor()
        cur.execute("SET LOCAL statement_timeout = 0")
        cur.execute(f"SELECT {COLUMNS} FROM mq.read(%s, %s, %s::interval,"
                    " coalesce(%s::interval, '0'))",
                    (queue, qty, _interval(visibility_timeout), _interval(wait)))
        rows = cur.fetchall()
    return [Message.from_row(queue, r) for r in rows]


def ack(target: Target, queue: str, msg_id: int, *, receipt: Optional[int] = None) -> bool:
    """mq.ack; false when the message is gone or the receipt is stale."""
    cur = _cursor(target)
    cur.execute("SELECT mq.ack(%s, %s::bigint, %s::bigint)", (queue, msg_id, receipt))
    return cur.fetchone()[0]


def nack(target: Target, queue: str, msg_id: int, *, receipt: Optional[int] = None,
         delay: Optional[Seconds] = None, error: Optional[str] = None) -> bool:
    """mq.nack; delay None applies the queue's retry backoff."""
    cur = _cursor(target)
    cur.execute("SELECT mq.nack(%s, %s::bigint, %s::bigint, %s::interval, %s)",
                (queue, msg_id, receipt, _interval(delay), error))
    return cur.fetchone()[0]


def extend(target: Target, queue: str, msg_id: int, visibility_timeout: Seconds, *,
           receipt: Optional[int] = None):
    """mq.extend; returns the new visible_at, None when the claim is lost."""
    cur = _cursor(target)
    cur.execute("SELECT mq.extend(%s, %s::bigint, %s::interval, %s::bigint)",
                (queue, msg_id, _interval(visibility_timeout), receipt))
    return cur.fetchone()[0]
