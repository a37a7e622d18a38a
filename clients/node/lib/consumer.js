'use strict';
// Consumer: a loop that long-polls a work queue and runs a handler per
// message, with its writes and the message's ack in one transaction.
//
// Each of `concurrency` workers owns one client and repeats:
// 1. claim one message: mq.read(queue, 1, wait => ...) in a transaction of
//    its own, committed before the handler starts, so the claim holds no
//    lock and shows in monitoring while the handler runs;
// 2. BEGIN, the handler's statements, mq.ack(queue, msg_id, receipt),
//    COMMIT: they commit together or not at all.  An ack that finds its
//    delivery stale (the claim lapsed and another reader got the message)
//    rolls the handler's writes back: only the delivery that acks applies
//    its effects;
// 3. on an exception, ROLLBACK, then mq.nack(..., receipt) in its own
//    transaction, so the queue's retry backoff and dead-letter queue apply.
// stop() or the AbortSignal lets running handlers finish and commit, and
// cancels the waiting reads (a cancelled mq.read claims nothing).  A
// broken connection is reopened with exponential backoff; the message it
// was handling comes back when its visibility timeout lapses.

const { Client } = require('pg');
const { setTimeout: sleep } = require('node:timers/promises');
const ops = require('./ops');

// SQLSTATE classes after which the session is gone: connection exceptions,
// and the server ending the session (57P01 admin shutdown and so on).
const sessionLost = (err) => !err.code || /^(08|57P)/.test(err.code);

class Consumer {
  /**
   * @param {string|import('pg').ClientConfig} config
   * @param {string} queue
   * @param {(message: object, client: import('pg').Client) => Promise<void>} handler
   * @param {object} [options] see index.d.ts
   */
  constructor(config, queue, handler, {
    concurrency = 1, wait = 20, visibilityTimeout = null, reconnectMin = 0.1, reconnectMax = 30,
    applicationName = 'mq-client', signal = null, logger = console,
  } = {}) {
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new RangeError('concurrency must be an integer of at least 1');
    }
    this.config = { ...(typeof config === 'string' ? { connectionString: config } : config),
      application_name: applicationName };
    this.queue = queue;
    this.handler = handler;
    this.concurrency = concurrency;
    this.wait = wait;
    this.visibilityTimeout = visibilityTimeout;
    this.reconnectMin = reconnectMin;
    this.reconnectMax = reconnectMax;
    this.logger = logger;
    this.stopping = new AbortController();
    this.slots = [];
    this.done = null;
    if (signal) {
      if (signal.aborted) this.stop();
      else signal.addEventListener('abort', () => this.stop(), { once: true });
    }
  }

  /** Run until stopped; resolves when every worker has ended. */
  run() {
    if (!this.done) {
      this.slots = Array.from({ length: this.concurrency },
        () => ({ client: null, broken: false, polling: false, cancelling: Promise.resolve() }));
      this.done = Promise.all(this.slots.map((slot) => this.work(slot)));
    }
    return this.done;
  }

  /** No new claims; running handlers finish; waiting reads are cancelled. */
  stop() {
    if (this.stopping.signal.aborted) return;
    this.stopping.abort();
    // Again every 100 ms until the workers end: a read may not have
    // reached the server when a cancel came, and an idle server ignores it.
    const timer = setInterval(() => this.cancelPolls(), 100);
    this.cancelPolls();
    Promise.resolve(this.done).finally(() => clearInterval(timer));
  }

  get stopped() { return this.stopping.signal.aborted; }

  cancelPolls() {
    for (const slot of this.slots) {
      if (!slot.polling || !slot.client) continue;
      // A worker waits for its cancels before it commits a claim (and so
      // before any handler), so a cancel reaches the read or an idle
      // session, which ignores it; never the handler's transaction.
      const pid = slot.client.processID;
      slot.cancelling = Promise.all([slot.cancelling, this.cancelBackend(pid)]);
    }
  }

  async cancelBackend(pid) {
    const c = new Client(this.config);
    c.on('error', () => {});
    try {
      await c.connect();
      await c.query('SELECT pg_cancel_backend($1)', [pid]);
    } catch (err) {
      this.logger.warn(`mq-client: queue ${this.queue}: could not cancel a waiting read: ${err.message}`);
    } finally {
      await c.end().catch(() => {});
    }
  }

  async work(slot) {
    let delay = this.reconnectMin;
    while (!this.stopped) {
      try {
        if (!slot.client) await this.connect(slot);
        for (const message of await this.poll(slot)) await this.handle(slot, message);
        delay = this.reconnectMin;
      } catch (err) {
        if (slot.broken || sessionLost(err)) {
          this.logger.warn(`mq-client: queue ${this.queue}: connection lost (${err.message}); reconnecting in ${delay} s`);
          await this.disconnect(slot);
        } else {
          this.logger.error(`mq-client: queue ${this.queue}: ${err.message}`);
        }
        // full jitter, so that many consumers do not reconnect at once
        const ms = 1000 * delay * (0.5 + Math.random() / 2);
        await sleep(ms, undefined, { signal: this.stopping.signal }).catch(() => {});
        delay = Math.min(delay * 2, this.reconnectMax);
      }
    }
    await this.disconnect(slot);
  }

  async connect(slot) {
    const client = new Client(this.config);
    slot.broken = false;
    // without a listener an 'error' event (the server went away while the
    // client was idle) would end the process
    client.on('error', () => { slot.broken = true; });
    client.on('end', () => { slot.broken = true; });
    try {
      await client.connect();
    } catch (err) {
      await client.end().catch(() => {});
      throw err;
    }
    slot.client = client;
  }

  async disconnect(slot) {
    const client = slot.client;
    slot.client = null;
    if (client) await client.end().catch(() => {});
  }

  // One long-polling read of one message; [] when stopped.
  async poll(slot) {
    if (this.stopped) return [];
    slot.polling = true;
    try {
      return await ops.readCommitted(slot.client, this.queue,
        { qty: 1, wait: this.wait, visibilityTimeout: this.visibilityTimeout },
        async () => { slot.polling = false; await slot.cancelling; });
    } catch (err) {
      if (err.code === '57014' && this.stopped) return [];
      throw err;
    } finally {
      slot.polling = false;
      await slot.cancelling;
    }
  }

  async handle(slot, message) {
    const client = slot.client;
    await client.query('BEGIN');
    try {
      await this.handler(message, client);
      if (!await ops.ack(client, this.queue, message.msgId, { receipt: message.receipt })) {
        await client.query('ROLLBACK');
        this.logger.warn(`mq-client: queue ${this.queue}: message ${message.msgId}: the claim was lost` +
          ' (its visibility timeout lapsed and it was delivered again); its writes were rolled back');
        return;
      }
      await client.query('COMMIT');
    } catch (err) {
      if (slot.broken || (err.code && sessionLost(err))) throw err;
      await client.query('ROLLBACK');
      this.logger.info(`mq-client: queue ${this.queue}: message ${message.msgId} failed` +
        ` (attempt ${message.attempts}): ${err.message}`);
      // after the rollback, in a transaction of its own
      await ops.nack(client, this.queue, message.msgId,
        { receipt: message.receipt, error: `${err.name}: ${err.message}`.slice(0, 1000) });
    }
  }
}

module.exports = { Consumer };
