/**
 * Sends the check-ins that scans committed (the outbox) to JetStream, in the order they were made.
 *
 * Up to `window` publishes are in flight at once, so a backlog of thousands drains in about the time of
 * a bare publish loop; each is acknowledged by JetStream before its row is marked sent. A check-in the
 * stream already holds (a re-send after a lost ack, a crash between ack and mark, a replay days later)
 * comes back as a duplicate ack or as error 10071 (the subject already has a message): both mean "stored",
 * so re-sending is always harmless. While NATS is unreachable the publisher pauses, and it resumes by
 * itself when the link returns, starting again from the oldest unsent row.
 *
 * States of a row: unsent -> in flight -> sent; a failed publish returns it to unsent.
 */
import { JetStreamApiError, type JetStreamClient } from '@nats-io/jetstream';
import { CHECKIN_SCHEMA_VERSION, type CheckinMessage } from '../shared/checkins.ts';
import { encode } from '../shared/codec.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { LinkState } from '../shared/nats.ts';
import { Pause } from '../shared/sleep.ts';
import { subjects } from '../shared/subjects.ts';
import type { CheckinRecord, TicketStore } from './ticket-store.ts';

export interface OutboxPublisherOptions {
  js: JetStreamClient;
  store: TicketStore;
  link: LinkState;
  logger: Logger;
  /** Publishes in flight at once. */
  window?: number;
  /** Milliseconds to wait for one JetStream ack. */
  ackTimeout?: number;
  onSent?: (count: number, duplicates: number) => void;
  /** The highest check-in seq on disk; a check-in is never sent before it is durable. */
  durableSeq?: () => number;
}

/** Milliseconds the publisher waits after a scan before draining, to gather a burst. */
const LINGER_MS = 5;

export function toCheckinMessage(r: CheckinRecord): CheckinMessage {
  return {
    v: CHECKIN_SCHEMA_VERSION,
    id: r.id,
    venue: r.venue,
    agent: r.agent,
    gate: r.gate,
    seq: r.seq,
    ticket_id: r.ticket_id,
    direction: r.direction,
    decision: r.decision,
    reason: r.reason,
    scanner: r.scanner,
    method: r.method,
    unsynced_ticket: r.unsynced_ticket,
    scanned_at: r.scanned_at,
  };
}

/** Publishes one check-in; resolves true when the stream already held it. */
export async function publishCheckin(
  js: JetStreamClient,
  r: CheckinRecord,
  // Milliseconds. Short, so a publish caught by a cut does not hold the replay back for long.
  timeout = 2_000,
): Promise<boolean> {
  try {
    const ack = await js.publish(subjects.checkin(r.venue, r.agent, r.id), encode(toCheckinMessage(r)), {
      msgID: r.id,
      expect: { lastSubjectSequence: 0 },
      timeout,
    });
    return ack.duplicate;
  } catch (err: unknown) {
    if (err instanceof JetStreamApiError && err.code === 10071) return true;
    throw err;
  }
}

export class OutboxPublisher {
  private stopped = false;
  private readonly pause = new Pause();
  private lingering = false;
  private lastDrainAt = 0;
  private loop: Promise<void> | undefined;
  sent = 0;
  duplicates = 0;
  lastError: string | undefined;
  private readonly window: number;

  constructor(private readonly opts: OutboxPublisherOptions) {
    this.window = opts.window ?? 256;
  }

  start(): void {
    // Resume at once when the link returns, not at the next look (up to 250 ms later).
    this.opts.link.onChange((up) => {
      if (up) this.pause.interrupt();
    });
    this.loop = this.run();
  }

  /** Called after every committed scan group: there is something to send. */
  notify(): void {
    // A lone scan goes out at once (cross-gate freshness); during a burst, linger a few milliseconds so
    // the groups are sent as one drain (one read of the outbox, one sent-mark transaction).
    if (this.lingering) return;
    if (performance.now() - this.lastDrainAt > LINGER_MS) {
      this.pause.interrupt();
      return;
    }
    this.lingering = true;
    setTimeout(() => {
      this.lingering = false;
      this.pause.interrupt();
    }, LINGER_MS).unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pause.interrupt();
    await this.loop;
  }

  private sleep(ms: number): Promise<void> {
    return this.pause.sleep(ms);
  }

  private async run(): Promise<void> {
    let backoff = 200; // milliseconds
    while (!this.stopped) {
      if (!this.opts.link.connected) {
        await this.sleep(250);
        continue;
      }
      try {
        const published = await this.drain();
        this.lastDrainAt = performance.now();
        backoff = 200;
        this.lastError = undefined;
        // Nothing (durable) left to send: wait for the next scan's notify, or look again in a second.
        // A drain that sent nothing must never loop straight back: rows committed but not yet fsync'd
        // are waiting for an I/O callback that a busy loop would starve.
        if (published === 0) await this.sleep(1_000);
      } catch (err: unknown) {
        this.lastError = errorMessage(err);
        this.opts.logger.warn(
          { err: this.lastError, backoffMs: backoff },
          'check-in publish failed; will retry',
        );
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  }

  /**
   * Sends every unsent row with up to `window` publishes in flight; marks each acked row sent in small
   * transactions. Returns how many were published. Throws on the first failed publish, after the
   * publishes already in flight have settled (their successes are kept).
   */
  private async drain(): Promise<number> {
    const { store, js } = this.opts;
    let cursor = 0;
    let failure: unknown;
    // In-flight publishes are counted, not raced: Promise.race over the window would attach a handler
    // to every pending publish each time one slot frees (O(window) per publish).
    let inFlight = 0;
    let slotFreed: (() => void) | undefined;
    let allDone: (() => void) | undefined;
    const settled = () => {
      inFlight--;
      slotFreed?.();
      slotFreed = undefined;
      if (inFlight === 0) allDone?.();
    };
    let acked: number[] = [];
    let dups = 0;
    let published = 0;
    const flushMarks = () => {
      if (acked.length === 0) return;
      store.markSent(acked);
      this.sent += acked.length;
      this.duplicates += dups;
      this.opts.onSent?.(acked.length, dups);
      acked = [];
      dups = 0;
    };
    while (failure === undefined && !this.stopped) {
      const rows = store.unsentCheckins(cursor, this.window, this.opts.durableSeq?.());
      if (rows.length === 0) break;
      for (const row of rows) {
        cursor = row.seq;
        inFlight++;
        publishCheckin(js, row, this.opts.ackTimeout).then(
          (duplicate) => {
            acked.push(row.seq);
            published++;
            if (duplicate) dups++;
            // One sent-mark transaction per window's worth of acks.
            if (acked.length >= this.window) flushMarks();
            settled();
          },
          (err: unknown) => {
            failure ??= err;
            settled();
          },
        );
        if (inFlight >= this.window) {
          await new Promise<void>((resolve) => {
            slotFreed = resolve;
          });
        }
        if (failure !== undefined) break;
      }
    }
    if (inFlight > 0) {
      await new Promise<void>((resolve) => {
        allDone = resolve;
      });
    }
    flushMarks();
    if (failure !== undefined) throw failure;
    return published;
  }
}
