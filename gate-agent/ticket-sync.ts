/**
 * Keeps the agent's store equal to its venue's slice of GS_TICKETS.
 *
 * A durable pull consumer per agent (`gs_agent_<venue>_<agent>`, filter `gs.tix.<venue>.*`, ack-all)
 * is read in a fetch loop. Messages are cut into chunks; each chunk's signatures are checked on the
 * verifier pool while the next chunk is being read, and chunks are applied strictly in order: one SQLite
 * transaction stores the chunk's valid events and moves the stream position past the whole chunk, then
 * the last message is acked (ack-all acks everything before it).
 *
 * Crash safety: the position in SQLite is the truth, not the consumer's. Before reading, the consumer's
 * last delivered message must be the store's last applied one; if not (a crash with messages in flight,
 * a replaced database), the consumer is recreated from the store's position. While reading, every
 * message must carry the next delivery sequence; a gap (deliveries lost with a dropped link, whose
 * later ack-all would otherwise acknowledge them unseen) stops the fetch and repositions the same way.
 * So the store never moves past a message it has not applied.
 *
 * Liveness: every fetch has an expiry and idle heartbeats, so a dead link ends the fetch with an error
 * within seconds, and the loop starts a new one with backoff. No fetch can stall forever.
 */
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import { errorMessage } from '../shared/errors.ts';
import { decodeTicketEvent, type TicketEvent } from '../shared/events.ts';
import type { Logger } from '../shared/logger.ts';
import { RetryLoop } from '../shared/retry-loop.ts';
import { KID_HEADER, SIG_HEADER } from '../shared/signing.ts';
import { agentConsumerName, parseTicketSubject, STREAMS, subjects } from '../shared/subjects.ts';
import type { AppliedEvent, TicketStore } from './ticket-store.ts';
import { OUTCOME_OK, OUTCOME_UNKNOWN_KEY, type VerifierPool, type VerifyItem } from './verifier-pool.ts';

export type RejectedEventReason = 'bad_signature' | 'unknown_key' | 'malformed' | 'wrong_subject';

export interface TicketSyncOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  store: TicketStore;
  pool: VerifierPool;
  venue: string;
  agent: string;
  logger: Logger;
  /** Messages per verify-and-apply chunk. */
  chunkSize?: number;
  onApplied?: (applied: number, stale: number) => void;
  onRejected?: (reason: RejectedEventReason, subject: string) => void;
}

const NANOS_PER_MS = 1_000_000;
const FETCH_BATCH = 2_000;
const FETCH_EXPIRES_MS = 5_000;
const IDLE_HEARTBEAT_MS = 1_000;
const MAX_CHUNKS_IN_FLIGHT = 6;

export class TicketSync {
  private readonly loop: RetryLoop;
  /** Delivery sequence the next message must carry; 0 while the position is not established. */
  private expected = 0;
  private inFlight: Promise<void>[] = [];
  private chain: Promise<void> = Promise.resolve();
  /** Set when a chunk failed to apply: later chunks must not move the position past it. */
  private broken = false;
  /** Times the consumer was (re)created to match the store. */
  resets = 0;
  /** Messages the server said were still waiting after the last one delivered. */
  pending: number | undefined;
  readonly name: string;
  private readonly chunkSize: number;

  constructor(private readonly opts: TicketSyncOptions) {
    this.name = agentConsumerName(opts.venue, opts.agent);
    this.chunkSize = opts.chunkSize ?? 256;
    this.loop = new RetryLoop({
      logger: opts.logger,
      what: 'ticket fetch',
      round: () => this.round(),
      // After any failure the position is re-established from the store before reading again.
      onError: () => {
        this.expected = 0;
      },
    });
  }

  get lastError(): string | undefined {
    return this.loop.lastError;
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
    await this.chain;
  }

  /**
   * Makes sure the durable consumer continues exactly where the store stopped, and returns the delivery
   * sequence the next message must carry. The consumer is kept only when the last message it delivered
   * is the last one the store applied; otherwise (a crash with messages in flight, a replaced database,
   * deliveries lost with a dropped link) it is deleted and created again from the store's position.
   */
  async ensureConsumer(): Promise<number> {
    const { jsm, store } = this.opts;
    const local = store.syncPosition(STREAMS.tickets).lastSeq;
    try {
      const info = await jsm.consumers.info(STREAMS.tickets, this.name);
      if (info.delivered.stream_seq === local && info.num_ack_pending === 0) {
        return info.delivered.consumer_seq + 1;
      }
      this.opts.logger.info(
        { consumer: this.name, delivered: info.delivered.stream_seq, local },
        'consumer and store disagree on the position; recreating the consumer from the store position',
      );
      await jsm.consumers.delete(STREAMS.tickets, this.name);
    } catch (err: unknown) {
      if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
    }
    await jsm.consumers.add(STREAMS.tickets, {
      durable_name: this.name,
      filter_subject: subjects.venueTickets(this.opts.venue),
      ack_policy: AckPolicy.All,
      ...(local > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: local + 1 }
        : { deliver_policy: DeliverPolicy.All }),
      ack_wait: 60_000 * NANOS_PER_MS,
      max_ack_pending: 50_000,
      max_waiting: 16,
    });
    this.resets++;
    this.opts.logger.info({ consumer: this.name, from: local + 1 }, 'ticket consumer created');
    return 1;
  }

  /** One fetch: established position first, then messages in delivery order, cut into chunks. */
  private async round(): Promise<void> {
    if (this.expected === 0) {
      // Everything already received must be applied before the position is compared.
      await this.chain;
      this.broken = false;
      this.expected = await this.ensureConsumer();
    }
    const consumer = await this.opts.js.consumers.get(STREAMS.tickets, this.name);
    const iter = await consumer.fetch({
      max_messages: FETCH_BATCH,
      expires: FETCH_EXPIRES_MS,
      idle_heartbeat: IDLE_HEARTBEAT_MS,
    });
    this.loop.track(iter);
    let chunk: JsMsg[] = [];
    for await (const m of iter) {
      if (m.info.deliverySequence !== this.expected) {
        // A gap (deliveries lost with a dropped link, or a redelivery): never apply past it.
        this.opts.logger.warn(
          { expected: this.expected, got: m.info.deliverySequence, seq: m.seq },
          'ticket delivery out of sequence; repositioning',
        );
        iter.stop();
        this.expected = 0;
        break;
      }
      this.expected++;
      chunk.push(m);
      this.pending = m.info.pending;
      if (chunk.length >= this.chunkSize || m.info.pending === 0) {
        await this.submit(chunk);
        chunk = [];
      }
    }
    if (chunk.length > 0) await this.submit(chunk);
    if (this.broken) this.expected = 0;
  }

  /** Starts verifying a chunk now and queues its apply behind the chunks before it. */
  private async submit(chunk: JsMsg[]): Promise<void> {
    const items: VerifyItem[] = chunk.map((m) => {
      const sig = m.headers?.get(SIG_HEADER);
      const kid = m.headers?.get(KID_HEADER);
      return {
        kid: kid === undefined || kid === '' ? undefined : kid,
        data: m.data,
        sig: sig === undefined || sig === '' ? undefined : Buffer.from(sig, 'base64'),
      };
    });
    const verified = this.opts.pool.verify(items);
    const applied = this.chain.then(async () => this.apply(chunk, await verified));
    this.chain = applied.catch((err: unknown) => {
      // An apply failure (disk full, I/O error) must not be skipped past: stop, and re-read from the
      // position the store holds.
      this.broken = true;
      this.loop.interrupt();
      this.opts.logger.error({ err: errorMessage(err) }, 'applying ticket events failed; will re-read');
    });
    this.inFlight.push(this.chain);
    if (this.inFlight.length >= MAX_CHUNKS_IN_FLIGHT) await this.inFlight.shift();
    if (this.inFlight.length > MAX_CHUNKS_IN_FLIGHT * 2)
      this.inFlight = this.inFlight.slice(-MAX_CHUNKS_IN_FLIGHT);
  }

  private apply(chunk: JsMsg[], outcomes: Uint8Array): void {
    if (this.broken) return;
    const events: AppliedEvent[] = [];
    for (let i = 0; i < chunk.length; i++) {
      const m = chunk[i] as JsMsg;
      const outcome = outcomes[i];
      if (outcome !== OUTCOME_OK) {
        this.reject(outcome === OUTCOME_UNKNOWN_KEY ? 'unknown_key' : 'bad_signature', m);
        continue;
      }
      let event: TicketEvent;
      try {
        event = decodeTicketEvent(m.data);
      } catch {
        this.reject('malformed', m);
        continue;
      }
      // A validly signed event replayed onto another subject (another venue or ticket) is refused.
      const where = parseTicketSubject(m.subject);
      if (
        where === undefined ||
        where.venue !== this.opts.venue ||
        where.ticket !== event.ticket.id ||
        event.ticket.venue !== where.venue
      ) {
        this.reject('wrong_subject', m);
        continue;
      }
      events.push({ seq: m.seq, event });
    }
    const last = chunk[chunk.length - 1] as JsMsg;
    const result = this.opts.store.applyTicketEvents(STREAMS.tickets, events, last.seq);
    this.opts.onApplied?.(result.applied, result.stale);
    last.ack();
  }

  private reject(reason: RejectedEventReason, m: JsMsg): void {
    this.opts.logger.warn({ reason, subject: m.subject, seq: m.seq }, 'ticket event dropped');
    this.opts.onRejected?.(reason, m.subject);
  }
}
