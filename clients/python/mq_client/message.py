"""The message a consumer is handed: one row of mq.read (type mq.message)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

# The columns of mq.message, in the order Message takes them.
COLUMNS = ("msg_id, receipt, key, payload, headers, attempts, enqueued_at,"
           " visible_at, last_error, dead_letter")


@dataclass(frozen=True)
class Message:
    """One delivery of a work-queue message (docs/reference.md#type-mqmessage).

    msg_id and receipt are bigint in the database and Python ints here, so
    ids above 2**53 are exact.  payload, headers and dead_letter are jsonb,
    decoded by psycopg (dict, list, str, int, float, bool or None).
    enqueued_at and visible_at are aware datetimes (timestamptz).
    """

    queue: str
    msg_id: int
    receipt: int
    key: Optional[str]
    payload: Any
    headers: Any
    attempts: int
    enqueued_at: datetime
    visible_at: datetime
    last_error: Optional[str]
    dead_letter: Any

    @classmethod
    def from_row(cls, queue: str, row: tuple) -> "Message":
        """Build a Message from a row selected with COLUMNS."""
        return cls(queue, *row)
