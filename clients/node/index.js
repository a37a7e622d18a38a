'use strict';
// mq-client: a small client for mq, message queues inside PostgreSQL.
// send / sendBatch run in the caller's transaction; Consumer runs a
// handler per message with its writes and the ack in one transaction.
// Types: index.d.ts.

const { send, sendBatch, read, ack, nack, extend } = require('./lib/ops');
const { Consumer } = require('./lib/consumer');

module.exports = { send, sendBatch, read, ack, nack, extend, Consumer };
