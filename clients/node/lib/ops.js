'use strict';
// mq's SQL calls, one function each, run on the caller's client (a pg
// Client, or a PoolClient checked out of a Pool) in whatever transaction
// it is in: none of them commits, except read(), whose claim must be
// committed before the messages are worked on.  Arguments go as
// parameters, never into SQL text.

const { COLUMNS, fromRow } = require('./message');

// Seconds (a number) as an interval parameter; null stays null.
const seconds = (s) => (s == null ? null : `${Number(s)} seconds`);

// jsonb goes as JSON text: node-postgres would send a JavaScript array as
// a PostgreSQL array literal, not as JSON.
const json = (v) => (v === undefined || v === null ? null : JSON.stringify(v));

// An id (bigint, numeric string or safe integer) as the text of an int8.
function id(v) {
  if (typeof v === 'number' && !Number.isSafeInteger(v)) {
    throw new RangeError(`id ${v} is not a safe integer: pass a BigInt or a string`);
  }
  return v == null ? null : String(v);
}

async function send(client, queue, payload, { key = null, headers = null, delay = null } = {}) {
  const r = await client.query(
    "SELECT mq.send($1, $2::jsonb, key => $3, headers => $4::jsonb, delay => coalesce($5::interval, '0'))::text AS id",
    [queue, JSON.stringify(payload), key, json(headers), seconds(delay)]);
  return BigInt(r.rows[0].id);
}

async function sendBatch(client, queue, payloads, { keys = null, headers = null, delay = null } = {}) {
  const r = await client.query(
    "SELECT id::text AS id FROM mq.send_batch($1, $2::jsonb[], keys => $3::text[], headers => $4::jsonb[]," +
    " delay => coalesce($5::interval, '0')) WITH ORDINALITY AS t(id, n) ORDER BY n",
    [queue, payloads.map((p) => JSON.stringify(p)), keys, headers && headers.map(json), seconds(delay)]);
  return r.rows.map((row) => BigInt(row.id));
}

// The claim in a transaction of its own, with statement_timeout lifted (a
// long poll waits by design).  beforeCommit runs once the rows are in and
// before COMMIT (the consumer settles its cancels there).
async function readCommitted(client, queue, { qty = 1, visibilityTimeout = null, wait = null } = {},
  beforeCommit = null) {
  await client.query('BEGIN');
  try {
    await client.query('SET LOCAL statement_timeout = 0');
    const r = await client.query(
      `SELECT ${COLUMNS} FROM mq.read($1, $2, $3::interval, coalesce($4::interval, '0'))`,
      [queue, qty, seconds(visibilityTimeout), seconds(wait)]);
    if (beforeCommit) await beforeCommit();
    await client.query('COMMIT');
    return r.rows.map((row) => fromRow(queue, row));
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

const read = (client, queue, options) => readCommitted(client, queue, options);

async function ack(client, queue, msgId, { receipt = null } = {}) {
  const r = await client.query('SELECT mq.ack($1, $2::bigint, $3::bigint) AS ok',
    [queue, id(msgId), id(receipt)]);
  return r.rows[0].ok;
}

async function nack(client, queue, msgId, { receipt = null, delay = null, error = null } = {}) {
  const r = await client.query('SELECT mq.nack($1, $2::bigint, $3::bigint, $4::interval, $5) AS ok',
    [queue, id(msgId), id(receipt), seconds(delay), error]);
  return r.rows[0].ok;
}

async function extend(client, queue, msgId, visibilityTimeout, { receipt = null } = {}) {
  const r = await client.query('SELECT mq.extend($1, $2::bigint, $3::interval, $4::bigint) AS at',
    [queue, id(msgId), seconds(visibilityTimeout), id(receipt)]);
  return r.rows[0].at;
}

module.exports = { send, sendBatch, read, readCommitted, ack, nack, extend };
