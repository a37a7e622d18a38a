"""Consumer: a loop that long-polls a work queue and runs a handler per
message, with its writes and the message's ack in one transaction.

Each of `concurrency` threads owns one connection, in autocommit mode so
that nothing is ever left open between statements, and repeats:

1. claim one message: mq.read(queue, 1, wait => ...) in a transaction of
   its own (ops.read), which commits before the handler starts, so the
   claim holds no lock and shows in monitoring while the handler runs;
2. `with conn.transaction():` the handler's statements, then
   mq.ack(queue, msg_id, receipt): they commit together, or not at all.
   An ack that finds its delivery stale (the claim lapsed and another
   reader got the message) rolls the handler's writes back: only the
   delivery that acks applies its effects;
3. on an exception, after the rollback, mq.nack(..., receipt) in its own
   transaction, so the queue's retry backoff and dead-letter queue apply.

stop() (or SIGTERM/SIGINT under run(), or the stop_event) lets running
handlers finish and commit, and cancels the waiting reads (a cancelled
mq.read claims nothing).  A broken connection is reopened with
exponential backoff; the message it was handling comes back when its
visibility timeout lapses.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
from typing import Callable, List, Optional

import psycopg

from . import ops
from .message import Message

Handler = Callable[[Message, psycopg.Connection], None]

log = logging.getLogger("mq_client")


class _ClaimLost(Exception):
    """The ack found the delivery stale: undo the handler's writes."""


class _Slot:
    """One worker thread's connection, and whether it is in a long poll."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Optional[psycopg.Connection] = None
        self.polling = False


class Consumer:
    """Consume a work queue: Consumer(conninfo, "emails", handler).run().

    handler(message, conn) runs inside a transaction on conn; do the work's
    writes there and do not commit or roll back (raise to fail).  A
    successful return acks in the same transaction; an exception nacks.

    conninfo: a libpq connection string or URI (PG* variables fill in
    the rest).  concurrency: worker threads, each with a connection of its
    own that long-polls (so `concurrency` connections in all).  wait: the
    long poll, seconds (the server caps it at 900).  visibility_timeout:
    seconds, None for the queue's; keep it above a handler's run time.
    reconnect_min / reconnect_max: the backoff bounds, seconds.
    connect_kwargs: more arguments for psycopg.connect, e.g.
    {"prepare_threshold": None} behind PgBouncer before 1.21, which cannot
    keep the prepared statements psycopg makes of repeated queries.
    """

    def __init__(self, conninfo: str, queue: str, handler: Handler, *,
                 concurrency: int = 1, wait: float = 20.0,
                 visibility_timeout: Optional[float] = None,
                 reconnect_min: float = 0.1, reconnect_max: float = 30.0,
                 application_name: str = "mq-client",
                 stop_event: Optional[threading.Event] = None,
                 connect_kwargs: Optional[dict] = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.conninfo = conninfo
        self.queue = queue
        self.handler = handler
        self.concurrency = concurrency
        self.wait = wait
        self.visibility_timeout = visibility_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.application_name = application_name
        self.connect_kwargs = dict(connect_kwargs or {})
        self._stop = stop_event or threading.Event()
        self._slots = [_Slot() for _ in range(concurrency)]
        self._threads: List[threading.Thread] = []
        self._signalled = False

    # ---- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads and return."""
        workers = []
        for i, slot in enumerate(self._slots):
            t = threading.Thread(target=self._work, args=(slot,),
                                 name=f"mq-{self.queue}-{i}", daemon=True)
            t.start()
            workers.append(t)
        self._threads.extend(workers)
        watcher = threading.Thread(target=self._watch, args=(workers,),
                                   name=f"mq-{self.queue}-stop", daemon=True)
        watcher.start()
        self._threads.append(watcher)

    def stop(self) -> None:
        """Ask the workers to stop: running handlers finish, waits end."""
        self._stop.set()

    def join(self, timeout: Optional[float] = None) -> bool:
        """Wait for the workers to end; true when they all did."""
        for t in self._threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self._threads)

    def run(self, handle_signals: bool = True) -> None:
        """start(), then block until stopped (SIGTERM or SIGINT too, when
        handle_signals and called from the main thread), then join()."""
        previous = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                previous[s] = signal.signal(s, self._on_signal)
        try:
            self.start()
            # The signal handler only sets a flag: taking the Event's lock
            # inside a handler could deadlock with the interrupted wait.
            while not self._stop.wait(0.2):
                if self._signalled:
                    self.stop()
            self.join()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _on_signal(self, signum, frame) -> None:
        self._signalled = True

    def _watch(self, workers: List[threading.Thread]) -> None:
        """Once stopping, cancel the reads that wait, until the workers end
        (again every 0.1 s: a read may not have reached the server when
        the first cancel came, and a server that is idle ignores one)."""
        self._stop.wait()
        while True:
            for slot in self._slots:
                with slot.lock:
                    # Under the lock: a worker marks its poll done under it
                    # before it commits the claim, so a cancel reaches the
                    # read, or an idle session, which ignores it; never the
                    # handler's transaction.
                    if slot.polling and slot.conn is not None:
                        try:
                            slot.conn.cancel()
                        except psycopg.Error:
                            pass
            alive = [t for t in workers if t.is_alive()]
            if not alive:
                return
            alive[0].join(0.1)

    # ---- one worker ----------------------------------------------------------

    def _work(self, slot: _Slot) -> None:
        delay = self.reconnect_min
        while not self._stop.is_set():
            try:
                if slot.conn is None or slot.conn.closed:
                    slot.conn = psycopg.connect(self.conninfo, **{
                        "application_name": self.application_name, **self.connect_kwargs,
                        "autocommit": True})
                for message in self._poll(slot):
                    self._handle(slot.conn, message)
                delay = self.reconnect_min
            except Exception as e:
                if slot.conn is not None and not slot.conn.broken and not slot.conn.closed:
                    log.error("queue %s: %s", self.queue, e)
                else:
                    log.warning("queue %s: connection lost (%s); reconnecting in %.1f s",
                                self.queue, e, delay)
                    self._close(slot)
                # full jitter, so that many consumers do not reconnect at once
                self._stop.wait(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self.reconnect_max)
        self._close(slot)

    def _close(self, slot: _Slot) -> None:
        with slot.lock:
            conn, slot.conn = slot.conn, None
        if conn is not None:
            conn.close()

    def _poll(self, slot: _Slot) -> List[Message]:
        """One long-polling read of one message; [] when stopped."""
        with slot.lock:
            if self._stop.is_set():
                return []
            slot.polling = True
        try:
            return ops.read(slot.conn, self.queue, 1, wait=self.wait,
                            visibility_timeout=self.visibility_timeout)
        except psycopg.errors.QueryCanceled:
            if self._stop.is_set():
                return []
            raise
        finally:
            with slot.lock:
                slot.polling = False

    def _handle(self, conn: psycopg.Connection, message: Message) -> None:
        try:
            with conn.transaction():
                self.handler(message, conn)
                if not ops.ack(conn, self.queue, message.msg_id, receipt=message.receipt):
                    raise _ClaimLost()
        except _ClaimLost:
            log.warning("queue %s: message %d: the claim was lost (its visibility timeout"
                        " lapsed and it was delivered again); its writes were rolled back",
                        self.queue, message.msg_id)
        except Exception as e:
            if conn.broken or conn.closed:
                raise
            log.info("queue %s: message %d failed (attempt %d): %r",
                     self.queue, message.msg_id, message.attempts, e)
            # after the rollback, in a transaction of its own
            ops.nack(conn, self.queue, message.msg_id, receipt=message.receipt,
                     error=f"{type(e).__name__}: {e}"[:1000])
