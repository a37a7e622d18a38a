// Drives mq_pgmq (pgmq's SQL API on top of mq, docs/pgmq.md) with pgmq-js,
// a pgmq client from npm, unchanged: queues, send, read, pop, set_vt,
// archive, delete and metrics, and a queue made with mq.create_queue used
// through the client.  test/run.sh runs it against its cluster (PGHOST,
// PGPORT, PGUSER from the environment); it makes and drops its own
// database.  Run: node --test test/pgmq-js/pgmq.test.js
'use strict';

const { before, after, test } = require('node:test');
const assert = require('node:assert/strict');
const { Client } = require('pg');
const { Pgmq } = require('pgmq-js');

const DB = 'mq_pgmq_js';
const conn = {
  host: process.env.PGHOST || '/var/run/postgresql',
  port: Number(process.env.PGPORT || 5432),
  user: process.env.PGUSER || 'postgres',
  password: process.env.PGPASSWORD || '',
};

let pgmq;   // the client under test
let sql;    // a plain connection to the same database, to check and set up

async function admin(statements) {
  const c = new Client({ ...conn, database: process.env.PGDATABASE || 'postgres' });
  await c.connect();
  try {
    for (const s of statements) await c.query(s);
  } finally {
    await c.end();
  }
}

before(async () => {
  await admin([`DROP DATABASE IF EXISTS ${DB}`, `CREATE DATABASE ${DB}`]);
  sql = new Client({ ...conn, database: DB });
  await sql.connect();
  await sql.query('CREATE EXTENSION mq');
  await sql.query('CREATE EXTENSION mq_pgmq');
  // pgmq-js would run CREATE EXTENSION pgmq, and defaults to TLS
  pgmq = await Pgmq.new({ ...conn, database: DB, ssl: false }, { skipExtensionCreation: true });
});

after(async () => {
  if (pgmq) await pgmq.close();
  if (sql) await sql.end();
  await admin([`DROP DATABASE IF EXISTS ${DB}`]);
});

// seconds from now to t
const secondsFromNow = (t) => (t.getTime() - Date.now()) / 1000;

test('queues: create (idempotent), createUnlogged, list', async () => {
  await pgmq.queue.create('js_q');
  await pgmq.queue.create('js_q');
  await pgmq.queue.createUnlogged('js_unlogged');
  const queues = await pgmq.queue.list();
  assert.deepEqual(queues.map((q) => q.name).sort(), ['js_q', 'js_unlogged']);
  for (const q of queues) {
    assert.equal(q.isPartitioned, false);
    assert.equal(q.isUnlogged, false);
  }
});

test('send, read, readBatch', async () => {
  const id = await pgmq.msg.send('js_q', { n: 1 });
  assert.equal(typeof id, 'number');
  const delayed = await pgmq.msg.send('js_q', { n: 'later' }, 3600);
  assert.equal(delayed, id + 1);
  const batch = await pgmq.msg.sendBatch('js_q', [{ n: 2 }, { n: 3 }]);
  assert.deepEqual(batch, [id + 2, id + 3]);

  const m = await pgmq.msg.read('js_q', 30);
  assert.equal(m.msgId, id);
  assert.equal(m.readCount, 1);
  assert.deepEqual(m.message, { n: 1 });
  assert.ok(m.enqueuedAt <= new Date(Date.now() + 1000));
  const vt = secondsFromNow(m.vt);
  assert.ok(vt > 25 && vt <= 31, `vt ${vt} s from now`);

  // the delayed message is not readable; the claimed one is not either
  const rest = await pgmq.msg.readBatch('js_q', 30, 10);
  assert.deepEqual(rest.map((r) => r.msgId), batch);
  assert.deepEqual(rest.map((r) => r.message), [{ n: 2 }, { n: 3 }]);
  assert.equal(await pgmq.msg.read('js_q', 30), undefined);
});

test('setVt: a read message becomes readable again', async () => {
  await pgmq.queue.purge('js_q');
  const id = await pgmq.msg.send('js_q', { v: 1 });
  assert.equal((await pgmq.msg.read('js_q', 3600)).msgId, id);
  assert.equal(await pgmq.msg.read('js_q', 3600), undefined);

  const m = await pgmq.msg.setVt('js_q', id, 0);
  assert.equal(m.msgId, id);
  assert.ok(Math.abs(secondsFromNow(m.vt)) < 5);
  const again = await pgmq.msg.read('js_q', 3600);
  assert.equal(again.msgId, id);
  assert.equal(again.readCount, 2);

  const later = await pgmq.msg.setVt('js_q', id, 100);
  const vt = secondsFromNow(later.vt);
  assert.ok(vt > 95 && vt <= 101, `vt ${vt} s from now`);
  // a message that does not exist
  assert.equal(await pgmq.msg.setVt('js_q', 999999, 0), undefined);
});

test('pop', async () => {
  await pgmq.queue.purge('js_q');
  assert.equal(await pgmq.msg.pop('js_q'), undefined);
  const [a, b] = await pgmq.msg.sendBatch('js_q', [{ p: 1 }, { p: 2 }]);
  const m = await pgmq.msg.pop('js_q');
  assert.equal(m.msgId, a);
  assert.equal(m.readCount, 0);
  assert.deepEqual(m.message, { p: 1 });
  assert.equal((await pgmq.msg.pop('js_q')).msgId, b);
  assert.equal(await pgmq.msg.pop('js_q'), undefined);
});

test('delete and archive, single and batch', async () => {
  await pgmq.queue.purge('js_q');
  const ids = await pgmq.msg.sendBatch('js_q', [1, 2, 3, 4, 5, 6]);
  assert.equal(await pgmq.msg.delete('js_q', ids[0]), true);
  assert.equal(await pgmq.msg.delete('js_q', ids[0]), false);
  assert.deepEqual(await pgmq.msg.deleteBatch('js_q', [ids[1], 999999, ids[2]]), [ids[1], ids[2]]);
  assert.equal(await pgmq.msg.archive('js_q', ids[3]), true);
  assert.equal(await pgmq.msg.archive('js_q', ids[3]), false);
  assert.deepEqual(await pgmq.msg.archiveBatch('js_q', [ids[4], ids[5], 999999]), [ids[4], ids[5]]);
  assert.deepEqual(await pgmq.msg.readBatch('js_q', 30, 10), []);
  // the archived ones are in mq's archive (its table is mq.a_<queue id>)
  const { rows } = await sql.query(
    "SELECT format('mq.%I', 'a_' || queue_id) AS t FROM mq.queue WHERE queue_name = 'js_q'");
  const archived = await sql.query(`SELECT msg_id::int AS id FROM ${rows[0].t} ORDER BY msg_id`);
  assert.deepEqual(archived.rows.map((r) => r.id), [ids[3], ids[4], ids[5]]);
});

test('metrics and all metrics', async () => {
  await pgmq.queue.purge('js_q');
  await pgmq.msg.sendBatch('js_q', [1, 2, 3]);
  await pgmq.msg.send('js_q', 4, 3600);
  await pgmq.msg.read('js_q', 30);
  const m = await pgmq.queue.getMetrics('js_q');
  assert.equal(m.queueName, 'js_q');
  assert.equal(m.queueLength, 4);
  const { rows } = await sql.query("SELECT total_sent::int AS n FROM mq.metrics('js_q')");
  assert.equal(m.totalMessages, rows[0].n);
  assert.ok(m.oldestMsgAgeSec >= 0 && m.oldestMsgAgeSec < 60);
  assert.ok(Math.abs(Date.now() - m.scrapeTime.getTime()) < 60000);
  const all = await pgmq.queue.getAllMetrics();
  assert.deepEqual(all.map((x) => x.queueName).sort(), ['js_q', 'js_unlogged']);
});

test('a queue made with mq.create_queue, used through pgmq-js', async () => {
  await sql.query("SELECT mq.create_queue('js_native')");
  const id = await pgmq.msg.send('js_native', { from: 'pgmq-js' });
  const { rows } = await sql.query("SELECT msg_id::int AS id, payload FROM mq.read('js_native', 1, '0')");
  assert.deepEqual(rows, [{ id, payload: { from: 'pgmq-js' } }]);
  const m = await pgmq.msg.read('js_native', 30);
  assert.equal(m.msgId, id);
  assert.equal(m.readCount, 2);
  assert.equal(await pgmq.msg.delete('js_native', id), true);
});

test('errors: an unknown queue', async () => {
  await assert.rejects(pgmq.msg.send('js_nope', {}), { code: '42704' });
  await assert.rejects(pgmq.queue.getMetrics('js_nope'), { code: '42704' });
});

test('drop', async () => {
  await pgmq.queue.drop('js_unlogged');
  await pgmq.queue.drop('js_native');
  await pgmq.queue.drop('js_q');
  assert.deepEqual(await pgmq.queue.list(), []);
});
