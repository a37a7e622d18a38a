"""mq_client: a small client for mq, message queues inside PostgreSQL.

send / send_batch run in the caller's transaction; Consumer runs a
handler per message with its writes and the ack in one transaction.
"""

from .consumer import Consumer, Handler
from .message import Message
from .ops import ack, extend, nack, read, send, send_batch

__all__ = ["Consumer", "Handler", "Message", "ack", "extend", "nack", "read",
           "send", "send_batch"]
__version__ = "0.2.0"
