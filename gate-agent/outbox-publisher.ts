/**
 * Sends the check-ins that scans committed (the outbox) to JetStream, in the order they were made.
 *
 * Up to `window` publishes are in flight at once, so a backlog of thousands drains in about the time of
 * a bare publish loop. A check-in the stream already holds (a re-send after a lost ack, a crash between
 * ack and mark, a replay days later) comes back as error 10071 (its subject already has a message),
 * which means "stored", so re-sending is always harmless. While NATS is unreachable the
 * publisher pauses, and it resumes by itself when the link returns.
 *
 * What is sent is tracked as one watermark in the store (`sent_through`): it moves over the prefix of
 * check-ins acknowledged in order, so a failure or a crash re-sends from the first unacknowledged one and
 * never skips any. Where to read next comes from two places: after a start, a failure or an operator's
 * requeue, the store (from the watermark); once that read has caught up with the durable check-ins, the
 * scan service's hand-over (`offer`), which gives every check-in in seq order as soon as its group is on
 * disk. Reading the rows back from SQLite for each drain cost a sixth of the scan path's main thread.
 */
import { CHECKIN_SCHEMA_VERSION, type CheckinMessage } from '../shared/checkins.ts';
import { encode } from '../shared/codec.ts';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import type { LinkState, NatsConnection } from '../shared/nats.ts';
import { PubAcks, WRONG_LAST_SEQUENCE } from '../shared/pub-acks.ts';
import { Pause } from '../shared/sleep.ts';
import { subjects } from '../shared/subjects.ts';
import type { CheckinRecord, TicketStore } from './ticket-store.ts';

export interface OutboxPublisherOptions {
  nc: NatsConnection;
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

/** Milliseconds the publisher waits before draining a scan that came within this of the previous one (a burst). */
const LINGER_MS = 2;

/** Ids of sent check-ins kept for `publishedHere` at most; past it the set starts again (the store answers). */
const MAX_REMEMBERED_IDS = 100_000;

/**
 * Publishes in flight at once by default. 1,024 rather than 256: with the hub judging on the same two
 * cores, a deeper pipeline keeps the server busy through the hub's bursts. bench:catchup, round 1,
 * 10,000 check-ins: reconnect -> drained 456 to 624 ms at 256, 368 to 390 ms at 1,024 (the bare loop,
 * at the same window, 191 to 205 ms either way).
 */
export const OUTBOX_WINDOW = 1_024;

/** Check-ins the hand-over holds at most; past it (a long cut), the store is read instead. */
const MAX_HANDED_OVER = 20_000;

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
export async function publishCheckin(publisher: PubAcks, r: CheckinRecord): Promise<boolean> {
  const reply = await publisher.publish(
    subjects.checkin(r.venue, r.agent, r.id),
    encode(toCheckinMessage(r)),
    // Each check-in has a subject of its own, and the stream refuses a second message on it for as long
    // as it holds the first: that is the dedupe, durable and not limited to a window. No Nats-Msg-Id:
    // it only duplicated that check for two minutes, at the cost of a headers object per publish here
    // and a duplicate-window entry per message in nats-server (the shared expect-empty headers are used).
    { expectLastSubjectSequence: 0 },
  );
  if (reply.ok) return reply.duplicate;
  // The subject already holds a message: the check-in is stored (a re-send after the duplicate window).
  if (reply.errCode === WRONG_LAST_SEQUENCE) return true;
  throw new Error(`JetStream refused check-in ${r.id}: ${reply.description} (${reply.errCode})`);
}

export class OutboxPublisher {
  private stopped = false;
  private readonly pause = new Pause();
  private lingering = false;
  /** When the last scan group was offered (performance.now()): one soon after it is part of a burst. */
  private lastNotifyAt = Number.NEGATIVE_INFINITY;
  private loop: Promise<void> | undefined;
  private readonly publisher: PubAcks;
  /** The last check-in given to a publish in this run of reads (sent, or in flight). */
  private cursor = 0;
  /** Durable check-ins after `cursor`, in seq order, handed over by the scan service. */
  private handedOver: CheckinRecord[] = [];
  /** True once a read of the store reached the durable end: from then on, the hand-over is complete. */
  private handOverComplete = false;
  sent = 0;
  duplicates = 0;
  lastError: string | undefined;
  private readonly window: number;
  /** Ids published by this process whose echo the venue reader has not seen yet. */
  private readonly published = new Set<string>();
  /** Whether the current (or last) drain had any check-in acknowledged. */
  private progressed = false;

  constructor(private readonly opts: OutboxPublisherOptions) {
    this.window = opts.window ?? OUTBOX_WINDOW;
    this.publisher = new PubAcks(opts.nc, opts.ackTimeout ?? 2_000);
  }

  start(): void {
    // Resume at once when the link returns, not at the next look (up to 250 ms later); when it goes,
    // the acknowledgements in flight will not come: fail them now rather than after their timeout.
    this.opts.link.onChange((up) => {
      if (up) this.pause.interrupt();
      else this.publisher.failAll('the link to NATS went down');
    });
    this.loop = this.run();
  }

  /**
   * Takes check-ins that are on disk (called after each durable scan group, in seq order) and wakes the
   * publisher. Ignored until a read of the store has caught up: that read will find them.
   */
  offer(records: readonly CheckinRecord[]): void {
    if (this.handOverComplete) {
      for (const r of records) this.handedOver.push(r);
      if (this.handedOver.length > MAX_HANDED_OVER) this.forgetHandOver();
    }
    this.notify();
  }

  /** Wakes the publisher: there is something to send. */
  notify(): void {
    // A lone scan goes out at once (cross-gate freshness); during a burst (groups less than LINGER_MS
    // apart), linger a few milliseconds so the groups are sent as one drain. Measured between notices,
    // not from the last send: from the send, one lingered scan made the next one look like a burst
    // too, and every scan at a steady few per 10 ms waited the full linger.
    const now = performance.now();
    const lone = now - this.lastNotifyAt > LINGER_MS;
    this.lastNotifyAt = now;
    if (this.lingering) return;
    if (lone) {
      this.pause.interrupt();
      return;
    }
    this.lingering = true;
    setTimeout(() => {
      this.lingering = false;
      this.pause.interrupt();
    }, LINGER_MS).unref();
  }

  /**
   * Whether this process published the check-in with this id, forgetting it: the venue reader skips its
   * own echoes by this instead of a look-up in the store. True means the store holds it (everything
   * published was read from the store or handed over after its commit).
   */
  publishedHere(id: string): boolean {
    return this.published.delete(id);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pause.interrupt();
    await this.loop;
    this.publisher.close();
  }

  private forgetHandOver(): void {
    this.handedOver = [];
    this.handOverComplete = false;
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
        // A drain that got some through before failing (a lossy link) starts the back-off again.
        backoff = this.progressed ? 200 : Math.min(backoff * 2, 5_000);
      }
    }
  }

  /** The next check-ins to send after `cursor`, from the hand-over or the store; empty when none. */
  private nextBatch(): readonly CheckinRecord[] {
    if (this.handOverComplete) {
      let skip = 0;
      while (skip < this.handedOver.length && (this.handedOver[skip] as CheckinRecord).seq <= this.cursor)
        skip++;
      // Seqs are contiguous (a plain rowid, never deleted; a refused insert takes none), so the hand-over
      // must continue exactly at cursor + 1. A gap means a committed group was never handed over (its
      // fsync failed and its scanners got an error, yet a later fsync made it durable): read the store.
      let n = 0;
      let expected = this.cursor + 1;
      while (n < this.window && skip + n < this.handedOver.length) {
        if ((this.handedOver[skip + n] as CheckinRecord).seq !== expected) break;
        expected++;
        n++;
      }
      const batch = this.handedOver.slice(skip, skip + n);
      if (n < this.window && skip + n < this.handedOver.length) {
        this.forgetHandOver();
        if (batch.length > 0) return batch;
      } else {
        this.handedOver = this.handedOver.slice(skip + n);
        return batch;
      }
    }
    // The durable end is read before the rows: every check-in above it reaches `offer` later.
    const durable = this.opts.durableSeq?.() ?? Number.MAX_SAFE_INTEGER;
    const rows = this.opts.store.checkinsAfter(this.cursor, this.window, durable);
    if (rows.length === 0 && this.opts.durableSeq !== undefined) {
      this.handOverComplete = true;
      this.handedOver = [];
    }
    return rows;
  }

  /**
   * Sends everything after the watermark with up to `window` publishes in flight, moving the watermark
   * over the acknowledged prefix. Returns how many were published. Throws on the first failed publish,
   * after the publishes already in flight have settled (the acknowledged prefix is kept).
   */
  private async drain(): Promise<number> {
    const { store } = this.opts;
    // Start from the watermark: after a failure, a crash or an operator's requeue, that is where the
    // first unacknowledged check-in is. Anything else means the hand-over no longer lines up.
    const epoch = store.outboxEpoch;
    const through = store.sentThrough();
    if (through !== this.cursor) {
      this.cursor = through;
      this.forgetHandOver();
    }
    let failure: unknown;
    // Published seqs in order, with whether each was acknowledged; the acknowledged head moves the
    // watermark. Counted, not raced: Promise.race over the window would cost O(window) per publish.
    const order: { seq: number; acked: boolean }[] = [];
    let head = 0;
    let inFlight = 0;
    let slotFreed: (() => void) | undefined;
    let allDone: (() => void) | undefined;
    // With the window full, publishing resumes once a sixteenth of it is free, not at every ack: the
    // publishes of one turn leave in one socket write, where one at a time each cost a write (and a
    // wake-up of nats-server) of its own.
    const resumeAt = this.window - Math.max(1, Math.floor(this.window / 16));
    const settled = () => {
      inFlight--;
      if (slotFreed !== undefined && (inFlight <= resumeAt || failure !== undefined)) {
        slotFreed();
        slotFreed = undefined;
      }
      if (inFlight === 0) allDone?.();
    };
    let newlyAcked = 0;
    let dups = 0;
    let published = 0;
    this.progressed = false;
    let mark = through;
    const flushMarks = () => {
      while (head < order.length && (order[head] as { acked: boolean }).acked) {
        mark = (order[head] as { seq: number }).seq;
        head++;
      }
      if (head > 4_096) {
        order.splice(0, head);
        head = 0;
      }
      store.markSentThrough(mark, epoch);
      if (newlyAcked === 0) return;
      this.sent += newlyAcked;
      this.duplicates += dups;
      this.opts.onSent?.(newlyAcked, dups);
      newlyAcked = 0;
      dups = 0;
    };
    while (
      failure === undefined &&
      !this.stopped &&
      this.opts.link.connected &&
      store.outboxEpoch === epoch
    ) {
      const batch = this.nextBatch();
      if (batch.length === 0) break;
      for (const row of batch) {
        this.cursor = row.seq;
        const slot = { seq: row.seq, acked: false };
        order.push(slot);
        inFlight++;
        if (this.published.size >= MAX_REMEMBERED_IDS) this.published.clear();
        this.published.add(row.id);
        publishCheckin(this.publisher, row).then(
          (duplicate) => {
            slot.acked = true;
            newlyAcked++;
            published++;
            this.progressed = true;
            if (duplicate) dups++;
            // One watermark write per window's worth of acks. A failing write (say, SQLITE_BUSY) fails
            // the drain like a failed publish: the slot must still be settled, or the drain never ends.
            try {
              if (newlyAcked >= this.window) flushMarks();
            } catch (err: unknown) {
              failure ??= err;
            }
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
    if (failure !== undefined) {
      // Re-read from the watermark next time; the acknowledged ones above it are re-sent harmlessly.
      this.cursor = store.sentThrough();
      this.forgetHandOver();
      throw failure;
    }
    return published;
  }
}
