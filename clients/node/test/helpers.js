'use strict';
// Test helpers: a database of our own in the cluster the PG* variables
// name (test/run.sh's), with mq installed; queues; waiting.

const { Client } = require('pg');
const { setTimeout: sleep } = require('node:timers/promises');

const conn = {
  host: process.env.PGHOST || '/var/run/postgresql',
  port: Number(process.env.PGPORT || 5432),
  user: process.env.PGUSER || 'postgres',
  password: process.env.PGPASSWORD || '',
};

async function admin(statements) {
  const c = new Client({ ...conn, database: process.env.PGDATABASE || 'postgres' });
  await c.connect();
  try {
    for (const s of statements) await c.query(s);
  } finally {
    await c.end();
  }
}

// A fresh database `name` with mq; returns its config and a client to it.
async function setUp(name) {
  await admin([`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`, `CREATE DATABASE ${name}`]);
  const config = { ...conn, database: name };
  const db = new Client(config);
  await db.connect();
  await db.query('CREATE EXTENSION mq');
  return { config, db };
}

async function tearDown(name, db) {
  if (db) await db.end();
  await admin([`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
}

let queues = 0;
// A fresh work queue (retries at once) and a table its handlers write to.
async function createQueue(db) {
  const name = `q${++queues}`;
  await db.query("SELECT mq.create_queue($1, visibility_timeout => '30 seconds', retry_delay => '0')", [name]);
  await db.query(`CREATE TABLE ${name}_done (msg_id bigint, attempt int, note text)`);
  return name;
}

async function scalar(db, sql, params = []) {
  const r = await db.query(sql, params);
  return Object.values(r.rows[0])[0];
}

// Poll until fn() is true; fail after timeout ms (a hang guard, not a
// timing assertion).
async function waitUntil(fn, what = 'condition', timeout = 60000) {
  const deadline = Date.now() + timeout;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

// A queue whose id and msg_ids are above 2^53.  The msg_id sequence is
// raised before any send, and maintenance then seals the first segment
// (it has fallen 65,536 ids behind) and makes a new one current at the
// high id, so that reads do not walk the ids in between; maintain() runs
// until the sealed segment is emptied (clients/python/tests/conftest.py
// does the same).
async function createHighIdQueue(db, name) {
  await db.query("SELECT setval('mq.queue_queue_id_seq', greatest(9007199254740993," +
    ' (SELECT last_value FROM mq.queue_queue_id_seq)))');
  await db.query("SELECT mq.create_queue($1, retry_delay => '0')", [name]);
  await db.query(`CREATE TABLE ${name}_done (msg_id bigint, attempt int, note text)`);
  const qid = BigInt(await scalar(db, 'SELECT queue_id::text FROM mq.queue WHERE queue_name = $1', [name]));
  await db.query("SELECT setval(format('mq.q_%s_seq', $1::bigint)::regclass, 9007199254741000)", [String(qid)]);
  await waitUntil(async () => {
    await db.query('SELECT mq.maintain()');
    return scalar(db, "SELECT NOT EXISTS (SELECT FROM mq.segment WHERE queue_id = $1 AND" +
      " (state = 'sealed' OR (state = 'current' AND lo < 9007199254741000)))", [String(qid)]);
  }, 'the first segment to be sealed and emptied');
  return qid;
}

module.exports = { conn, setUp, tearDown, createQueue, createHighIdQueue, scalar, waitUntil };
