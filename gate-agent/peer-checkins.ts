/**
 * Reads its venue's check-ins from GS_CHECKINS so that a ticket admitted at gate A is refused
 * `already_used` at gate B within a second while both are online.
 *
 * An ordered consumer (ephemeral, no server state to clean up, recreated by the client on any gap)
 * starts after the position kept in SQLite; each batch of check-ins updates who is inside and moves the
 * position in one transaction. When the consumer ends for any reason it is started again from the
 * stored position, so nothing is skipped across reconnects or restarts.
 */
import { DeliverPolicy, type JetStreamClient } from '@nats-io/jetstream';
import { type CheckinMessage, decodeCheckin } from '../shared/checkins.ts';
import type { Logger } from '../shared/logger.ts';
import { RetryLoop } from '../shared/retry-loop.ts';
import { checkinSubjectTail, STREAMS, subjects } from '../shared/subjects.ts';
import type { TicketStore } from './ticket-store.ts';

export interface PeerCheckinsOptions {
  js: JetStreamClient;
  store: TicketStore;
  venue: string;
  /** This gate's agent id: its own check-ins come back on `gs.chk.<venue>.<agent>.*`. */
  agent: string;
  /**
   * Says whether this process published the check-in with this id (and forgets it): its echo needs no
   * look-up in the store. Absent, or false for an id it does not know, the store is asked.
   */
  publishedHere?: (id: string) => boolean;
  logger: Logger;
  onApplied?: (count: number) => void;
}

export class PeerCheckins {
  private readonly loop: RetryLoop;

  constructor(private readonly opts: PeerCheckinsOptions) {
    this.loop = new RetryLoop({
      logger: opts.logger,
      what: 'venue check-in reader',
      round: () => this.round(),
    });
  }

  get lastError(): string | undefined {
    return this.loop.lastError;
  }

  start(): void {
    this.loop.start();
  }

  stop(): Promise<void> {
    return this.loop.stop();
  }

  /** One ordered consumer from the stored position, read until it ends. */
  private async round(): Promise<void> {
    const from = this.opts.store.syncPosition(STREAMS.checkins).lastSeq;
    const consumer = await this.opts.js.consumers.get(STREAMS.checkins, {
      filter_subjects: subjects.venueCheckins(this.opts.venue),
      ...(from > 0
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: from + 1 }
        : { deliver_policy: DeliverPolicy.All }),
    });
    const iter = await consumer.consume({ max_messages: 1_000, expires: 5_000 });
    this.loop.track(iter);
    let batch: CheckinMessage[] = [];
    let lastWrite = 0;
    for await (const m of iter) {
      try {
        // This gate's own check-ins come back too; those its store holds change nothing, and are skipped
        // by the subject (gs.chk.<venue>.<agent>.<id>) before any decoding: the ones this process sent
        // by memory, older ones by a look-up in the store (which holds none of the other gates').
        const { agent, id } = checkinSubjectTail(m.subject);
        const own = agent === this.opts.agent;
        if (!own || !((this.opts.publishedHere?.(id) ?? false) || this.opts.store.hasCheckin(id))) {
          const c = decodeCheckin(m.data);
          if (c.decision === 'admit' && c.id === id) batch.push(c);
        }
      } catch {
        this.opts.logger.warn({ subject: m.subject, seq: m.seq }, 'malformed check-in skipped');
      }
      // The position alone is written at most every 2 s: re-reading a few check-ins is harmless.
      const now = Date.now();
      // `m.info` parses the ack subject: asked only when there is something to write (not for every echo).
      if ((batch.length > 0 || now - lastWrite > 2_000) && (batch.length >= 500 || m.info.pending === 0)) {
        const applied = this.opts.store.applyVenueCheckins(STREAMS.checkins, batch, m.seq);
        this.opts.onApplied?.(applied);
        batch = [];
        lastWrite = now;
      }
      if (this.loop.stopping) break;
    }
  }
}
