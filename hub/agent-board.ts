/**
 * The hub's view of every venue's agents, kept from one watch of the GS_AGENTS bucket (one entry per
 * agent, `<venue>.<agent>`, rewritten by each heartbeat every 5 s). It serves GET
 * /v1/venues/{venue}/agents, the dashboard, and the webhook `agent.online` / `agent.offline` events.
 *
 * Why a watch and not a read per request: with hundreds of venues a page of the dashboard must be
 * filtered and paged without reading every key each second, and "scans in the last minutes" needs more
 * than the latest heartbeat. Each heartbeat carries the agent's `checkins_total`; the board keeps the
 * (server time, total) samples of the last SCAN_WINDOW_MS per agent, and the difference between the
 * newest sample and the one at the window's start is the number of scans in that window. After a hub
 * restart the window is shorter until enough heartbeats have arrived; `scans_window_ms` says how long a
 * window the figure covers. A total that goes down (an agent's store replaced) restarts the count.
 *
 * Nothing here is the truth: it is rebuilt from the bucket on start, so every hub process shows the same.
 */
import { JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
import { type KV, type KvEntry, KvWatchInclude } from '@nats-io/kv';
import { errorMessage } from '../shared/errors.ts';
import type { Heartbeat } from '../shared/heartbeat.ts';
import type { Logger } from '../shared/logger.ts';
import { agentConsumerName, STREAMS } from '../shared/subjects.ts';

/** Milliseconds of scan history kept per agent: the dashboard shows scans in the last 5 minutes. */
export const SCAN_WINDOW_MS = 5 * 60_000;

interface Sample {
  /** Milliseconds since the epoch (NATS server time of the heartbeat). */
  at: number;
  total: number;
}

export interface AgentEntry {
  venue: string;
  hb: Heartbeat;
  /** NATS server time the latest heartbeat was stored (agent clock skew cannot make a gate look dead). */
  receivedAt: number;
  samples: Sample[];
  /** KV revision of the heartbeat held. */
  revision: number;
}

export interface AgentView {
  venue: string;
  agent: string;
  gate: string;
  online: boolean;
  /** The agent's own view of its NATS link at its last heartbeat. */
  link_connected: boolean;
  last_heartbeat: string;
  last_heartbeat_age_ms: number;
  outbox_depth: number;
  oldest_unsent_age_ms: number | null;
  tickets_held: number;
  last_event_seq: number;
  /** Ticket events the agent's consumer has not taken yet (sync lag, in events); null when unknown. */
  sync_pending: number | null;
  checkins_total: number;
  scans_recent: number;
  /** Milliseconds the `scans_recent` figure covers (up to SCAN_WINDOW_MS). */
  scans_window_ms: number;
}

/** Milliseconds one agent's sync lag is reused before the server is asked again. */
const SYNC_LAG_TTL_MS = 2_000;
const syncLagCache = new WeakMap<
  JetStreamManager,
  Map<string, { at: number; value: Promise<number | null> }>
>();

/**
 * Ticket events an agent's consumer has not taken yet (its sync lag); null when it has no consumer.
 *
 * Asked of the server at most every 2 s per agent, however many dashboards and API callers ask: a
 * consumer-info request makes nats-server 2.9 count pending messages over every subject of the venue
 * (about 10 ms of server CPU at 100,000 tickets), and a dashboard page of 25 venues asks for every agent
 * on it at each refresh. Concurrent askers share one request.
 */
export function syncPending(
  jsm: JetStreamManager,
  venue: string,
  agent: string,
  now = Date.now(),
): Promise<number | null> {
  let cache = syncLagCache.get(jsm);
  if (cache === undefined) {
    cache = new Map();
    syncLagCache.set(jsm, cache);
  }
  const key = `${venue}.${agent}`;
  const hit = cache.get(key);
  if (hit !== undefined && now - hit.at < SYNC_LAG_TTL_MS) return hit.value;
  const value = (async () => {
    try {
      return (await jsm.consumers.info(STREAMS.tickets, agentConsumerName(venue, agent))).num_pending;
    } catch (err: unknown) {
      if (err instanceof JetStreamApiError) return null;
      throw err;
    }
  })();
  const entry = { at: now, value };
  cache.set(key, entry);
  const forget = cache;
  // A failure is not kept: the next asker tries again.
  value.catch(() => {
    if (forget.get(key) === entry) forget.delete(key);
  });
  return value;
}

export class AgentBoard {
  /** By KV key `<venue>.<agent>`. */
  private readonly agents = new Map<string, AgentEntry>();
  private readonly listeners: ((key: string, entry: AgentEntry) => void)[] = [];
  private stopWatch: (() => void) | undefined;
  private version = 0;

  constructor(private readonly deps: { kv: KV; logger: Logger; offlineAfterMs: number }) {}

  /** Resolves once the bucket's current entries are loaded; updates follow in the background. */
  async start(): Promise<void> {
    // Watch first, then read what is there: an update that lands in between is applied either way, and
    // the revision check keeps the newer of the two.
    const watch = await this.deps.kv.watch({ include: KvWatchInclude.UpdatesOnly });
    this.stopWatch = () => watch.stop();
    void (async () => {
      for await (const e of watch) this.apply(e);
    })().catch((err: unknown) =>
      this.deps.logger.warn({ err: errorMessage(err) }, 'dashboard agent watch ended'),
    );
    for await (const key of await this.deps.kv.keys()) {
      const e = await this.deps.kv.get(key);
      if (e !== null) this.apply(e);
    }
  }

  stop(): void {
    this.stopWatch?.();
    this.stopWatch = undefined;
  }

  /** Grows on every change, so a stream can tell "nothing new" cheaply. */
  get changes(): number {
    return this.version;
  }

  private apply(e: KvEntry): void {
    const prev = this.agents.get(e.key);
    if (prev !== undefined && prev.revision >= e.revision) return;
    this.version++;
    if (e.operation !== 'PUT') {
      this.agents.delete(e.key);
      return;
    }
    let hb: Heartbeat;
    try {
      hb = e.json<Heartbeat>();
    } catch {
      return; // not a heartbeat
    }
    const venue = e.key.slice(0, e.key.indexOf('.'));
    const at = e.created.getTime();
    let samples = prev?.samples ?? [];
    const last = samples[samples.length - 1];
    if (last !== undefined && hb.checkins_total < last.total) samples = [];
    samples.push({ at, total: hb.checkins_total });
    // Keep one sample at or before the window's start, so the window is measured in full.
    while (samples.length > 2 && (samples[1] as Sample).at <= at - SCAN_WINDOW_MS) samples.shift();
    const entry: AgentEntry = { venue, hb, receivedAt: at, samples, revision: e.revision };
    this.agents.set(e.key, entry);
    for (const listener of this.listeners) listener(e.key, entry);
  }

  /** Called for every heartbeat applied after the listener is added, with the agent's KV key. */
  onHeartbeat(listener: (key: string, entry: AgentEntry) => void): void {
    this.listeners.push(listener);
  }

  /** Every agent by KV key, in no particular order. */
  entries(): IterableIterator<[string, AgentEntry]> {
    return this.agents.entries();
  }

  /** One venue's agents, sorted by agent id. */
  venue(venue: string): AgentEntry[] {
    const prefix = `${venue}.`;
    return [...this.agents.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, entry]) => entry);
  }

  /** Every venue with the keys of its agents, sorted by venue name. */
  venues(): Map<string, AgentEntry[]> {
    const out = new Map<string, AgentEntry[]>();
    for (const key of [...this.agents.keys()].sort()) {
      const a = this.agents.get(key) as AgentEntry;
      const list = out.get(a.venue);
      if (list === undefined) out.set(a.venue, [a]);
      else list.push(a);
    }
    return new Map([...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  view(a: AgentEntry, syncPending: number | null, now = Date.now()): AgentView {
    const hb = a.hb;
    const start = now - SCAN_WINDOW_MS;
    // The base is the newest sample at or before the window's start (or the oldest one kept).
    let base = a.samples[0] as Sample;
    for (const s of a.samples) if (s.at <= start) base = s;
    const last = a.samples[a.samples.length - 1] as Sample;
    const from = Math.max(base.at, start);
    return {
      venue: a.venue,
      agent: hb.agent,
      gate: hb.gate,
      online: now - a.receivedAt < this.deps.offlineAfterMs,
      link_connected: hb.connected,
      last_heartbeat: new Date(a.receivedAt).toISOString(),
      last_heartbeat_age_ms: Math.max(0, now - a.receivedAt),
      outbox_depth: hb.outbox_depth,
      oldest_unsent_age_ms:
        hb.oldest_unsent_at === null ? null : Math.max(0, hb.sent_at - hb.oldest_unsent_at),
      tickets_held: hb.tickets_held,
      last_event_seq: hb.last_event_seq,
      sync_pending: syncPending,
      checkins_total: hb.checkins_total,
      scans_recent: last.at <= start ? 0 : last.total - base.total,
      scans_window_ms: Math.max(0, Math.min(SCAN_WINDOW_MS, now - from)),
    };
  }
}
