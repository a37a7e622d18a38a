// Types of mq-client (index.js).  See README.md and docs/clients.md.
import type { Client, ClientConfig, PoolClient } from 'pg';

/** A pg Client, or a client checked out of a Pool (not the Pool itself:
 * a transaction needs one connection). */
export type Queryable = Client | PoolClient;

/** An id: msg_id and receipt are bigint in the database.  A number is
 * accepted only as a safe integer (up to 2^53 - 1). */
export type Id = bigint | string | number;

/** One delivery of a work-queue message (type mq.message). */
export interface Message<P = unknown> {
  readonly queue: string;
  /** bigint in the database: exact above 2^53 (node-postgres itself returns int8 as a string) */
  readonly msgId: bigint;
  /** this delivery's attempt number, for ack/nack/extend */
  readonly receipt: bigint;
  readonly key: string | null;
  /** jsonb, parsed */
  readonly payload: P;
  readonly headers: unknown | null;
  /** deliveries so far, this one included */
  readonly attempts: number;
  /** timestamptz as a Date: milliseconds, the microseconds are lost */
  readonly enqueuedAt: Date;
  readonly visibleAt: Date;
  readonly lastError: string | null;
  readonly deadLetter: unknown | null;
}

export interface SendOptions {
  key?: string | null;
  headers?: unknown;
  /** seconds */
  delay?: number | null;
}

export interface SendBatchOptions {
  keys?: (string | null)[] | null;
  headers?: unknown[] | null;
  /** seconds */
  delay?: number | null;
}

export interface ReadOptions {
  /** 1 to 10000 */
  qty?: number;
  /** seconds; null: the queue's */
  visibilityTimeout?: number | null;
  /** long polling, seconds (0 to 900) */
  wait?: number | null;
}

/** mq.send in the client's current transaction; returns the msg_id. */
export function send(client: Queryable, queue: string, payload: unknown, options?: SendOptions): Promise<bigint>;
/** mq.send_batch, all or nothing; the msg_ids in the order of payloads. */
export function sendBatch(client: Queryable, queue: string, payloads: unknown[], options?: SendBatchOptions): Promise<bigint[]>;
/** mq.read in BEGIN ... COMMIT of its own: call it with no transaction open. */
export function read(client: Queryable, queue: string, options?: ReadOptions): Promise<Message[]>;
export function ack(client: Queryable, queue: string, msgId: Id, options?: { receipt?: Id | null }): Promise<boolean>;
export function nack(client: Queryable, queue: string, msgId: Id,
  options?: { receipt?: Id | null; delay?: number | null; error?: string | null }): Promise<boolean>;
export function extend(client: Queryable, queue: string, msgId: Id, visibilityTimeout: number,
  options?: { receipt?: Id | null }): Promise<Date | null>;

/** Runs inside BEGIN ... COMMIT on client; the ack is added to that
 * transaction.  Throw to fail (rollback, then nack). */
export type Handler<P = unknown> = (message: Message<P>, client: Client) => Promise<void> | void;

export interface ConsumerOptions {
  /** workers, each with a connection of its own that long-polls */
  concurrency?: number;
  /** long poll, seconds (default 20) */
  wait?: number;
  /** seconds; null: the queue's */
  visibilityTimeout?: number | null;
  /** reconnect backoff bounds, seconds (default 0.1 and 30) */
  reconnectMin?: number;
  reconnectMax?: number;
  applicationName?: string;
  /** aborting it stops the consumer, as stop() does */
  signal?: AbortSignal | null;
  logger?: Pick<Console, 'info' | 'warn' | 'error'>;
}

export class Consumer<P = unknown> {
  constructor(config: string | ClientConfig, queue: string, handler: Handler<P>, options?: ConsumerOptions);
  /** Resolves when stopped and every worker has ended. */
  run(): Promise<void[]>;
  /** No new claims; running handlers finish and commit; waiting reads are cancelled. */
  stop(): void;
  readonly stopped: boolean;
}
