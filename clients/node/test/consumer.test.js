'use strict';
// Consumer: the exactly-once-effects handler, retries, long polling,
// concurrency, graceful stop and reconnecting, against a real server.

const { before, after, afterEach, test } = require('node:test');
const assert = require('node:assert/strict');
const mq = require('..');
const { setUp, tearDown, createQueue, createHighIdQueue, scalar, waitUntil } = require('./helpers');

const DB = 'mq_client_node_consumer';
let config;
let db;
let apps = 0;
let running = [];
const quiet = { info() {}, warn() {}, error() {} };

before(async () => { ({ config, db } = await setUp(DB)); });
after(async () => { await tearDown(DB, db); });
afterEach(async () => {
  for (const { consumer } of running) consumer.stop();
  await Promise.all(running.map(({ done }) => done));
  running = [];
});

// Start a Consumer; every one is stopped and awaited after each test.
function consume(queue, handler, options = {}, clientConfig = config) {
  const consumer = new mq.Consumer(clientConfig, queue, handler,
    { wait: 300, applicationName: `mq-client-node-${++apps}`, logger: quiet, ...options });
  const done = consumer.run();
  running.push({ consumer, done });
  return { consumer, done, app: consumer.config.application_name };
}

// A handler that writes one row per delivery in its transaction.
const record = (queue) => async (m, client) => {
  await client.query(`INSERT INTO ${queue}_done VALUES ($1, $2, $3)`, [m.msgId, m.attempts, 'w']);
};

async function done(queue) {
  const r = await db.query(`SELECT msg_id::text AS id, attempt FROM ${queue}_done ORDER BY msg_id, attempt`);
  return r.rows.map((row) => [BigInt(row.id), row.attempt]);
}

const gone = async (queue) =>
  (await scalar(db, 'SELECT depth + in_flight + delayed FROM mq.metrics($1)', [queue])) === '0';

const polling = async (app) =>
  (await scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1" +
    " AND state = 'active' AND query LIKE '%mq.read%'", [app])) >= 1;

// A promise and its resolve function.
function gate() {
  let open;
  const opened = new Promise((resolve) => { open = resolve; });
  return { opened, open };
}

test('success: the write and the ack commit together', async () => {
  const q = await createQueue(db);
  const id = await mq.send(db, q, { n: 1 });
  consume(q, record(q));
  await waitUntil(() => gone(q), 'the ack');
  assert.deepEqual(await done(q), [[id, 1]]);
});

test('an exception rolls back, nacks, and the message is delivered again', async () => {
  const q = await createQueue(db);
  const seen = [];
  const id = await mq.send(db, q, { n: 1 });
  consume(q, async (m, client) => {
    await record(q)(m, client);
    seen.push([m.attempts, m.lastError]);
    if (m.attempts < 3) throw new Error(`boom ${m.attempts}`);
  });
  await waitUntil(() => gone(q), "the third attempt's ack");
  assert.deepEqual(seen, [[1, null], [2, 'Error: boom 1'], [3, 'Error: boom 2']]);
  assert.deepEqual(await done(q), [[id, 3]]);   // the failed attempts' writes rolled back
});

test('the connection lost in the handler applies nothing', async () => {
  const q = await createQueue(db);
  const wrote = gate();
  const goOn = gate();
  let pid;
  const id = await mq.send(db, q, { n: 1 });
  consume(q, async (m, client) => {
    await record(q)(m, client);
    if (m.attempts === 1) {
      pid = client.processID;
      wrote.open();
      await goOn.opened;                          // the test ends the session here
    }
  }, { visibilityTimeout: 1, reconnectMin: 0.05 });
  await wrote.opened;
  assert.equal(await scalar(db, 'SELECT pg_terminate_backend($1)', [pid]), true);
  await waitUntil(async () => (await scalar(db,
    'SELECT count(*) FROM pg_stat_activity WHERE pid = $1', [pid])) === '0', 'the session to end');
  goOn.open();                                    // the handler returns; the ack fails
  await waitUntil(() => gone(q), "the redelivery's ack");
  assert.deepEqual(await done(q), [[id, 2]]);
});

test('a failure between the write and the ack applies nothing', async () => {
  // the handler wrote and returned, and the ack fails (the consumer's role
  // lost its right meanwhile): the write is rolled back with it
  const q = await createQueue(db);
  const role = 'mq_client_node_worker';
  await db.query(`DROP ROLE IF EXISTS ${role}`);
  await db.query(`CREATE ROLE ${role} LOGIN IN ROLE mq_consumer`);
  await db.query(`GRANT INSERT ON ${q}_done TO ${role}`);
  const wrote = gate();
  const goOn = gate();
  const logged = [];
  const logger = { info() {}, warn() {}, error(s) { logged.push(s); } };
  try {
    const id = await mq.send(db, q, { n: 1 });
    consume(q, async (m, client) => {
      await record(q)(m, client);
      if (m.attempts === 1) {
        wrote.open();
        await goOn.opened;                        // the test revokes the right here
      }
    }, { visibilityTimeout: 1, reconnectMin: 0.05, logger }, { ...config, user: role });
    await wrote.opened;
    await db.query(`REVOKE mq_consumer FROM ${role}`);
    goOn.open();                                  // the handler returns; the ack fails (42501)
    await waitUntil(() => logged.some((s) => s.includes('permission denied')),
      'the consumer to log the failed nack');
    await db.query(`GRANT mq_consumer TO ${role}`);
    await waitUntil(() => gone(q), "the redelivery's ack");
    assert.deepEqual(await done(q), [[id, 2]]);
  } finally {
    for (const { consumer } of running) consumer.stop();
    await Promise.all(running.map(({ done: d }) => d));
    running = [];
    await db.query(`DROP OWNED BY ${role}`);
    await db.query(`DROP ROLE ${role}`);
  }
});

test('a stale claim rolls the writes back', async () => {
  const q = await createQueue(db);
  const wrote = gate();
  const goOn = gate();
  await mq.send(db, q, { n: 1 });
  const c = consume(q, async (m, client) => {
    await record(q)(m, client);
    wrote.open();
    await goOn.opened;
  }, { visibilityTimeout: 0 });                   // lapses at once
  await wrote.opened;
  let other = [];
  await waitUntil(async () => (other = await mq.read(db, q, { visibilityTimeout: 600 })).length > 0,
    'the second delivery');
  assert.equal(other[0].receipt, 2n);
  c.consumer.stop();                              // claim nothing more
  goOn.open();
  await c.done;
  assert.deepEqual(await done(q), []);
  assert.equal(await mq.ack(db, q, other[0].msgId, { receipt: 2n }), true);
});

test('a long poll wakes on send', async () => {
  const q = await createQueue(db);
  const { app } = consume(q, record(q));
  await waitUntil(() => polling(app), 'the consumer to wait in mq.read');
  const id = await mq.send(db, q, { n: 1 });
  await waitUntil(() => gone(q), 'the waiting read (wait => 300 s) to return the message');
  assert.deepEqual(await done(q), [[id, 1]]);
});

test('concurrency N processes each message once', async () => {
  const q = await createQueue(db);
  const n = 4;
  const ids = await mq.sendBatch(db, q, Array.from({ length: 200 }, (_, i) => ({ i })));
  const first = new Set(ids.slice(0, n));
  let arrived = 0;
  const all = gate();                             // opens once n handlers run at once
  consume(q, async (m, client) => {
    await record(q)(m, client);
    if (first.has(m.msgId)) {
      if (++arrived === n) all.open();
      await all.opened;
    }
  }, { concurrency: n });
  await waitUntil(() => gone(q), 'all 200 acks');
  assert.deepEqual(await done(q), ids.map((id) => [id, 1]));
});

test('a graceful stop finishes the running handler', async () => {
  const q = await createQueue(db);
  const started = gate();
  const goOn = gate();
  const ac = new AbortController();
  const id = await mq.send(db, q, { n: 1 });
  const c = consume(q, async (m, client) => {
    started.open();
    await goOn.opened;
    await record(q)(m, client);
  }, { concurrency: 2, signal: ac.signal });
  await started.opened;
  await waitUntil(() => polling(c.app), 'the idle worker to wait in mq.read');
  ac.abort();
  assert.equal(c.consumer.stopped, true);
  assert.equal(await scalar(db, 'SELECT in_flight FROM mq.metrics($1)', [q]), '1');
  goOn.open();
  await c.done;                                   // the idle worker's wait was cancelled
  assert.deepEqual(await done(q), [[id, 1]]);
  assert.equal(await gone(q), true);
  assert.equal(await scalar(db, 'SELECT count(*) FROM pg_stat_activity WHERE application_name = $1',
    [c.app]), '0');
});

test('it reconnects after its session is terminated', async () => {
  const q = await createQueue(db);
  const { app } = consume(q, record(q), { reconnectMin: 0.05 });
  await waitUntil(() => polling(app), 'the consumer to wait in mq.read');
  const pid = await scalar(db, 'SELECT pid FROM pg_stat_activity WHERE application_name = $1', [app]);
  assert.equal(await scalar(db, 'SELECT pg_terminate_backend($1)', [pid]), true);
  await waitUntil(async () => (await scalar(db, 'SELECT count(*) FROM pg_stat_activity' +
    ' WHERE application_name = $1 AND pid <> $2', [app, pid])) === '1', 'a new session');
  const id = await mq.send(db, q, { n: 1 });
  await waitUntil(() => gone(q), 'the message, through the new session');
  assert.deepEqual(await done(q), [[id, 1]]);
});

test('the claim commits before the handler runs', async () => {
  const q = await createQueue(db);
  const started = gate();
  const goOn = gate();
  await mq.send(db, q, { n: 1 });
  consume(q, async () => { started.open(); await goOn.opened; });
  await started.opened;
  assert.equal(await scalar(db, 'SELECT in_flight FROM mq.metrics($1)', [q]), '1');
  assert.deepEqual(await mq.read(db, q), []);
  goOn.open();
  await waitUntil(() => gone(q), 'the ack');
});

test('ids above 2^53 through the consumer', async () => {
  const qid = await createHighIdQueue(db, 'big_consumer');
  const got = [];
  const ids = await mq.sendBatch(db, 'big_consumer', [{ n: 1 }, { n: 2 }]);
  consume('big_consumer', async (m, client) => {
    got.push(m.msgId);
    await record('big_consumer')(m, client);
  });
  await waitUntil(() => gone('big_consumer'), 'the acks');
  assert.ok(qid > 2n ** 53n && ids.every((i) => i > 2n ** 53n));
  assert.deepEqual(got, ids);
  assert.deepEqual(await done('big_consumer'), ids.map((i) => [i, 1]));
});
