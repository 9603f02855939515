/**
 * Read-side queries over the streams: a venue's check-ins and conflicts (paged by stream sequence, the
 * cursor), and its agents' latest heartbeats with their ticket-sync lag. Nothing is cached in the hub
 * process, so every hub answers the same.
 */
import {
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { type CheckinMessage, type ConflictRecord, decodeCheckin } from '../shared/checkins.ts';
import { decode } from '../shared/codec.ts';
import type { Heartbeat } from '../shared/heartbeat.ts';
import { agentConsumerName, STREAMS, subjects } from '../shared/subjects.ts';

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

/** An agent is offline when three heartbeats (15 s) are missing. */
export const OFFLINE_AFTER_MS = 15_000;

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
    private readonly agentsKv: KV,
    /** Milliseconds without a heartbeat before an agent is called offline (GATESYNC_AGENT_OFFLINE_AFTER). */
    private readonly offlineAfterMs = OFFLINE_AFTER_MS,
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

  async agents(venue: string, now = Date.now()) {
    const keys: string[] = [];
    for await (const k of await this.agentsKv.keys(`${venue}.*`)) keys.push(k);
    keys.sort();
    const out = [];
    for (const key of keys) {
      const e = await this.agentsKv.get(key);
      if (e === null || e.operation !== 'PUT') continue;
      const hb = JSON.parse(e.string()) as Heartbeat;
      let syncPending: number | null = null;
      try {
        syncPending = (await this.jsm.consumers.info(STREAMS.tickets, agentConsumerName(venue, hb.agent)))
          .num_pending;
      } catch (err: unknown) {
        if (!(err instanceof JetStreamApiError)) throw err;
      }
      // Received time is the server's, so agent clock skew cannot make a live gate look dead.
      const receivedAt = e.created.getTime();
      out.push({
        agent: hb.agent,
        gate: hb.gate,
        online: now - receivedAt < this.offlineAfterMs,
        last_heartbeat: new Date(receivedAt).toISOString(),
        last_heartbeat_age_ms: now - receivedAt,
        outbox_depth: hb.outbox_depth,
        oldest_unsent_age_ms: hb.oldest_unsent_at === null ? null : hb.sent_at - hb.oldest_unsent_at,
        tickets_held: hb.tickets_held,
        last_event_seq: hb.last_event_seq,
        sync_pending: syncPending,
        checkins_total: hb.checkins_total,
      });
    }
    return out;
  }
}
