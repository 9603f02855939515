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
 */
import {
  AckPolicy,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from '@nats-io/jetstream';
import {
  type CheckinMessage,
  type ConflictRecord,
  conflictId,
  decodeCheckin,
  type EntryState,
} from '../shared/checkins.ts';
import { decode, encode } from '../shared/codec.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { RetryLoop } from '../shared/retry-loop.ts';
import { STREAMS, subjects } from '../shared/subjects.ts';

export const HUB_CHECKIN_CONSUMER = 'gs_hub_checkins';
const NANOS_PER_MS = 1_000_000;

export type Verdict = 'first_entry' | 'reentry' | 'exit' | 'redelivery' | 'conflict' | 'no_entry_change';

export interface CheckinConsumerOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  logger: Logger;
  onCheckin?: (c: CheckinMessage, verdict: Verdict) => void;
  onConflict?: (c: ConflictRecord, isNew: boolean) => void;
}

function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === 10071;
}

export class CheckinConsumer {
  private readonly loop: RetryLoop;
  processed = 0;

  constructor(private readonly opts: CheckinConsumerOptions) {
    this.loop = new RetryLoop({ logger: opts.logger, what: 'check-in consumer', round: () => this.round() });
  }

  get lastError(): string | undefined {
    return this.loop.lastError;
  }

  async start(): Promise<void> {
    try {
      await this.opts.jsm.consumers.info(STREAMS.checkins, HUB_CHECKIN_CONSUMER);
    } catch (err: unknown) {
      if (!(err instanceof JetStreamApiError && err.code === 10014)) throw err;
      await this.opts.jsm.consumers.add(STREAMS.checkins, {
        durable_name: HUB_CHECKIN_CONSUMER,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: 30_000 * NANOS_PER_MS,
        max_ack_pending: 2_000,
        max_deliver: -1,
      });
    }
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One fetch, judged in chunks. */
  private async round(): Promise<void> {
    const consumer = await this.opts.js.consumers.get(STREAMS.checkins, HUB_CHECKIN_CONSUMER);
    const iter = await consumer.fetch({ max_messages: 500, expires: 5_000, idle_heartbeat: 1_000 });
    this.loop.track(iter);
    let chunk: JsMsg[] = [];
    for await (const m of iter) {
      chunk.push(m);
      if (chunk.length >= 64 || m.info.pending === 0) {
        await this.processChunk(chunk);
        chunk = [];
      }
    }
    if (chunk.length > 0) await this.processChunk(chunk);
  }

  /** Check-ins of different tickets are judged in parallel; those of one ticket in stream order. */
  private async processChunk(chunk: JsMsg[]): Promise<void> {
    const byTicket = new Map<string, JsMsg[]>();
    for (const m of chunk) {
      const key = m.subject; // fallback key for undecodable messages
      let ticket = key;
      try {
        ticket = decodeCheckin(m.data).ticket_id ?? key;
      } catch {
        // judged (and terminated) below
      }
      const list = byTicket.get(ticket) ?? [];
      list.push(m);
      byTicket.set(ticket, list);
    }
    await Promise.all(
      [...byTicket.values()].map(async (msgs) => {
        for (const m of msgs) await this.handle(m);
      }),
    );
  }

  private async handle(m: JsMsg): Promise<void> {
    let c: CheckinMessage;
    try {
      c = decodeCheckin(m.data);
    } catch {
      this.opts.logger.warn({ subject: m.subject, seq: m.seq }, 'malformed check-in terminated');
      m.term();
      return;
    }
    try {
      const verdict = await this.judge(c);
      this.processed++;
      this.opts.onCheckin?.(c, verdict);
      m.ack();
    } catch (err: unknown) {
      this.opts.logger.warn({ err: errorMessage(err), checkin: c.id }, 'check-in not judged; will retry');
      m.nak(1_000);
    }
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
    // Most entries are a ticket's first: try that write straight away (one round trip, no read). The
    // stream refuses it (10071) when the ticket has any state, and the rounds below read and decide.
    if (c.direction === 'in') {
      try {
        await this.opts.js.publish(subject, encode(next), { expect: { lastSubjectSequence: 0 } });
        return 'first_entry';
      } catch (err: unknown) {
        if (!isWrongLastSequence(err)) throw err;
      }
    }
    // A few rounds: another hub process may change the state between our read and our write.
    for (let round = 0; round < 8; round++) {
      const last = await this.opts.jsm.streams.getMessage(STREAMS.entries, { last_by_subj: subject });
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
      try {
        await this.opts.js.publish(subject, encode(next), {
          expect: { lastSubjectSequence: last?.seq ?? 0 },
        });
        return verdict;
      } catch (err: unknown) {
        if (!isWrongLastSequence(err)) throw err;
      }
    }
    throw new Error(`entry state of ${c.ticket_id} kept changing`);
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
    let isNew = true;
    try {
      const ack = await this.opts.js.publish(subjects.conflict(c.venue, id), encode(record), {
        msgID: id,
        expect: { lastSubjectSequence: 0 },
      });
      isNew = !ack.duplicate;
    } catch (err: unknown) {
      if (!isWrongLastSequence(err)) throw err;
      isNew = false;
    }
    if (isNew) this.opts.logger.warn({ ticket: record.ticket_id, conflict: id }, 'double entry detected');
    this.opts.onConflict?.(record, isNew);
  }
}
