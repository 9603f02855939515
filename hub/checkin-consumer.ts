/**
 * The hub's durable consumer of every venue's check-ins, and the judge of first admission.
 *
 * Each check-in is stored once in GS_CHECKINS (the agents publish with an expected subject sequence of
 * 0), so the durable dedupe is the stream itself; this consumer only derives from it. For an admitted
 * entry it writes the ticket's admission state to GS_ENTRIES with an expected-sequence check, so two hub
 * processes (or a redelivery) can never both believe they saw the first entry. When a ticket is already
 * inside by another check-in, the two gates admitted it while they could not see each other: a conflict
 * is written to GS_CONFLICTS under an id derived from the pair, again with an expected sequence of 0, so
 * it is recorded once however the two arrive and however often they are redelivered.
 *
 * Entry state per ticket: (none) -in-> inside(c1) -out-> outside(c2) -in-> inside(c3) ...
 *   inside(c1) + another in (c9)  => conflict(c1, c9), state unchanged.
 *
 * How it runs: pulls of 256; what has been delivered is judged as one chunk, tickets in parallel and each
 * ticket's check-ins in stream order. The writes go out through `PubAcks` (core publishes whose PubAcks
 * are matched on one inbox) and the reads are direct gets on the same inbox, not nats.js requests. A
 * check-in is acked only once its write is acknowledged by the stream (or it needs none), so a hub killed
 * at any point leaves it unacked, to be redelivered and judged again; judged again, it finds its own id
 * in the entry state (`redelivery`) or its conflict already recorded.
 */
import {
  AckPolicy,
  type Consumer,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  type CheckinMessage,
  type ConflictRecord,
  conflictId,
  decodeCheckin,
  type EntryState,
} from '../shared/checkins.ts';
import { decode, encode } from '../shared/codec.ts';
import { errorMessage, GatesyncError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { type PubAckReply, PubAcks, type StoredMessage, WRONG_LAST_SEQUENCE } from '../shared/pub-acks.ts';
import { RetryLoop } from '../shared/retry-loop.ts';
import { STREAMS, subjects } from '../shared/subjects.ts';

export const HUB_CHECKIN_CONSUMER = 'gs_hub_checkins';
const NANOS_PER_MS = 1_000_000;
/**
 * Messages per pull. Small enough that few deliveries wait in the hub's memory for their turn: with 1,000
 * per pull they outlived young-generation collections and made them slower, and in five pairs of
 * bench:catchup runs the hub used about a tenth more CPU during the drain than with 256.
 */
const FETCH_BATCH = 256;
/** Most check-ins judged together: what has arrived is judged at once, up to this many. */
const CHUNK_MAX = 256;
/** Milliseconds a write to GS_ENTRIES or GS_CONFLICTS waits for its PubAck. */
const PUBLISH_TIMEOUT_MS = 5_000;

export type Verdict = 'first_entry' | 'reentry' | 'exit' | 'redelivery' | 'conflict' | 'no_entry_change';

export interface CheckinConsumerOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  /** The connection the writes to GS_ENTRIES and GS_CONFLICTS go out on (their PubAcks matched by `PubAcks`). */
  nc: NatsConnection;
  logger: Logger;
  onCheckin?: (c: CheckinMessage, verdict: Verdict) => void;
  onConflict?: (c: ConflictRecord, isNew: boolean) => void;
}

/** A check-in as delivered, decoded once. */
interface Delivery {
  m: JsMsg;
  c: CheckinMessage;
}

function isWrongLastSequence(r: PubAckReply): boolean {
  return !r.ok && r.errCode === WRONG_LAST_SEQUENCE;
}

/** A refusal other than "wrong last sequence" is a failure to judge: the check-in is retried. */
function refused(subject: string, r: PubAckReply & { ok: false }): GatesyncError {
  return new GatesyncError('internal', `JetStream refused a write to ${subject}: ${r.description}`, {
    details: { status: r.status, err_code: r.errCode },
  });
}

export class CheckinConsumer {
  private readonly loop: RetryLoop;
  private readonly pubAcks: PubAcks;
  /** The durable consumer's handle, kept across rounds; dropped after a failed round. */
  private consumer: Consumer | undefined;
  /** Whether GS_ENTRIES serves direct gets; undefined until the first read looks. */
  private directGet: boolean | undefined;
  processed = 0;

  constructor(private readonly opts: CheckinConsumerOptions) {
    this.pubAcks = new PubAcks(opts.nc, PUBLISH_TIMEOUT_MS);
    this.loop = new RetryLoop({
      logger: opts.logger,
      what: 'check-in consumer',
      round: () => this.round(),
      onError: () => {
        this.consumer = undefined;
      },
    });
  }

  get lastError(): string | undefined {
    return this.loop.lastError;
  }

  async start(): Promise<void> {
    await this.ensureConsumer();
    this.loop.start();
  }

  /**
   * The durable consumer, made if it is missing: at the first start, and again if it was deleted while
   * the hub ran (an operator's mistake, a stream restored from backup). A new one starts from the first
   * check-in in the stream: judging again is idempotent (entries are written with expected sequences and
   * redeliveries are recognised), only slower.
   */
  private async ensureConsumer(): Promise<void> {
    try {
      await this.opts.jsm.consumers.info(STREAMS.checkins, HUB_CHECKIN_CONSUMER);
    } catch (err: unknown) {
      if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
      if (this.started) {
        this.opts.logger.warn(
          { consumer: HUB_CHECKIN_CONSUMER },
          'check-in consumer was missing; made again, re-judging the stream from its start',
        );
      }
      await this.opts.jsm.consumers.add(STREAMS.checkins, {
        durable_name: HUB_CHECKIN_CONSUMER,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: 30_000 * NANOS_PER_MS,
        max_ack_pending: 2_000,
        max_deliver: -1,
      });
    }
    this.started = true;
  }

  private started = false;

  async stop(): Promise<void> {
    await this.loop.stop();
    this.pubAcks.close();
  }

  /**
   * One fetch. Whatever has arrived is judged together as one chunk (up to CHUNK_MAX): while a chunk's
   * writes are out, the next deliveries queue up, so the chunks grow with the rate check-ins arrive at,
   * and their writes and acks leave in few socket writes.
   */
  private async round(): Promise<void> {
    if (this.consumer === undefined) {
      await this.ensureConsumer();
      this.consumer = await this.opts.js.consumers.get(STREAMS.checkins, HUB_CHECKIN_CONSUMER);
    }
    let chunk: JsMsg[] = [];
    try {
      const iter = await this.consumer.fetch({
        max_messages: FETCH_BATCH,
        expires: 5_000,
        idle_heartbeat: 1_000,
      });
      this.loop.track(iter);
      for await (const m of iter) {
        chunk.push(m);
        if (chunk.length >= CHUNK_MAX || iter.getPending() === 0) {
          await this.processChunk(chunk);
          chunk = [];
        }
      }
    } catch (err: unknown) {
      // The kept handle may name a consumer that is gone: look it up (or make it) again next round.
      this.consumer = undefined;
      throw err;
    }
    if (chunk.length > 0) await this.processChunk(chunk);
  }

  /**
   * Check-ins that change no entry state (rejects, admissions of no known ticket) are settled at once;
   * admissions of different tickets are judged in parallel, those of one ticket in stream order.
   */
  private async processChunk(chunk: JsMsg[]): Promise<void> {
    const byTicket = new Map<string, Delivery[]>();
    for (const m of chunk) {
      let c: CheckinMessage;
      try {
        c = decodeCheckin(m.data);
      } catch {
        this.opts.logger.warn({ subject: m.subject, seq: m.seq }, 'malformed check-in terminated');
        m.term();
        continue;
      }
      if (c.decision !== 'admit' || c.ticket_id === null) {
        this.settled(m, c, 'no_entry_change');
        continue;
      }
      const key = `${c.venue}.${c.ticket_id}`;
      const list = byTicket.get(key);
      if (list === undefined) byTicket.set(key, [{ m, c }]);
      else list.push({ m, c });
    }
    if (byTicket.size === 0) return;
    const work: Promise<void>[] = [];
    for (const list of byTicket.values()) {
      const only = list.length === 1 ? list[0] : undefined;
      work.push(only === undefined ? this.handleInOrder(list) : this.handle(only));
    }
    await Promise.all(work);
  }

  private async handleInOrder(list: Delivery[]): Promise<void> {
    for (const d of list) await this.handle(d);
  }

  /** Never rejects: a check-in that could not be judged is nak'd, to be redelivered a second later. */
  private handle(d: Delivery): Promise<void> {
    return this.judge(d.c).then(
      (verdict) => this.settled(d.m, d.c, verdict),
      (err: unknown) => {
        this.opts.logger.warn({ err: errorMessage(err), checkin: d.c.id }, 'check-in not judged; will retry');
        d.m.nak(1_000);
      },
    );
  }

  private settled(m: JsMsg, c: CheckinMessage, verdict: Verdict): void {
    this.processed++;
    this.opts.onCheckin?.(c, verdict);
    m.ack();
  }

  /** Decides what an admitted check-in means for its ticket's entry state. */
  async judge(c: CheckinMessage): Promise<Verdict> {
    if (c.decision !== 'admit' || c.ticket_id === null) return 'no_entry_change';
    const subject = subjects.entry(c.venue, c.ticket_id);
    const next: EntryState = {
      v: 1,
      ticket_id: c.ticket_id,
      inside: c.direction === 'in',
      checkin_id: c.id,
      agent: c.agent,
      gate: c.gate,
      at: c.scanned_at,
    };
    const data = encode(next);
    // Most entries are a ticket's first: try that write straight away (one round trip, no read). The
    // stream refuses it (10071) when the ticket has any state, and the rounds below read and decide.
    if (c.direction === 'in') {
      const r = await this.pubAcks.publish(subject, data, { expectLastSubjectSequence: 0 });
      if (r.ok) return 'first_entry';
      if (!isWrongLastSequence(r)) throw refused(subject, r);
    }
    // A few rounds: another hub process may change the state between our read and our write.
    for (let round = 0; round < 8; round++) {
      const last = await this.readEntry(subject);
      const state = last === null ? undefined : (decode(last.data) as EntryState);
      if (state?.checkin_id === c.id) return 'redelivery';
      let verdict: Verdict;
      if (c.direction === 'in') {
        if (state?.inside === true) {
          await this.recordConflict(c, state);
          return 'conflict';
        }
        verdict = state === undefined ? 'first_entry' : 'reentry';
      } else {
        if (state === undefined || !state.inside) return 'no_entry_change';
        verdict = 'exit';
      }
      const r = await this.pubAcks.publish(subject, data, { expectLastSubjectSequence: last?.seq ?? 0 });
      if (r.ok) return verdict;
      if (!isWrongLastSequence(r)) throw refused(subject, r);
    }
    throw new Error(`entry state of ${c.ticket_id} kept changing`);
  }

  /**
   * The ticket's entry state as stored: by a direct get through PubAcks when GS_ENTRIES allows them
   * (ensureStreams sets `allow_direct`), else through the STREAM.MSG.GET API. A direct get to a stream
   * without `allow_direct` is not refused but left unanswered, hence the look at the stream's config,
   * once.
   */
  private async readEntry(subject: string): Promise<StoredMessage | null> {
    if (this.directGet === undefined) {
      const info = await this.opts.jsm.streams.info(STREAMS.entries);
      this.directGet = info.config.allow_direct === true;
    }
    if (this.directGet) return this.pubAcks.lastBySubject(STREAMS.entries, subject);
    const m = await this.opts.jsm.streams.getMessage(STREAMS.entries, { last_by_subj: subject });
    return m === null ? null : { seq: m.seq, data: m.data };
  }

  private async recordConflict(c: CheckinMessage, first: EntryState): Promise<void> {
    const id = conflictId(first.checkin_id, c.id);
    const record: ConflictRecord = {
      v: 1,
      id,
      venue: c.venue,
      ticket_id: c.ticket_id as string,
      first: { checkin_id: first.checkin_id, agent: first.agent, gate: first.gate, scanned_at: first.at },
      second: { checkin_id: c.id, agent: c.agent, gate: c.gate, scanned_at: c.scanned_at },
      detected_at: Date.now(),
    };
    const subject = subjects.conflict(c.venue, id);
    const r = await this.pubAcks.publish(subject, encode(record), {
      msgID: id,
      expectLastSubjectSequence: 0,
    });
    if (!r.ok && !isWrongLastSequence(r)) throw refused(subject, r);
    const isNew = r.ok && !r.duplicate;
    if (isNew) this.opts.logger.warn({ ticket: record.ticket_id, conflict: id }, 'double entry detected');
    this.opts.onConflict?.(record, isNew);
  }
}
