/**
 * What the dashboard shows, in one JSON snapshot: a page of venues with their agents (filtered and paged
 * on the server, so a hub with hundreds of venues sends one screenful), every webhook endpoint's health,
 * the most recent dead-lettered messages with what became of their replays, and the latest double
 * entries across all venues.
 *
 * Snapshots are cached for SNAPSHOT_TTL_MS per distinct query, and the parts every query shares (webhooks,
 * failed messages, conflicts) once for all, so ten open dashboards cost about what one does.
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { ConflictRecord } from '../../shared/checkins.ts';
import { decode } from '../../shared/codec.ts';
import { errorMessage } from '../../shared/errors.ts';
import { STREAMS, subjects } from '../../shared/subjects.ts';
import { type AgentBoard, type AgentView, SCAN_WINDOW_MS, syncPending } from '../agent-board.ts';
import { readPage } from '../venue-queries.ts';
import type { Webhooks } from '../webhooks/index.ts';
import type { AttemptRecord } from '../webhooks/model.ts';
import type { EndpointHealth } from '../webhooks/worker.ts';

/** Milliseconds a computed snapshot is reused. */
export const SNAPSHOT_TTL_MS = 1_000;
export const DEFAULT_PAGE_SIZE = 20;
export const MAX_PAGE_SIZE = 100;
/** Dead letters shown, newest first, and how far back they are looked for (milliseconds). */
const FAILED_SHOWN = 25;
const FAILED_LOOKBACK_MS = 24 * 60 * 60_000;
/** Dead letters read per endpoint at most for one snapshot. */
const FAILED_READ_PER_ENDPOINT = 500;
const CONFLICTS_SHOWN = 20;

export interface VenueQuery {
  /** Case-insensitive substring of a venue, agent or gate name. */
  filter: string;
  /** Only venues with an offline agent or check-ins waiting in an outbox. */
  problems: boolean;
  /** 1-based. */
  page: number;
  page_size: number;
}

export interface VenueRow {
  venue: string;
  agents: AgentView[];
  agents_online: number;
  agents_offline: number;
  outbox_depth: number;
  scans_recent: number;
}

/** One webhook endpoint as GET /v1/webhooks/health gives it, plus the state the dashboard colours. */
export interface EndpointRow {
  id: string;
  url: string;
  description: string;
  disabled: boolean;
  disabled_reason: string | null;
  failing_since: string | null;
  queued: number | null;
  /** As the webhook worker reports it (GET /v1/webhooks/health). */
  health: EndpointHealth | null;
  state: 'disabled' | 'failing' | 'degraded' | 'healthy' | 'idle';
}

export interface FailedRow {
  message_id: string;
  endpoint_id: string;
  endpoint_url: string | null;
  event_type: string;
  attempts: number;
  reason: string;
  dead_at: string;
  cursor: number;
  /** What the latest attempt after it died says: none yet, retrying, delivered, or failed again. */
  replay: { state: 'none' | 'retrying' | 'delivered' | 'failed'; at: string | null; webhook_id: string };
}

export interface ConflictRow {
  id: string;
  venue: string;
  ticket_id: string;
  first: { checkin_id: string; agent: string; gate: string; scanned_at: string };
  second: { checkin_id: string; agent: string; gate: string; scanned_at: string };
  detected_at: string;
}

export interface Snapshot {
  generated_at: string;
  offline_after_ms: number;
  scan_window_ms: number;
  totals: {
    venues: number;
    agents: number;
    agents_online: number;
    agents_offline: number;
    outbox_depth: number;
    scans_recent: number;
  };
  venues: {
    query: VenueQuery;
    /** Venues matching the filter, on every page. */
    matching: number;
    pages: number;
    items: VenueRow[];
  };
  webhooks: { endpoints: EndpointRow[]; error: string | null };
  failed: { items: FailedRow[]; total_recent: number; error: string | null };
  conflicts: { items: ConflictRow[]; error: string | null };
}

export interface SnapshotDeps {
  board: AgentBoard;
  js: JetStreamClient;
  jsm: JetStreamManager;
  webhooks: Webhooks;
  offlineAfterMs: number;
}

type Shared = Pick<Snapshot, 'webhooks' | 'failed' | 'conflicts'>;

const iso = (ms: number) => new Date(ms).toISOString();

function endpointState(e: Omit<EndpointRow, 'state'>): EndpointRow['state'] {
  if (e.disabled) return 'disabled';
  const h = e.health;
  // failing_since is set from the first failure of a run and cleared by a success.
  if (e.failing_since !== null || (h !== null && h.breaker !== 'closed')) return 'failing';
  if (h === null || h.attempts === 0) return 'idle';
  // Delivering now, but recent attempts failed too.
  return (h.success_rate ?? 1) < 0.9 ? 'degraded' : 'healthy';
}

export class SnapshotBuilder {
  private shared: { at: number; value: Promise<Shared> } | undefined;
  private readonly pages = new Map<string, { at: number; value: Promise<Snapshot> }>();

  constructor(private readonly deps: SnapshotDeps) {}

  /** The snapshot for one query, reused for SNAPSHOT_TTL_MS. */
  get(q: VenueQuery): Promise<Snapshot> {
    const now = Date.now();
    const key = JSON.stringify(q);
    const hit = this.pages.get(key);
    if (hit !== undefined && now - hit.at < SNAPSHOT_TTL_MS) return hit.value;
    for (const [k, v] of this.pages) if (now - v.at >= SNAPSHOT_TTL_MS) this.pages.delete(k);
    const value = this.build(q, now);
    this.pages.set(key, { at: now, value });
    value.catch(() => this.pages.delete(key));
    return value;
  }

  private sharedParts(now: number): Promise<Shared> {
    if (this.shared !== undefined && now - this.shared.at < SNAPSHOT_TTL_MS) return this.shared.value;
    const value = (async (): Promise<Shared> => {
      const [webhooks, failed, conflicts] = await Promise.all([
        this.webhookRows().then(
          (endpoints) => ({ endpoints, error: null }),
          (err: unknown) => ({ endpoints: [], error: errorMessage(err) }),
        ),
        this.failedRows(now).then(
          (r) => ({ ...r, error: null }),
          (err: unknown) => ({ items: [], total_recent: 0, error: errorMessage(err) }),
        ),
        this.conflictRows().then(
          (items) => ({ items, error: null }),
          (err: unknown) => ({ items: [], error: errorMessage(err) }),
        ),
      ]);
      return { webhooks, failed, conflicts };
    })();
    this.shared = { at: now, value };
    return value;
  }

  private async build(q: VenueQuery, now: number): Promise<Snapshot> {
    const venues = this.deps.board.venues();
    const needle = q.filter.trim().toLowerCase();
    const totals = {
      venues: venues.size,
      agents: 0,
      agents_online: 0,
      agents_offline: 0,
      outbox_depth: 0,
      scans_recent: 0,
    };
    const matching: { venue: string; rows: AgentView[] }[] = [];
    for (const [venue, entries] of venues) {
      const rows = entries.map((a) => this.deps.board.view(a, null, now));
      for (const r of rows) {
        totals.agents++;
        if (r.online) totals.agents_online++;
        else totals.agents_offline++;
        totals.outbox_depth += r.outbox_depth;
        totals.scans_recent += r.scans_recent;
      }
      const hit =
        needle === '' ||
        venue.toLowerCase().includes(needle) ||
        rows.some((r) => r.agent.toLowerCase().includes(needle) || r.gate.toLowerCase().includes(needle));
      const troubled = rows.some((r) => !r.online || r.outbox_depth > 0);
      if (hit && (!q.problems || troubled)) matching.push({ venue, rows });
    }
    const pages = Math.max(1, Math.ceil(matching.length / q.page_size));
    const page = Math.min(q.page, pages);
    const shown = matching.slice((page - 1) * q.page_size, page * q.page_size);
    // Sync lag only for the agents shown: one consumer lookup each.
    const items = await Promise.all(
      shown.map(async ({ venue, rows }): Promise<VenueRow> => {
        const agents = await Promise.all(
          rows.map(async (r) => ({ ...r, sync_pending: await syncPending(this.deps.jsm, venue, r.agent) })),
        );
        return {
          venue,
          agents,
          agents_online: agents.filter((a) => a.online).length,
          agents_offline: agents.filter((a) => !a.online).length,
          outbox_depth: agents.reduce((n, a) => n + a.outbox_depth, 0),
          scans_recent: agents.reduce((n, a) => n + a.scans_recent, 0),
        };
      }),
    );
    return {
      generated_at: iso(now),
      offline_after_ms: this.deps.offlineAfterMs,
      scan_window_ms: SCAN_WINDOW_MS,
      totals,
      venues: { query: { ...q, page }, matching: matching.length, pages, items },
      ...(await this.sharedParts(now)),
    };
  }

  private async webhookRows(): Promise<EndpointRow[]> {
    const endpoints = await this.deps.webhooks.health();
    return endpoints.map((e) => ({
      id: e.id,
      url: e.url,
      description: e.description,
      disabled: e.disabled,
      disabled_reason: e.disabled_reason,
      failing_since: e.failing_since,
      queued: e.queued,
      health: e.health,
      state: endpointState(e),
    }));
  }

  private async failedRows(now: number): Promise<{ items: FailedRow[]; total_recent: number }> {
    const { store, queries } = this.deps.webhooks;
    const endpoints = store.list();
    const urls = new Map(endpoints.map((e) => [e.id, e.url]));
    const perEndpoint = await Promise.all(
      endpoints.map(async (e) => {
        const page = await queries.deadLetters(e.id, {
          since: now - FAILED_LOOKBACK_MS,
          limit: FAILED_READ_PER_ENDPOINT,
        });
        return page.items;
      }),
    );
    const all = perEndpoint.flat();
    all.sort((a, b) => (a.dead_at < b.dead_at ? 1 : a.dead_at > b.dead_at ? -1 : b.cursor - a.cursor));
    const items = await Promise.all(
      all.slice(0, FAILED_SHOWN).map(async (d): Promise<FailedRow> => {
        // Attempts that started after it died belong to a resend, recover or redrive (and their retries).
        // Read on the one subject of this endpoint and message, from the time it died.
        const after = (await queries.attemptsAt(d.endpoint_id, d.message_id, Date.parse(d.dead_at))).filter(
          (a: AttemptRecord) => a.at > d.dead_at,
        );
        const latest = after[after.length - 1];
        let state: FailedRow['replay']['state'] = 'none';
        if (latest !== undefined) {
          if (latest.outcome === 'succeeded') state = 'delivered';
          else state = latest.next === 'retry' ? 'retrying' : 'failed';
        }
        return {
          message_id: d.message_id,
          endpoint_id: d.endpoint_id,
          endpoint_url: urls.get(d.endpoint_id) ?? null,
          event_type: d.event_type,
          attempts: d.attempts,
          reason: d.reason,
          dead_at: d.dead_at,
          cursor: d.cursor,
          replay: { state, at: latest?.at ?? null, webhook_id: d.message_id },
        };
      }),
    );
    return { items, total_recent: all.length };
  }

  private async conflictRows(): Promise<ConflictRow[]> {
    const info = await this.deps.jsm.streams.info(STREAMS.conflicts);
    const after = Math.max(0, info.state.last_seq - CONFLICTS_SHOWN);
    const page = await readPage(
      this.deps.js,
      STREAMS.conflicts,
      subjects.allConflicts,
      { after, limit: CONFLICTS_SHOWN },
      (b) => decode(b) as ConflictRecord,
    );
    return page.items.reverse().map((c) => ({
      id: c.id,
      venue: c.venue,
      ticket_id: c.ticket_id,
      first: { ...c.first, scanned_at: iso(c.first.scanned_at) },
      second: { ...c.second, scanned_at: iso(c.second.scanned_at) },
      detected_at: iso(c.detected_at),
    }));
  }
}
