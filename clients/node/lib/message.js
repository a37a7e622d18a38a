'use strict';
// The message a consumer is handed: one row of mq.read (type mq.message).

// The columns of mq.message, selected as fromRow expects them.  int8 comes
// from node-postgres as a string (a JavaScript number is exact only up to
// 2^53), so msg_id and receipt are selected as text and made BigInts here.
const COLUMNS = 'msg_id::text AS msg_id, receipt::text AS receipt, key, payload, headers,' +
  ' attempts, enqueued_at, visible_at, last_error, dead_letter';

/**
 * @param {string} queue
 * @param {object} row a row selected with COLUMNS
 * @returns {import('../index').Message}
 */
function fromRow(queue, row) {
  return Object.freeze({
    queue,
    msgId: BigInt(row.msg_id),
    receipt: BigInt(row.receipt),
    key: row.key,
    payload: row.payload,
    headers: row.headers,
    attempts: row.attempts,
    enqueuedAt: row.enqueued_at,
    visibleAt: row.visible_at,
    lastError: row.last_error,
    deadLetter: row.dead_letter,
  });
}

module.exports = { COLUMNS, fromRow };
