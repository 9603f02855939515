/**
 * Read-side queries: a venue's check-ins and conflicts (paged by stream sequence, the cursor), read from
 * the streams on each request, and its agents' latest heartbeats with their ticket-sync lag, from the
 * hub's agent board (rebuilt from the GS_AGENTS bucket, so every hub answers the same).
 */
import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { type CheckinMessage, type ConflictRecord, decodeCheckin } from '../shared/checkins.ts';
import { decode } from '../shared/codec.ts';
import { STREAMS, subjects } from '../shared/subjects.ts';
import { type AgentBoard, syncPending } from './agent-board.ts';

export interface Page<T> {
  items: (T & { cursor: number })[];
  /** Pass as `after` for the next page; null when this page reached the end. */
  next_cursor: number | null;
}

export interface PageQuery {
  /** Stream sequence to continue after. */
  after?: number | undefined;
  /** Milliseconds since the epoch; ignored when `after` is given. */
  since?: number | undefined;
  limit: number;
}

export async function readPage<T>(
  js: JetStreamClient,
  stream: string,
  filter: string,
  q: PageQuery,
  decodeOne: (b: Uint8Array) => T,
): Promise<Page<T>> {
  const start =
    q.after !== undefined
      ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: q.after + 1 }
      : q.since !== undefined
        ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: new Date(q.since).toISOString() }
        : { deliver_policy: DeliverPolicy.All };
  const consumer = await js.consumers.get(stream, { filter_subjects: filter, ...start });
  try {
    const info = await consumer.info(true);
    const want = Math.min(q.limit, info.num_pending);
    const items: (T & { cursor: number })[] = [];
    let more = info.num_pending > want;
    if (want > 0) {
      const iter = await consumer.fetch({ max_messages: want, expires: 5_000 });
      for await (const m of iter) {
        items.push({ ...decodeOne(m.data), cursor: m.seq });
        if (m.info.pending > 0 && items.length >= want) more = true;
        if (items.length >= want) break;
      }
    }
    const last = items[items.length - 1];
    return { items, next_cursor: more && last !== undefined ? last.cursor : null };
  } finally {
    await consumer.delete().catch(() => undefined);
  }
}

export class VenueQueries {
  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly board: AgentBoard,
  ) {}

  checkins(venue: string, q: PageQuery): Promise<Page<CheckinMessage>> {
    return readPage(this.js, STREAMS.checkins, subjects.venueCheckins(venue), q, decodeCheckin);
  }

  conflicts(venue: string, q: PageQuery): Promise<Page<ConflictRecord>> {
    return readPage(
      this.js,
      STREAMS.conflicts,
      subjects.venueConflicts(venue),
      q,
      (b) => decode(b) as ConflictRecord,
    );
  }

  /** The venue's agents, from the hub's agent board, each with its ticket-sync lag. */
  async agents(venue: string, now = Date.now()) {
    return Promise.all(
      this.board.venue(venue).map(async (entry) => {
        const a = this.board.view(entry, await syncPending(this.jsm, venue, entry.hb.agent), now);
        return {
          agent: a.agent,
          gate: a.gate,
          online: a.online,
          last_heartbeat: a.last_heartbeat,
          last_heartbeat_age_ms: a.last_heartbeat_age_ms,
          outbox_depth: a.outbox_depth,
          oldest_unsent_age_ms: a.oldest_unsent_age_ms,
          tickets_held: a.tickets_held,
          last_event_seq: a.last_event_seq,
          sync_pending: a.sync_pending,
          checkins_total: a.checkins_total,
        };
      }),
    );
  }
}
