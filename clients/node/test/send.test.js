'use strict';
// send / sendBatch in the caller's transaction, read, typed messages.

const { before, after, test } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('pg');
const mq = require('..');
const { setUp, tearDown, createQueue, createHighIdQueue, scalar } = require('./helpers');

const DB = 'mq_client_node_send';
let config;
let db;

before(async () => { ({ config, db } = await setUp(DB)); });
after(async () => { await tearDown(DB, db); });

async function withClient(fn) {
  const c = new Client(config);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

test('a send in a rolled-back transaction is not delivered', async () => {
  const q = await createQueue(db);
  await withClient(async (c) => {
    await c.query('BEGIN');
    await mq.send(c, q, { n: 1 });
    await c.query('ROLLBACK');
  });
  assert.deepEqual(await mq.read(db, q), []);
});

test('a committed send is delivered, typed', async () => {
  const q = await createQueue(db);
  const id = await withClient(async (c) => {
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${q}_done VALUES (0, 0, 'the order')`);
    const sent = await mq.send(c, q, [1, 'two', { three: 3 }], { key: 'k1', headers: { trace: 't-1' } });
    await c.query('COMMIT');
    return sent;
  });
  assert.equal(typeof id, 'bigint');
  const [m] = await mq.read(db, q);
  assert.equal(m.queue, q);
  assert.equal(m.msgId, id);
  assert.equal(m.receipt, 1n);
  assert.equal(m.attempts, 1);
  assert.deepEqual(m.payload, [1, 'two', { three: 3 }]);   // a JSON array, not a PostgreSQL array
  assert.equal(m.key, 'k1');
  assert.deepEqual(m.headers, { trace: 't-1' });
  assert.ok(m.enqueuedAt instanceof Date && m.visibleAt > m.enqueuedAt);
  assert.equal(m.lastError, null);
  assert.equal(m.deadLetter, null);
  assert.equal(await mq.ack(db, q, m.msgId, { receipt: m.receipt }), true);
  assert.equal(await mq.ack(db, q, m.msgId, { receipt: m.receipt }), false);
});

test('sendBatch keeps the order, all or nothing', async () => {
  const q = await createQueue(db);
  const ids = await mq.sendBatch(db, q, [0, 1, 2, 3, 4].map((i) => ({ i })),
    { keys: ['a', null, 'c', null, 'e'], headers: [null, { h: 1 }, null, null, null] });
  assert.equal(new Set(ids).size, 5);
  const got = await mq.read(db, q, { qty: 10 });
  assert.deepEqual(got.map((m) => [m.msgId, m.payload.i, m.key]),
    ids.map((id, i) => [id, i, ['a', null, 'c', null, 'e'][i]]));
  assert.deepEqual(got[1].headers, { h: 1 });
  await assert.rejects(mq.sendBatch(db, q, [{}, {}], { keys: ['a'] }), { code: '22023' });
  await assert.rejects(mq.ack(db, q, 2 ** 53 + 2), RangeError);   // a number that lost digits
});

test('ids above 2^53 round-trip exactly', async () => {
  const qid = await createHighIdQueue(db, 'big_ids');
  assert.ok(qid > 2n ** 53n);
  const first = await mq.send(db, 'big_ids', { n: 1 });
  const batch = await mq.sendBatch(db, 'big_ids', [{ n: 2 }, { n: 3 }]);
  assert.ok(first > 2n ** 53n);
  assert.notEqual(BigInt(Number(first)), first);          // no number holds it
  assert.deepEqual(batch, [first + 1n, first + 2n]);
  const got = await mq.read(db, 'big_ids', { qty: 3 });
  assert.deepEqual(got.map((m) => m.msgId), [first, first + 1n, first + 2n]);
  for (const m of got) assert.equal(await mq.ack(db, 'big_ids', m.msgId, { receipt: m.receipt }), true);
  assert.equal(await scalar(db, "SELECT depth + in_flight FROM mq.metrics('big_ids')"), '0');
});
