/**
 * `gatesync demo`: the whole flow on one machine with no configuration. It makes a throw-away work folder
 * and keys, starts the hub (which runs its own nats-server), one venue with two gate agents whose NATS
 * links go through small TCP proxies, issues tickets over the hub's HTTP API, runs simulated scanners over
 * the agents' HTTP API, revokes tickets, cuts one gate's uplink and shows that gate keep deciding offline
 * and catch up afterwards. During the cut it makes one double entry on purpose (a ticket admitted at the
 * offline gate and then at the online one); after the restore it waits for the hub to hold and judge a
 * check-in for every scan and to list that conflict, then prints a summary (scans against the hub's
 * check-ins: lost, duplicates, conflicts), exits non-zero if any of it is off, and removes everything.
 *
 * A subscriber sees it all too: the sample receiver of examples/webhook-receiver.ts runs in-process on
 * loopback (let through by GATESYNC_WEBHOOK_ALLOW_CIDRS), registered as a webhook endpoint for check-ins,
 * conflicts and agents going offline and online. It verifies every delivery's signature itself; the demo
 * prints progress as they arrive, waits at the end for the webhook of every admission the hub holds, and
 * fails if one did not verify or if the checkin.created count differs from the hub's admitted check-ins.
 *
 * Everything the demo does to the daemons goes through their public HTTP APIs; only start and stop are
 * in-process. The daemons log through loggers at level `warn`, rendered as short human lines.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleepFor } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { pino } from 'pino';
import {
  type RefusalReason,
  startWebhookReceiver,
  type Webhook,
  type WebhookReceiver,
} from '../examples/webhook-receiver.ts';
import { loadAgentConfig } from '../gate-agent/config.ts';
import { type AgentHandle, type AgentStatus, startAgent } from '../gate-agent/main.ts';
import type { RejectReason } from '../gate-agent/ticket-store.ts';
import { loadHubConfig } from '../hub/config.ts';
import { type HubHandle, startHub } from '../hub/main.ts';
import { errorMessage, GatesyncError } from '../shared/errors.ts';
import { HEARTBEAT_INTERVAL_MS } from '../shared/heartbeat.ts';
import { type Logger, REDACT_PATHS } from '../shared/logger.ts';
import { generateSigningKey } from '../shared/signing.ts';
import { STREAMS } from '../shared/subjects.ts';
import { type DemoProxy, startDemoProxy } from './demo-proxy.ts';

const VENUE = 'demo-venue';
const GATES = ['north', 'south'] as const;
type Gate = (typeof GATES)[number];
const CUT_GATE: Gate = 'north';
const MIN_TICKETS = 40;
const MAX_TICKETS = 10_000;
/** Longest a single stop step may take before the demo moves on. */
const STOP_STEP_TIMEOUT_MS = 12_000;
/** The same after Ctrl-C, when NATS is usually gone already and waiting longer buys nothing. */
const STOP_STEP_TIMEOUT_INTERRUPTED_MS = 5_000;
/** Longest the demo waits for the hub to hold and judge every check-in once the outboxes are empty. */
const HUB_REPLAY_TIMEOUT_MS = 15_000;
/** Page size for the hub's check-in and conflict lists (the most the API allows). */
const HUB_PAGE_LIMIT = 1_000;
/** What the sample receiver subscribes to. */
const WEBHOOK_EVENT_TYPES = ['checkin.created', 'checkin.conflict', 'agent.offline', 'agent.online'] as const;
/**
 * The hub's GATESYNC_AGENT_OFFLINE_AFTER in the demo. Heartbeats come every 5 s, so 7 s leaves 2 s for a
 * late one before a gate is called offline, and an 8 s cut always makes the cut gate's heartbeats miss
 * it: its first one after the restore comes at least 8 s after its last one before the cut. (A --fast
 * run's 3 s cut may or may not.)
 */
const DEMO_AGENT_OFFLINE_AFTER = '7s';
/** Longest the demo waits for the webhooks of everything the hub holds, once the hub holds it. */
const WEBHOOK_WAIT_MS = 8_000;
/** A progress line every this many checkin.created webhooks. */
const WEBHOOK_PROGRESS_EVERY = 100;
/** Refusals that mean a delivery failed verification (no_secret and too_large are not about the signature). */
const VERIFICATION_FAILURES: readonly RefusalReason[] = [
  'missing_headers',
  'bad_timestamp',
  'stale_timestamp',
  'bad_signature',
  'bad_body',
];

type Reason = RejectReason;
const REASON_ORDER: Reason[] = [
  'already_used',
  'wrong_gate',
  'revoked',
  'not_yet_valid',
  'expired',
  'bad_signature',
  'malformed',
  'unknown',
  'wrong_venue',
  'not_inside',
];

type Kind = 'general' | 'gate_only' | 'not_yet' | 'expired' | 'late';

interface DemoTicket {
  id: string;
  qr: string;
  holder: string;
  kind: Kind;
  gates: string[];
  valid_from: string;
}

interface IssueBody {
  holder: string;
  tier: string;
  seat?: string;
  gates?: string[];
  valid_from: string;
  valid_until: string;
}

interface TicketView {
  id: string;
  holder: string;
  gates: string[];
  valid_from: string;
  qr: string;
  status: string;
}

interface ScanAnswer {
  decision: 'admit' | 'reject';
  reason?: Reason;
  unsynced_ticket?: boolean;
  ticket?: { id: string; status: string };
  checkin_id?: string;
}

/** One item of `GET /v1/venues/{venue}/checkins`. */
interface HubCheckin {
  id: string;
  agent: string;
  gate: string;
  ticket_id: string | null;
  direction: 'in' | 'out';
  decision: 'admit' | 'reject';
  reason: string | null;
  scanned_at: string;
  cursor: string;
}

interface HubConflictSide {
  checkin_id: string;
  agent: string;
  gate: string;
  scanned_at: string;
}

/** One item of `GET /v1/venues/{venue}/conflicts`. */
interface HubConflict {
  id: string;
  ticket_id: string;
  first: HubConflictSide;
  second: HubConflictSide;
  detected_at: string;
  cursor: string;
}

/** One item of `GET /v1/venues/{venue}/agents`: the agent's latest heartbeat as the hub sees it. */
interface HubAgent {
  agent: string;
  gate: string;
  online: boolean;
  last_heartbeat: string;
  last_heartbeat_age_ms?: number;
  outbox_depth: number;
  oldest_unsent_age_ms: number | null;
  tickets_held: number;
  sync_pending: number | null;
  checkins_total: number;
}

/** A page of one of the hub's paged lists: the items under `K`, and the cursor to continue after. */
type HubPage<K extends string, T> = Record<K, T[]> & { next_cursor: string | null };

/** What the hub holds after the replay, as the demo last read it. */
interface HubReplay {
  checkins: HubCheckin[];
  pages: number;
  conflicts: HubConflict[];
  /** Sum of gatesync_hub_checkins_processed_total over its labels. */
  judged: number;
}

interface ScanItem {
  code: string;
  expect: 'admit' | Reason;
  /** Shown in the line printed for this scan. */
  label: string;
  /** Print this scan whatever its outcome, with this note. */
  show?: string;
}

interface GateStats {
  scans: number;
  admitted: number;
  rejected: Map<Reason, number>;
}

/** Small deterministic PRNG, so every run issues the same mix. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const FIRST = ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Donald', 'Frances', 'Ken', 'Margaret', 'Linus'];
const LAST = ['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Knuth', 'Allen', 'Thompson', 'Hamilton'];

function shortId(id: string): string {
  return id.length <= 10 ? id : `${id.slice(0, 1)}…${id.slice(-6)}`;
}

/**
 * Changes one character well inside the signature part, so the signature no longer verifies. Not the
 * last character: in 86 base64url characters for 64 bytes its low bits are padding, and changing only
 * those would decode to the same signature.
 */
function tamperSignature(qr: string): string {
  const i = qr.lastIndexOf('.') + 20;
  const c = qr[i] === 'A' ? 'B' : 'A';
  return qr.slice(0, i) + c + qr.slice(i + 1);
}

function fmtSeconds(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

class Interrupted extends Error {
  constructor() {
    super('interrupted');
  }
}

interface HttpAnswer<T> {
  status: number;
  body: T;
}

class Demo {
  private readonly started = performance.now();
  readonly ac = new AbortController();
  interrupted = false;
  private readonly rnd = prng(20240917);
  private readonly cutMs: number;
  private readonly pauseMs: [number, number];

  dir: string | undefined;
  private hub: HubHandle | undefined;
  private adminKey = '';
  private readonly proxies = new Map<Gate, DemoProxy>();
  private readonly agents = new Map<Gate, AgentHandle>();
  private readonly scannerTokens = new Map<Gate, string[]>();

  private tickets: DemoTicket[] = [];
  private issuedTotal = 0;
  private readonly stats = new Map<Gate, GateStats>();
  private totalScans = 0;
  private readonly shownReasons = new Map<Reason, number>();
  private readonly unexpected: string[] = [];
  /** The check-in id of every scan answer, in the order the answers came (undefined: none given). */
  private readonly scanCheckinIds: (string | undefined)[] = [];
  /** Why the run failed its self-check; non-empty means a non-zero exit. */
  readonly failures: string[] = [];
  /** The deliberate double entry: the ticket and each gate's answer. */
  private doubleEntry: { ticket: DemoTicket; answers: Map<Gate, ScanAnswer> } | undefined;
  /** Wall-clock time (ms since the epoch) the cut link was restored. */
  private restoredAtWall: number | undefined;
  private hubReplay: HubReplay | undefined;
  private readonly warnings = new Map<string, { shown: string; count: number }>();
  private receiver: WebhookReceiver | undefined;
  /** Every verified webhook, once per webhook-id, in arrival order. */
  private readonly webhooks: Webhook[] = [];
  private readonly createdCheckinIds = new Set<string>();
  /** Wall-clock time (ms since the epoch) the link was cut. */
  private cutAtWall: number | undefined;
  /** checkin.created webhooks of scans the cut gate answered offline, and when the first one came. */
  private offlineDelivered = { count: 0, firstAtWall: undefined as number | undefined };
  private cutInfo:
    | { offlineMs: number; reconnectMs: number; catchUpMs: number; drainedMs?: number; scans: number }
    | undefined;

  constructor(private readonly opts: { tickets: number; fast: boolean }) {
    this.cutMs = opts.fast ? 3_000 : 8_000;
    this.pauseMs = opts.fast ? [0, 0] : [20, 70];
    for (const g of GATES) this.stats.set(g, { scans: 0, admitted: 0, rejected: new Map() });
  }

  // ---------------------------------------------------------------- output

  private stamp(): string {
    return `[${((performance.now() - this.started) / 1000).toFixed(1).padStart(5)}s]`;
  }

  say(msg: string): void {
    process.stdout.write(`${this.stamp()} ${msg}\n`);
  }

  private section(title: string): void {
    process.stdout.write(`\n== ${title} ==\n`);
  }

  /** A pino logger at `warn` for a daemon, rendered as one short line; repeats are counted, not shown. */
  daemonLogger(name: string): Logger {
    return pino(
      { name, level: 'warn', redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: null },
      {
        write: (line: string) => {
          let rec: { level?: number; msg?: string; err?: unknown };
          try {
            rec = JSON.parse(line) as typeof rec;
          } catch {
            rec = { msg: line.trim() };
          }
          const level = (rec.level ?? 40) >= 50 ? 'error' : 'warning';
          const msg = rec.msg ?? '(no message)';
          const key = `${name}\n${msg}`;
          const seen = this.warnings.get(key);
          if (seen !== undefined) {
            seen.count++;
            return;
          }
          const err =
            typeof rec.err === 'string'
              ? rec.err
              : typeof rec.err === 'object' && rec.err !== null && 'message' in rec.err
                ? String((rec.err as { message: unknown }).message)
                : undefined;
          const shown = `${name} ${level}: ${msg}${err === undefined ? '' : ` (${err})`}`;
          this.warnings.set(key, { shown, count: 1 });
          this.say(`  ! ${shown}${level === 'warning' ? ' [repeats are counted, not shown]' : ''}`);
        },
      },
    );
  }

  // ---------------------------------------------------------------- plumbing

  private check(): void {
    if (this.ac.signal.aborted) throw new Interrupted();
  }

  private async sleep(ms: number): Promise<void> {
    if (ms <= 0) return;
    try {
      await sleepFor(ms, undefined, { signal: this.ac.signal });
    } catch {
      throw new Interrupted();
    }
  }

  private async http<T>(
    url: string,
    init: { token: string; method?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<HttpAnswer<T>> {
    this.check();
    const headers: Record<string, string> = { authorization: `Bearer ${init.token}`, ...init.headers };
    if (init.body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      res = await fetch(url, {
        method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
        headers,
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
        signal: AbortSignal.any([this.ac.signal, AbortSignal.timeout(15_000)]),
      });
    } catch (err: unknown) {
      if (this.ac.signal.aborted) throw new Interrupted();
      throw new Error(`${init.method ?? 'request'} ${url} failed: ${errorMessage(err)}`, { cause: err });
    }
    const text = await res.text();
    let body: unknown = text;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      // Not JSON (metrics): the caller gets the text.
    }
    return { status: res.status, body: body as T };
  }

  /** Polls `fn` until `done` holds, at most `timeoutMs`; throws naming `what` with the last value. */
  private async poll<T>(
    what: string,
    fn: () => Promise<T>,
    done: (v: T) => boolean,
    timeoutMs: number,
    intervalMs = 50,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      this.check();
      try {
        const v = await fn();
        if (done(v)) return v;
        last = v;
      } catch (err: unknown) {
        if (err instanceof Interrupted) throw err;
        last = errorMessage(err);
      }
      if (Date.now() >= deadline) {
        throw new Error(
          `timed out after ${fmtSeconds(timeoutMs)} waiting for ${what} (last: ${JSON.stringify(last)})`,
        );
      }
      await this.sleep(intervalMs);
    }
  }

  /**
   * Waits for a daemon to start unless Ctrl-C comes first; a start abandoned that way is stopped in the
   * background if it still completes (the process exits soon after anyway).
   */
  private async starting<T>(start: Promise<T>, stop: (started: T) => Promise<unknown>): Promise<T> {
    this.check();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_resolve, reject) => {
      onAbort = () => reject(new Interrupted());
      this.ac.signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      return await Promise.race([start, aborted]);
    } catch (err: unknown) {
      if (err instanceof Interrupted) start.then(stop).catch(() => undefined);
      throw err;
    } finally {
      if (onAbort !== undefined) this.ac.signal.removeEventListener('abort', onAbort);
    }
  }

  private agent(gate: Gate): AgentHandle {
    const a = this.agents.get(gate);
    if (a === undefined) throw new Error(`gate ${gate} is not running`);
    return a;
  }

  private token(gate: Gate, i = 0): string {
    const list = this.scannerTokens.get(gate) ?? [];
    return list[i % list.length] as string;
  }

  private async status(gate: Gate): Promise<AgentStatus> {
    const r = await this.http<AgentStatus>(`${this.agent(gate).url}/v1/status`, { token: this.token(gate) });
    if (r.status !== 200) throw new Error(`GET /v1/status at ${gate} answered ${r.status}`);
    return r.body;
  }

  private async preview(gate: Gate, code: string): Promise<ScanAnswer> {
    const r = await this.http<ScanAnswer>(`${this.agent(gate).url}/v1/tickets/${encodeURIComponent(code)}`, {
      token: this.token(gate),
    });
    if (r.status !== 200) throw new Error(`GET /v1/tickets at ${gate} answered ${r.status}`);
    return r.body;
  }

  private async hubApi<T>(path: string, body: unknown, headers?: Record<string, string>): Promise<T> {
    const hub = this.hub;
    if (hub === undefined) throw new Error('the hub is not running');
    const r = await this.http<T>(hub.url + path, { token: this.adminKey, body, headers });
    if (r.status < 200 || r.status >= 300) {
      throw new Error(`POST ${path} answered ${r.status}: ${JSON.stringify(r.body)}`);
    }
    return r.body;
  }

  private async hubGet<T>(path: string): Promise<T> {
    const hub = this.hub;
    if (hub === undefined) throw new Error('the hub is not running');
    const r = await this.http<T>(hub.url + path, { token: this.adminKey });
    if (r.status !== 200) throw new Error(`GET ${path} answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /**
   * Every item of one of the hub's paged lists, following `next_cursor` until it is null. Returns the
   * items and how many pages it took.
   */
  private async hubPages<K extends string, T>(path: string, key: K): Promise<{ items: T[]; pages: number }> {
    const items: T[] = [];
    let after: string | null = null;
    for (let pages = 1; ; pages++) {
      const q: string = `?limit=${HUB_PAGE_LIMIT}${after === null ? '' : `&after=${encodeURIComponent(after)}`}`;
      const page: HubPage<K, T> = await this.hubGet<HubPage<K, T>>(path + q);
      const list = page[key];
      if (!Array.isArray(list)) throw new Error(`GET ${path}${q}: no ${key} list in the answer`);
      items.push(...list);
      if (page.next_cursor === null) return { items, pages };
      if (page.next_cursor === after || list.length === 0) {
        throw new Error(`GET ${path}${q}: next_cursor ${page.next_cursor} does not move on`);
      }
      after = page.next_cursor;
    }
  }

  // ---------------------------------------------------------------- the flow

  async run(): Promise<void> {
    const { tickets: n, fast } = this.opts;
    process.stdout.write(
      `gatesync demo: one hub, venue ${VENUE} with gates ${GATES.join(' and ')}, ${n} tickets, ` +
        `uplink of gate ${CUT_GATE} cut for ${this.cutMs / 1000} s${fast ? ' (--fast)' : ''}, ` +
        `a sample webhook receiver; Ctrl-C stops it\n\n`,
    );
    await this.startEverything();
    await this.issueTickets(n);
    const plan = this.planScans();
    await this.doorsOpen(plan.main);
    await this.refunds(plan.refunds);
    await this.cutLink(plan);
    await this.checkinsAtHub();
    await this.webhooksAtReceiver();
    await this.summary();
  }

  private async startEverything(): Promise<void> {
    this.section('Setting up');
    const dir = mkdtempSync(join(tmpdir(), 'gatesync-demo-'));
    this.dir = dir;
    this.say(`work folder ${dir}`);
    const kid = `demo${new Date().toISOString().slice(0, 10).replaceAll('-', '')}`;
    const key = generateSigningKey(kid);
    const keyFile = join(dir, 'hub-key.json');
    writeFileSync(keyFile, `${JSON.stringify(key, null, 2)}\n`, { mode: 0o600 });
    this.adminKey = randomBytes(32).toString('base64url');
    for (const g of GATES) {
      this.scannerTokens.set(g, [
        randomBytes(24).toString('base64url'),
        randomBytes(24).toString('base64url'),
      ]);
    }
    this.say(
      `generated signing key ${kid} (Ed25519), an admin API key and ${GATES.length * 2} scanner tokens`,
    );

    const hubConfig = loadHubConfig({
      GATESYNC_ADMIN_KEY: this.adminKey,
      GATESYNC_SIGNING_KEY_FILE: keyFile,
      GATESYNC_HUB_PORT: '0',
      GATESYNC_DATA_DIR: join(dir, 'hub'),
      // The sample receiver listens on loopback, which the hub refuses for webhooks unless allowed.
      GATESYNC_WEBHOOK_ALLOW_CIDRS: '127.0.0.0/8',
      GATESYNC_AGENT_OFFLINE_AFTER: DEMO_AGENT_OFFLINE_AFTER,
    });
    this.hub = await this.starting(startHub(hubConfig, this.daemonLogger('hub')), async (hub) => {
      await hub.stop();
      if (!hub.nc.isClosed()) await hub.nc.close();
    });
    this.say(`hub up at ${this.hub.url}, with its own nats-server at ${this.hub.natsUrl}`);
    await this.startReceiver();

    const nats = new URL(this.hub.natsUrl.split(',')[0] as string);
    for (const gate of GATES) {
      const proxy = await startDemoProxy({ host: nats.hostname, port: Number(nats.port) });
      this.proxies.set(gate, proxy);
      const tokens = this.scannerTokens.get(gate) ?? [];
      const config = loadAgentConfig({
        GATESYNC_VENUE: VENUE,
        GATESYNC_AGENT_ID: gate,
        GATESYNC_GATE: gate,
        GATESYNC_NATS_URL: proxy.url,
        GATESYNC_TRUSTED_KEYS: `${key.kid}:${key.public_key}`,
        GATESYNC_SCANNER_TOKENS: tokens.map((t, i) => `${gate}-${i + 1}:${t}`).join(','),
        GATESYNC_AGENT_PORT: '0',
        GATESYNC_DB_PATH: join(dir, `agent-${gate}.db`),
        GATESYNC_VERIFY_WORKERS: '2',
      });
      const agent = await this.starting(startAgent(config, this.daemonLogger(`gate ${gate}`)), (a) =>
        a.stop(),
      );
      this.agents.set(gate, agent);
      this.say(
        `gate ${gate} agent up at ${agent.url} (SQLite agent-${gate}.db), NATS through link proxy ${proxy.url}`,
      );
    }
    await this.poll(
      'both gate agents to connect to NATS',
      () => Promise.all(GATES.map((g) => this.status(g))),
      (all) => all.every((s) => s.connected),
      20_000,
    );
    this.say('both gates connected to the hub');
  }

  private async issueTickets(n: number): Promise<void> {
    this.section(`Issuing ${n} tickets through the hub API`);
    const now = Date.now();
    const hour = 3_600_000;
    const notYet = Math.max(2, Math.round(n * 0.02));
    const expired = Math.max(2, Math.round(n * 0.02));
    const gateOnly = Math.max(4, Math.round(n * 0.1));
    const kinds: Kind[] = [
      ...Array<Kind>(notYet).fill('not_yet'),
      ...Array<Kind>(expired).fill('expired'),
      ...Array<Kind>(gateOnly).fill('gate_only'),
      ...Array<Kind>(n - notYet - expired - gateOnly).fill('general'),
    ];
    this.shuffle(kinds);
    const specs = kinds.map((kind, i) => ({ kind, body: this.ticketBody(kind, i, now, hour) }));
    this.say(
      `${n - notYet - expired - gateOnly} for any gate, ${gateOnly} for gate north only, ` +
        `${notYet} for tomorrow's show (not yet valid), ${expired} for yesterday's (expired)`,
    );
    const batchSize = Math.min(500, Math.max(20, Math.ceil(n / 5)));
    const runId = randomBytes(6).toString('hex');
    const t0 = performance.now();
    for (let start = 0, b = 0; start < specs.length; start += batchSize, b++) {
      const part = specs.slice(start, start + batchSize);
      const res = await this.hubApi<{
        issued: number;
        failed: number;
        results: ({ index: number; ticket: TicketView } | { index: number; error: unknown })[];
      }>(
        `/v1/venues/${VENUE}/tickets:batch`,
        { tickets: part.map((s) => s.body) },
        { 'idempotency-key': `demo-${runId}-batch-${b}` },
      );
      if (res.failed > 0) {
        const firstError = res.results.find((r) => 'error' in r);
        throw new Error(`the hub failed ${res.failed} tickets of a batch: ${JSON.stringify(firstError)}`);
      }
      for (const r of res.results) {
        if (!('ticket' in r)) continue;
        const spec = part[r.index];
        if (spec === undefined) continue;
        this.tickets.push({
          id: r.ticket.id,
          qr: r.ticket.qr,
          holder: r.ticket.holder,
          kind: spec.kind,
          gates: r.ticket.gates,
          valid_from: r.ticket.valid_from,
        });
      }
      this.say(
        `issued ${String(this.tickets.length).padStart(String(n).length)}/${n} ` +
          `(POST /v1/venues/${VENUE}/tickets:batch, ${part.length} tickets)`,
      );
    }
    this.issuedTotal = this.tickets.length;
    const issuedAt = performance.now();
    this.say(`the hub signed and published ${n} tickets in ${fmtSeconds(issuedAt - t0)}`);

    const reached = new Map<Gate, number>();
    await this.poll(
      `both gates to hold all ${n} tickets`,
      async () => {
        const all = await Promise.all(GATES.map((g) => this.status(g)));
        for (const [i, s] of all.entries()) {
          const g = GATES[i] as Gate;
          if (!reached.has(g) && s.tickets_held >= n) {
            reached.set(g, performance.now() - issuedAt);
            this.say(`gate ${g} holds ${s.tickets_held}/${n} tickets (event #${s.last_event.seq})`);
          }
        }
        return all;
      },
      (all) => all.every((s) => s.tickets_held >= n),
      30_000,
      100,
    );
    const lag = Math.max(...GATES.map((g) => reached.get(g) ?? 0));
    this.say(
      lag < 50
        ? 'both gates were in sync by the time the hub accepted the last batch'
        : `both gates in sync: ${GATES.map((g) => `${g} ${fmtSeconds(reached.get(g) ?? 0)}`).join(', ')} ` +
            'after the hub accepted the last batch',
    );
  }

  private ticketBody(kind: Kind, i: number, now: number, hour: number): IssueBody {
    const holder = `${FIRST[Math.floor(this.rnd() * FIRST.length)]} ${LAST[Math.floor(this.rnd() * LAST.length)]}`;
    const roll = this.rnd();
    const tier = roll < 0.1 ? 'VIP' : roll < 0.3 ? 'Balcony' : 'GA';
    const body: IssueBody = {
      holder,
      tier,
      ...(tier === 'GA' ? {} : { seat: `${tier === 'VIP' ? 'V' : 'B'}-${(i % 40) + 1}` }),
      valid_from: new Date(now - 2 * hour).toISOString(),
      valid_until: new Date(now + 6 * hour).toISOString(),
    };
    if (kind === 'gate_only') body.gates = [CUT_GATE];
    if (kind === 'not_yet') {
      body.valid_from = new Date(now + 22 * hour).toISOString();
      body.valid_until = new Date(now + 30 * hour).toISOString();
    }
    if (kind === 'expired') {
      body.valid_from = new Date(now - 26 * hour).toISOString();
      body.valid_until = new Date(now - 18 * hour).toISOString();
    }
    return body;
  }

  private shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.rnd() * (i + 1));
      [a[i], a[j]] = [a[j] as T, a[i] as T];
    }
    return a;
  }

  private label(t: DemoTicket, extra = ''): string {
    return `${shortId(t.id)} ${t.holder}${extra === '' ? '' : ` (${extra})`}`;
  }

  private planScans() {
    const n = this.tickets.length;
    const of = (k: Kind) => this.tickets.filter((t) => t.kind === k);
    const general = of('general');
    let gi = 0;
    const take = (count: number) => {
      const part = general.slice(gi, gi + count);
      gi += count;
      return part;
    };
    const refunds = take(Math.max(2, Math.min(5, Math.round(n / 60))));
    const cutRevoke = take(1)[0] as DemoTicket;
    // Scanned nowhere before the cut: admitted at gate north offline, then at gate south online.
    const doubleEntry = take(1)[0] as DemoTicket;
    const offlineCount = Math.max(6, Math.round(n * 0.06));
    const offlineNorth = take(offlineCount);
    const offlineSouth = take(offlineCount);
    const rest = general.slice(gi);

    const main = new Map<Gate, ScanItem[]>(GATES.map((g) => [g, []]));
    const q = (g: Gate) => main.get(g) as ScanItem[];
    const other = (g: Gate): Gate => (g === 'north' ? 'south' : 'north');
    rest.forEach((t, i) => {
      q(GATES[i % 2] as Gate).push({ code: t.qr, expect: 'admit', label: this.label(t) });
    });
    const gateOnly = of('gate_only');
    for (const t of gateOnly) q(CUT_GATE).push({ code: t.qr, expect: 'admit', label: this.label(t) });
    const wrongGate = Math.max(2, Math.round(n / 75));
    for (const t of gateOnly.slice(0, wrongGate)) {
      q(other(CUT_GATE)).push({
        code: t.qr,
        expect: 'wrong_gate',
        label: this.label(t, `ticket is for gate ${t.gates.join(', ')} only`),
      });
    }
    of('not_yet')
      .slice(0, Math.ceil(of('not_yet').length / 2))
      .forEach((t, i) => {
        q(GATES[i % 2] as Gate).push({
          code: t.qr,
          expect: 'not_yet_valid',
          label: this.label(t, `valid from ${t.valid_from.slice(0, 16).replace('T', ' ')} UTC`),
        });
      });
    of('expired')
      .slice(0, Math.ceil(of('expired').length / 2))
      .forEach((t, i) => {
        q(GATES[(i + 1) % 2] as Gate).push({
          code: t.qr,
          expect: 'expired',
          label: this.label(t, "yesterday's show"),
        });
      });
    const forged = Math.max(2, Math.round(n / 75));
    rest.slice(0, forged).forEach((t, i) => {
      q(GATES[i % 2] as Gate).push({
        code: tamperSignature(t.qr),
        expect: 'bad_signature',
        label: `forged copy of ${shortId(t.id)}'s QR code (one signature character changed)`,
      });
    });
    const garbage: ScanItem[] = [
      { code: 'hello world', expect: 'malformed', label: '"hello world"' },
      {
        code: 'https://tickets.example.com/e/8841?ref=qr',
        expect: 'malformed',
        label: 'a URL from some other QR code',
      },
      { code: 'GS1.AAAA.AAAA', expect: 'malformed', label: 'a truncated token "GS1.AAAA.AAAA"' },
      {
        code: `GS1.${randomBytes(40).toString('base64url')}.${randomBytes(64).toString('base64url')}`,
        expect: 'malformed',
        label: 'random bytes shaped like a token',
      },
      { code: 'TKT-000123', expect: 'unknown', label: 'a typed-in code "TKT-000123" that was never issued' },
    ];
    garbage.forEach((item, i) => {
      q(GATES[i % 2] as Gate).push(item);
    });
    for (const g of GATES) this.shuffle(q(g));
    // Second scans of an admitted ticket at the same gate, a little later in the same queue.
    const doubles = Math.max(2, Math.round(n / 60));
    for (let d = 0; d < doubles; d++) {
      const list = q(GATES[d % 2] as Gate);
      const candidates = list
        .map((item, idx) => ({ item, idx }))
        .filter(({ item, idx }) => item.expect === 'admit' && idx < list.length * 0.6);
      const pick = candidates[Math.floor(this.rnd() * candidates.length)];
      if (pick === undefined) continue;
      const at = Math.min(list.length, pick.idx + 12 + Math.floor(this.rnd() * 20));
      list.splice(at, 0, {
        code: pick.item.code,
        expect: 'already_used',
        label: `${pick.item.label} (scanned a second time)`,
      });
    }
    return { main, refunds, cutRevoke, doubleEntry, offlineNorth, offlineSouth };
  }

  private async scanAt(gate: Gate, item: ScanItem, scanner = 0): Promise<ScanAnswer> {
    const r = await this.http<ScanAnswer>(`${this.agent(gate).url}/v1/scans`, {
      token: this.token(gate, scanner),
      body: { code: item.code, direction: 'in' },
    });
    if (r.status !== 200) {
      throw new Error(`scan at ${gate} answered ${r.status}: ${JSON.stringify(r.body)}`);
    }
    this.record(gate, item, r.body);
    return r.body;
  }

  private record(gate: Gate, item: ScanItem, a: ScanAnswer): void {
    const s = this.stats.get(gate) as GateStats;
    s.scans++;
    this.totalScans++;
    this.scanCheckinIds.push(a.checkin_id);
    const outcome = a.decision === 'admit' ? 'admit' : (a.reason ?? 'unknown');
    if (a.decision === 'admit') s.admitted++;
    else s.rejected.set(outcome as Reason, (s.rejected.get(outcome as Reason) ?? 0) + 1);
    const head = `${gate.padEnd(5)}  ${a.decision === 'admit' ? 'ADMIT ' : 'REJECT'} ${
      a.decision === 'admit' ? ''.padEnd(14) : outcome.padEnd(14)
    }`;
    if (outcome !== item.expect) {
      const line = `${head} ${item.label}: UNEXPECTED, expected ${item.expect}`;
      this.unexpected.push(line);
      this.say(line);
    } else if (item.show !== undefined) {
      this.say(
        `${head} ${item.label}${a.unsynced_ticket === true ? ' [unsynced_ticket: true]' : ''} ${item.show}`,
      );
    } else if (a.decision === 'reject') {
      const shown = this.shownReasons.get(outcome as Reason) ?? 0;
      if (shown < 2) {
        this.shownReasons.set(outcome as Reason, shown + 1);
        this.say(`${head} ${item.label}`);
      }
    }
    if (this.totalScans % 50 === 0) {
      const admitted = GATES.reduce((sum, g) => sum + (this.stats.get(g) as GateStats).admitted, 0);
      this.say(
        `${String(this.totalScans).padStart(4)} scans so far (${GATES.map(
          (g) => `${g} ${(this.stats.get(g) as GateStats).scans}`,
        ).join(', ')}): ${admitted} admitted, ${this.totalScans - admitted} rejected`,
      );
    }
  }

  /** Scanners of one gate working through a queue, each scan answered before the scanner takes the next. */
  private async runScanners(gate: Gate, items: ScanItem[], scanners: number, pause: [number, number]) {
    let next = 0;
    const worker = async (w: number) => {
      for (let i = next++; i < items.length; i = next++) {
        await this.scanAt(gate, items[i] as ScanItem, w);
        const [lo, hi] = pause;
        await this.sleep(lo + Math.floor(this.rnd() * (hi - lo + 1)));
      }
    };
    await Promise.all(Array.from({ length: scanners }, (_v, w) => worker(w)));
  }

  private async doorsOpen(main: Map<Gate, ScanItem[]>): Promise<void> {
    const total = GATES.reduce((sum, g) => sum + (main.get(g)?.length ?? 0), 0);
    this.section(`Doors open: two scanners at each gate, ${total} scans`);
    this.say('showing the first two rejects of each kind, and a progress line every 50 scans');
    const t0 = performance.now();
    await Promise.all(GATES.map((g) => this.runScanners(g, main.get(g) ?? [], 2, this.pauseMs)));
    this.say(`doors phase done: ${total} scans in ${fmtSeconds(performance.now() - t0)}`);
  }

  private async refunds(refunds: DemoTicket[]): Promise<void> {
    this.section(`Refunds: revoking ${refunds.length} tickets at the hub`);
    for (const t of refunds) {
      await this.hubApi(`/v1/venues/${VENUE}/tickets/${t.id}/revoke`, { reason: 'refunded' });
    }
    const revokedAt = performance.now();
    this.say(
      `revoked ${refunds.map((t) => shortId(t.id)).join(', ')} (POST .../tickets/{id}/revoke, reason "refunded")`,
    );
    for (const g of GATES) {
      await this.poll(
        `gate ${g} to receive the revocations`,
        () => Promise.all(refunds.map((t) => this.preview(g, t.qr))),
        (all) => all.every((p) => p.reason === 'revoked'),
        20_000,
        25,
      );
      this.say(
        `gate ${g} has all ${refunds.length} revocations (${fmtSeconds(performance.now() - revokedAt)})`,
      );
    }
    for (const [i, t] of refunds.entries()) {
      await this.scanAt(GATES[i % 2] as Gate, {
        code: t.qr,
        expect: 'revoked',
        label: this.label(t),
        ...(i < 2 ? { show: '(refunded; its holder tries anyway)' } : {}),
      });
    }
  }

  private async cutLink(plan: ReturnType<Demo['planScans']>): Promise<void> {
    const gate = CUT_GATE;
    const otherGate: Gate = gate === 'north' ? 'south' : 'north';
    const proxy = this.proxies.get(gate) as DemoProxy;
    this.section(`Uplink cut: gate ${gate} offline for ${this.cutMs / 1000} s`);
    const before = { ...(this.stats.get(gate) as GateStats) };
    proxy.cut();
    const cutAt = performance.now();
    this.cutAtWall = Date.now();
    this.say(`cut the link between gate ${gate} and NATS (every connection through its proxy dropped)`);
    const st = await this.poll(
      `gate ${gate} to notice the cut`,
      () => this.status(gate),
      (s) => !s.connected,
      10_000,
      25,
    );
    this.say(
      `gate ${gate} GET /v1/status: connected: ${st.connected}, tickets_held: ${st.tickets_held}, ` +
        `last event #${st.last_event.seq}, checkins_unsent: ${st.checkins_unsent}`,
    );

    // Scanning goes on at both gates for the whole cut.
    const earlier = this.tickets.find(
      (t) => t.kind === 'gate_only' && (plan.main.get(gate) ?? []).some((i) => i.code === t.qr),
    );
    const offlineItems: ScanItem[] = plan.offlineNorth.map((t, i) => ({
      code: t.qr,
      expect: 'admit' as const,
      label: this.label(t),
      ...(i < 2 ? { show: `(offline: decided from gate ${gate}'s own store)` } : {}),
    }));
    if (earlier !== undefined) {
      offlineItems.splice(Math.floor(offlineItems.length / 2), 0, {
        code: earlier.qr,
        expect: 'already_used',
        label: this.label(earlier),
        show: '(admitted earlier and tries again; offline, the store still knows who is inside)',
      });
    }
    const otherItems: ScanItem[] = plan.offlineSouth.map((t) => ({
      code: t.qr,
      expect: 'admit' as const,
      label: this.label(t),
    }));
    const pace = (len: number): [number, number] => {
      const p = (this.cutMs * 0.9) / (len + 1);
      return [Math.floor(p * 0.8), Math.floor(p * 1.1)];
    };
    const background = Promise.all([
      this.runScanners(gate, offlineItems, 1, pace(offlineItems.length)),
      this.runScanners(otherGate, otherItems, 1, pace(otherItems.length)),
    ]);
    background.catch(() => undefined);
    // Every few seconds, what the offline gate says about itself.
    let ticking = true;
    const tickMs = this.opts.fast ? 1_000 : 2_000;
    const ticker = (async () => {
      for (let k = 1; ; k++) {
        await this.sleep(cutAt + k * tickMs - performance.now());
        if (!ticking || performance.now() - cutAt > this.cutMs - tickMs / 2) return;
        const s = await this.status(gate);
        const now = this.stats.get(gate) as GateStats;
        const scans = now.scans - before.scans;
        const admitted = now.admitted - before.admitted;
        this.say(
          `gate ${gate} offline for ${fmtSeconds(performance.now() - cutAt)}: /v1/status connected: ` +
            `${s.connected}; ${scans} scans answered since the cut (${admitted} admitted, ` +
            `${scans - admitted} rejected), checkins_unsent: ${s.checkins_unsent}`,
        );
      }
    })();
    ticker.catch(() => undefined);

    await this.sleep(this.cutMs * 0.15);
    // Two tickets bought while gate north is offline.
    const now = Date.now();
    const late: DemoTicket[] = [];
    for (const holder of ['Hedy Lamarr', 'Katherine Johnson']) {
      const v = await this.hubApi<TicketView>(`/v1/venues/${VENUE}/tickets`, {
        holder,
        tier: 'GA',
        valid_from: new Date(now - 3_600_000).toISOString(),
        valid_until: new Date(now + 6 * 3_600_000).toISOString(),
      });
      late.push({
        id: v.id,
        qr: v.qr,
        holder: v.holder,
        kind: 'late',
        gates: v.gates,
        valid_from: v.valid_from,
      });
    }
    this.issuedTotal += late.length;
    const [lateA, lateB] = late as [DemoTicket, DemoTicket];
    this.say(
      `sold 2 tickets at the door while ${gate} is offline: ${this.label(lateA)}, ${this.label(lateB)}`,
    );
    await this.poll(
      `gate ${otherGate} to receive the new tickets`,
      () => Promise.all(late.map((t) => this.preview(otherGate, t.qr))),
      (all) => all.every((p) => p.decision === 'admit' && p.unsynced_ticket !== true),
      10_000,
      25,
    );
    const a = await this.scanAt(gate, {
      code: lateA.qr,
      expect: 'admit',
      label: this.label(lateA),
      show: `(gate ${gate} has never seen this ticket: admitted by its signed token alone)`,
    });
    if (a.unsynced_ticket !== true) {
      const line = `${gate} admitted ${shortId(lateA.id)} without unsynced_ticket: true: UNEXPECTED`;
      this.unexpected.push(line);
      this.say(line);
    }
    await this.scanAt(otherGate, {
      code: lateB.qr,
      expect: 'admit',
      label: this.label(lateB),
      show: `(gate ${otherGate} is online and already synced it)`,
    });

    const cr = plan.cutRevoke;
    await this.hubApi(`/v1/venues/${VENUE}/tickets/${cr.id}/revoke`, { reason: 'refunded' });
    this.say(`revoked ${this.label(cr)} at the hub while ${gate} is offline`);
    await this.poll(
      `gate ${otherGate} to receive the revocation`,
      () => this.preview(otherGate, cr.qr),
      (p) => p.reason === 'revoked',
      10_000,
      25,
    );
    const stale = await this.preview(gate, cr.qr);
    this.say(
      `  GET /v1/tickets/{code}: ${otherGate} says revoked; ` +
        `${gate} (offline) says ${stale.decision}${stale.reason === undefined ? '' : ` ${stale.reason}`} ` +
        '(it cannot know yet)',
    );

    await this.doubleEntryWhileCut(plan.doubleEntry, gate, otherGate);

    await background;
    await this.sleep(cutAt + this.cutMs - performance.now());
    ticking = false;
    await ticker;
    const during = await this.status(gate);
    const after = this.stats.get(gate) as GateStats;
    this.say(
      `gate ${gate} after ${fmtSeconds(performance.now() - cutAt)} offline: connected: ${during.connected}, ` +
        `answered ${after.scans - before.scans} scans meanwhile, checkins_unsent: ${during.checkins_unsent}`,
    );

    const jsm = await jetstreamManager((this.hub as HubHandle).nc);
    const target = (await jsm.streams.info(STREAMS.tickets)).state.last_seq;
    proxy.restore();
    const restoredAt = performance.now();
    this.restoredAtWall = Date.now();
    this.say(`link restored; the hub's ticket stream is at event #${target}`);
    let reconnectMs: number | undefined;
    const caught = await this.poll(
      `gate ${gate} to catch up to event #${target}`,
      async () => {
        const s = await this.status(gate);
        if (s.connected && reconnectMs === undefined) reconnectMs = performance.now() - restoredAt;
        return s;
      },
      (s) => s.connected && s.last_event.seq >= target,
      30_000,
      25,
    );
    const catchUpMs = performance.now() - restoredAt;
    this.say(
      `gate ${gate} reconnected after ${fmtSeconds(reconnectMs ?? catchUpMs)} and caught up after ` +
        `${fmtSeconds(catchUpMs)}: event #${caught.last_event.seq}, ${caught.tickets_held} tickets held`,
    );
    // The check-ins north recorded while offline wait in its outbox until the link is back.
    let drainedMs: number | undefined;
    try {
      const drained = await this.poll(
        `gate ${gate}'s outbox to drain`,
        () => this.status(gate),
        (s) => s.checkins_unsent === 0,
        15_000,
        25,
      );
      drainedMs = performance.now() - restoredAt;
      this.say(
        `gate ${gate}'s outbox drained ${fmtSeconds(drainedMs)} after the restore: checkins_unsent: ` +
          `${drained.checkins_unsent} (it was ${during.checkins_unsent} while offline)`,
      );
    } catch (err: unknown) {
      if (err instanceof Interrupted) throw err;
      this.say(`  ! gate ${gate}'s outbox did not drain: ${errorMessage(err)}`);
    }
    this.cutInfo = {
      offlineMs: restoredAt - cutAt,
      reconnectMs: reconnectMs ?? catchUpMs,
      catchUpMs,
      drainedMs,
      scans: after.scans - before.scans,
    };
    await this.scanAt(gate, {
      code: cr.qr,
      expect: 'revoked',
      label: this.label(cr),
      show: '(the revocation made while offline arrived with the catch-up)',
    });
    await this.scanAt(gate, {
      code: lateA.qr,
      expect: 'already_used',
      label: this.label(lateA),
      show: '(the ticket admitted offline is now synced, and its entry still counts)',
    });
  }

  /**
   * The one double entry the demo makes on purpose: a ticket nobody has scanned yet is admitted at the
   * offline gate, from its own store, and then at the online gate, which has no way to know: a gate
   * learns of another gate's entries only from their check-ins, and the offline gate's check-in is still
   * in its outbox. Both gates are right by what they know; the hub finds the conflict once both check-ins
   * reach it.
   */
  private async doubleEntryWhileCut(t: DemoTicket, gate: Gate, otherGate: Gate): Promise<void> {
    this.say(
      `double entry, on purpose: ${this.label(t)} has not been scanned anywhere yet; ` +
        `it is scanned at gate ${gate} (offline), then at gate ${otherGate}`,
    );
    const answers = new Map<Gate, ScanAnswer>();
    this.doubleEntry = { ticket: t, answers };
    answers.set(
      gate,
      await this.scanAt(gate, {
        code: t.qr,
        expect: 'admit',
        label: this.label(t),
        show: `(offline: gate ${gate}'s store has the ticket valid and not inside)`,
      }),
    );
    const [, unsent] = await Promise.all([this.sleep(150), this.status(gate).then((s) => s.checkins_unsent)]);
    answers.set(
      otherGate,
      await this.scanAt(otherGate, {
        code: t.qr,
        expect: 'admit',
        label: this.label(t),
        show: `(the same ticket at gate ${otherGate}, online: it has no record of the entry at ${gate})`,
      }),
    );
    this.say(
      `  both admitted: gate ${gate} decided alone from its own store, and its check-in is one of the ` +
        `${unsent} in its outbox;`,
    );
    this.say(
      `  gate ${otherGate} learns of another gate's entries only from their check-ins through NATS, ` +
        `and that one cannot leave ${gate} until the link is back`,
    );
  }

  /**
   * After the restore: once both outboxes are empty, waits until the hub holds a check-in for every scan
   * the demo made, has judged them all, and lists the deliberate double entry as a conflict; then shows
   * the conflict and the gates as the hub sees them.
   */
  private async checkinsAtHub(): Promise<void> {
    this.section('Check-ins at the hub');
    const empty = await this.poll(
      "both gates' outboxes to empty",
      () => Promise.all(GATES.map((g) => this.status(g))),
      (all) => all.every((s) => s.checkins_unsent === 0),
      HUB_REPLAY_TIMEOUT_MS,
      50,
    );
    const emptyAt = performance.now();
    this.say(
      `both outboxes are empty (${GATES.map((g, i) => `${g} ${empty[i]?.checkins_total} check-ins`).join(', ')}` +
        `, ${this.totalScans} scans made)`,
    );

    // The agents' view comes from their heartbeats, every few seconds: wait for ones sent after the restore
    // (side by side with the check-ins below), so the table shows the gates as they are now.
    const agentsView = this.freshAgents();
    agentsView.catch(() => undefined);

    const de = this.doubleEntry;
    const deadline = Date.now() + HUB_REPLAY_TIMEOUT_MS;
    const ours = (r: HubReplay) => r.conflicts.find((c) => de !== undefined && c.ticket_id === de.ticket.id);
    let complete = false;
    let lastError: string | undefined;
    for (;;) {
      try {
        const [ci, cf, judged] = await Promise.all([
          this.hubPages<'checkins', HubCheckin>(`/v1/venues/${VENUE}/checkins`, 'checkins'),
          this.hubPages<'conflicts', HubConflict>(`/v1/venues/${VENUE}/conflicts`, 'conflicts'),
          this.hubJudged(),
        ]);
        this.hubReplay = { checkins: ci.items, pages: ci.pages, conflicts: cf.items, judged };
        lastError = undefined;
        if (
          ci.items.length >= this.totalScans &&
          judged >= this.totalScans &&
          ours(this.hubReplay) !== undefined
        ) {
          complete = true;
          break;
        }
      } catch (err: unknown) {
        if (err instanceof Interrupted) throw err;
        lastError = errorMessage(err);
      }
      if (Date.now() >= deadline) break;
      await this.sleep(100);
    }
    const r = this.hubReplay;
    const took = fmtSeconds(performance.now() - emptyAt);
    if (r === undefined) {
      this.say(
        `  ! COULD NOT READ THE HUB'S CHECK-INS within ${fmtSeconds(HUB_REPLAY_TIMEOUT_MS)}: ${lastError}`,
      );
    } else {
      this.say(
        `${complete ? '' : '  ! TIMED OUT: '}the hub holds ${r.checkins.length} check-ins ` +
          `(GET /v1/venues/${VENUE}/checkins?limit=${HUB_PAGE_LIMIT}, ${r.pages} page${r.pages === 1 ? '' : 's'}) ` +
          `and has judged ${r.judged} (gatesync_hub_checkins_processed_total), ${took} after the outboxes emptied` +
          (lastError === undefined ? '' : ` (last error: ${lastError})`),
      );
      this.showConflicts(r.conflicts);
    }

    const agents = await agentsView.catch((err: unknown) => {
      if (err instanceof Interrupted) throw err;
      this.say(`  ! GET /v1/venues/${VENUE}/agents failed: ${errorMessage(err)}`);
      return undefined;
    });
    if (agents !== undefined) this.showAgents(agents.list, agents.fresh, performance.now() - emptyAt);
  }

  /** Sum of the hub's gatesync_hub_checkins_processed_total over all its labels. */
  private async hubJudged(): Promise<number> {
    const body = await this.hubGet<string>('/metrics');
    let total = 0;
    for (const m of String(body).matchAll(/^gatesync_hub_checkins_processed_total(?:\{[^}]*\})? (\S+)$/gm)) {
      total += Number(m[1]);
    }
    return total;
  }

  private showConflicts(conflicts: HubConflict[]): void {
    const de = this.doubleEntry;
    this.say(
      `GET /v1/venues/${VENUE}/conflicts: ${conflicts.length} conflict${conflicts.length === 1 ? '' : 's'}`,
    );
    const time = (iso: string) => iso.slice(11, 23);
    for (const c of conflicts) {
      const t = this.tickets.find((x) => x.id === c.ticket_id);
      this.say(
        `  ticket ${t === undefined ? shortId(c.ticket_id) : this.label(t)} admitted at two gates with no exit between ` +
          `(conflict ${shortId(c.id)}, detected ${time(c.detected_at)} UTC)`,
      );
      for (const [which, side] of [
        ['first ', c.first],
        ['second', c.second],
      ] as const) {
        this.say(
          `    ${which} to reach the hub: gate ${side.gate.padEnd(5)} scanned at ${time(side.scanned_at)} UTC ` +
            `(check-in ${shortId(side.checkin_id)})`,
        );
      }
      const [early, late] =
        c.first.scanned_at <= c.second.scanned_at ? [c.first, c.second] : [c.second, c.first];
      if (early !== c.first) {
        this.say(
          `    gate ${early.gate} scanned it ${fmtSeconds(Date.parse(late.scanned_at) - Date.parse(early.scanned_at))} ` +
            `earlier, but its check-in reached the hub later: it waited in the outbox until the link was back`,
        );
      }
      if (de !== undefined && c.ticket_id === de.ticket.id) {
        const mine = new Set([...de.answers.values()].map((a) => a.checkin_id));
        if (!mine.has(c.first.checkin_id) || !mine.has(c.second.checkin_id) || mine.size !== 2) {
          const line = `conflict ${c.id} does not pair the two admissions the demo made (${[...mine].join(', ')})`;
          this.failures.push(line);
          this.say(`  ! ${line.toUpperCase()}`);
        }
      }
    }
  }

  /**
   * `GET /v1/venues/{venue}/agents`, polled until each gate's heartbeat shows it online with an empty
   * outbox and every ticket, and the cut gate's was received after the restore; at most a little over one
   * heartbeat interval. Returns the last answer either way, and whether it got there.
   */
  private async freshAgents(): Promise<{ list: HubAgent[]; fresh: boolean }> {
    let last: HubAgent[] = [];
    const restored = this.restoredAtWall ?? 0;
    try {
      last = await this.poll(
        'heartbeats sent after the restore',
        async () => {
          last = (await this.hubGet<{ agents: HubAgent[] }>(`/v1/venues/${VENUE}/agents`)).agents;
          return last;
        },
        (agents) =>
          GATES.every((g) => {
            const a = agents.find((x) => x.gate === g);
            return (
              a?.online === true &&
              a.outbox_depth === 0 &&
              a.tickets_held >= this.issuedTotal &&
              (g !== CUT_GATE || Date.parse(a.last_heartbeat) >= restored)
            );
          }),
        HEARTBEAT_INTERVAL_MS + 3_000,
        100,
      );
      return { list: last, fresh: true };
    } catch (err: unknown) {
      if (err instanceof Interrupted) throw err;
      if (last.length === 0) throw err;
      return { list: last, fresh: false };
    }
  }

  private showAgents(agents: HubAgent[], fresh: boolean, waitedMs: number): void {
    this.say(
      `GET /v1/venues/${VENUE}/agents: each gate's latest heartbeat (one every ` +
        `${HEARTBEAT_INTERVAL_MS / 1000} s; ${
          fresh
            ? `waited ${fmtSeconds(waitedMs)} for gate ${CUT_GATE}'s first since the restore)`
            : `gave up after ${fmtSeconds(waitedMs)}): NOT YET UPDATED SINCE THE RESTORE`
        }`,
    );
    const now = Date.now();
    for (const a of agents) {
      this.say(
        `  gate ${a.gate.padEnd(5)} ${a.online ? 'online ' : 'OFFLINE'}  outbox_depth ${a.outbox_depth}  ` +
          `tickets_held ${a.tickets_held}  sync_pending ${a.sync_pending ?? '-'}  ` +
          `checkins_total ${a.checkins_total}  heartbeat ${fmtSeconds(now - Date.parse(a.last_heartbeat))} ago`,
      );
    }
  }

  // ---------------------------------------------------------------- the webhook subscriber

  /**
   * Starts the sample receiver of examples/webhook-receiver.ts on loopback, registers it with the hub as
   * an endpoint (the answer carries its signing secret, shown once), and has the hub send it a
   * `webhook.test` message to see the path work before the doors open.
   */
  private async startReceiver(): Promise<void> {
    const rx = await this.starting(
      startWebhookReceiver({
        host: '127.0.0.1',
        port: 0,
        onWebhook: (w) => this.onWebhook(w),
        onRefused: (reason, message) => {
          // The first few are shown; the rest are counted in the summary.
          const n = Object.values(this.receiver?.stats.refused ?? {}).reduce((a, b) => a + b, 0);
          if (n > 3) return;
          this.say(
            `  ! WEBHOOK REFUSED by the sample receiver (${reason}): ${message}` +
              (n === 3 ? ' [further refusals are counted, not shown]' : ''),
          );
        },
      }),
      (r) => r.close(),
    );
    this.receiver = rx;
    const ep = await this.hubApi<{ id: string; url: string; secret: string }>('/v1/webhooks/endpoints', {
      url: rx.url,
      description: 'gatesync demo: examples/webhook-receiver.ts',
      event_types: [...WEBHOOK_EVENT_TYPES],
    });
    rx.setSecret(ep.secret);
    this.say(
      `sample webhook receiver (examples/webhook-receiver.ts) up at ${rx.url}, registered as endpoint ` +
        `${ep.id} (POST /v1/webhooks/endpoints; secret ${ep.secret.slice(0, 10)}…) for ` +
        WEBHOOK_EVENT_TYPES.join(', '),
    );
    const t0 = performance.now();
    await this.hubApi(`/v1/webhooks/endpoints/${ep.id}/test`, {});
    await this.poll(
      'the webhook.test message at the receiver',
      async () => this.webhooks.some((w) => w.type === 'webhook.test'),
      (arrived) => arrived,
      10_000,
      20,
    );
    this.say(
      `webhook.test arrived ${fmtSeconds(performance.now() - t0)} after POST .../test; signature verified ` +
        `(HMAC-SHA256 with the endpoint's secret, timestamp within 5 minutes)`,
    );
  }

  /** Each verified webhook, once per webhook-id: progress lines as they arrive. */
  private onWebhook(w: Webhook): void {
    this.webhooks.push(w);
    const d = w.data;
    const gate = typeof d['gate'] === 'string' ? d['gate'] : '?';
    switch (w.type) {
      case 'checkin.created': {
        if (typeof d['checkin_id'] === 'string') this.createdCheckinIds.add(d['checkin_id']);
        const n = this.createdCheckinIds.size;
        const scannedAt = typeof d['scanned_at'] === 'string' ? Date.parse(d['scanned_at']) : Number.NaN;
        const cut = this.cutAtWall;
        if (
          gate === CUT_GATE &&
          cut !== undefined &&
          scannedAt >= cut &&
          (this.restoredAtWall === undefined || scannedAt < this.restoredAtWall)
        ) {
          const o = this.offlineDelivered;
          o.count++;
          if (o.firstAtWall === undefined) {
            o.firstAtWall = Date.now();
            const since =
              this.restoredAtWall === undefined
                ? ''
                : ` ${fmtSeconds(o.firstAtWall - this.restoredAtWall)} after the restore`;
            this.say(
              `webhook checkin.created for a scan gate ${gate} answered offline arrived${since}: ` +
                'its check-in left the outbox once the link was back',
            );
          }
        }
        if (n % WEBHOOK_PROGRESS_EVERY === 0) {
          this.say(`webhooks: ${n} checkin.created received and verified by the sample receiver so far`);
        }
        return;
      }
      case 'checkin.conflict': {
        const ticketId = typeof d['ticket_id'] === 'string' ? d['ticket_id'] : '';
        const t = this.tickets.find((x) => x.id === ticketId);
        const side = (k: string) => {
          const v = d[k];
          return typeof v === 'object' && v !== null && 'gate' in v ? String(v.gate) : '?';
        };
        this.say(
          `webhook checkin.conflict ${shortId(w.id)}: ticket ${t === undefined ? shortId(ticketId) : this.label(t)} ` +
            `admitted at gate ${side('first')} and gate ${side('second')} (signature verified)`,
        );
        return;
      }
      case 'agent.offline':
      case 'agent.online': {
        const cut = this.cutAtWall;
        const restored = this.restoredAtWall;
        const when =
          w.type === 'agent.offline'
            ? cut === undefined
              ? ''
              : `, ${fmtSeconds(Date.now() - cut)} after the cut`
            : restored === undefined
              ? ''
              : `, ${fmtSeconds(Date.now() - restored)} after the restore`;
        const hb =
          typeof d['last_heartbeat_at'] === 'string' ? Date.parse(d['last_heartbeat_at']) : Number.NaN;
        this.say(
          `webhook ${w.type}: gate ${gate}${when}` +
            (w.type === 'agent.offline' && Number.isFinite(hb)
              ? ` (GATESYNC_AGENT_OFFLINE_AFTER ${DEMO_AGENT_OFFLINE_AFTER}; its last heartbeat ${fmtSeconds(Date.now() - hb)} ago)`
              : ''),
        );
        return;
      }
      default:
        return;
    }
  }

  /** Refusals that mean a delivery failed verification. */
  private verificationFailures(): number {
    const refused = this.receiver?.stats.refused ?? {};
    return VERIFICATION_FAILURES.reduce((acc, r) => acc + (refused[r] ?? 0), 0);
  }

  /**
   * Waits (at most WEBHOOK_WAIT_MS) until the receiver holds a checkin.created for every admission the hub
   * holds, the conflicts the hub lists, and, when the cut gate was reported offline, it coming back.
   */
  private async webhooksAtReceiver(): Promise<void> {
    this.section('Webhooks at the sample receiver');
    const rx = this.receiver;
    const hub = this.hubReplay;
    if (rx === undefined || hub === undefined) {
      this.say('  ! nothing to compare: the receiver or the hub check-ins are missing');
      return;
    }
    const admitted = hub.checkins.filter((c) => c.decision === 'admit');
    const missing = () => admitted.filter((c) => !this.createdCheckinIds.has(c.id)).length;
    const count = (type: string, gate?: string) =>
      this.webhooks.filter((w) => w.type === type && (gate === undefined || w.data['gate'] === gate)).length;
    const t0 = performance.now();
    const done = () =>
      missing() === 0 &&
      count('checkin.conflict') >= hub.conflicts.length &&
      count('agent.online', CUT_GATE) >= count('agent.offline', CUT_GATE);
    try {
      await this.poll(
        'the webhooks of everything the hub holds',
        async () => done(),
        (ok) => ok,
        WEBHOOK_WAIT_MS,
        50,
      );
    } catch (err: unknown) {
      if (err instanceof Interrupted) throw err;
    }
    const took = fmtSeconds(performance.now() - t0);
    const m = missing();
    this.say(
      m === 0
        ? `the receiver holds a checkin.created for each of the ${admitted.length} admitted check-ins at the hub ` +
            `(waited ${took} after the hub had them all)`
        : `  ! TIMED OUT after ${took}: ${m} of the hub's ${admitted.length} admitted check-ins have no checkin.created at the receiver`,
    );
    const o = this.offlineDelivered;
    const ci = this.cutInfo;
    if (ci !== undefined) {
      this.say(
        `${o.count} of them are admissions gate ${CUT_GATE} made while offline, delivered after the restore ` +
          '(each webhook-id is derived from the check-in id, so a re-sent check-in is never a second message)',
      );
    }
    const s = rx.stats;
    const byType = Object.entries(s.byType)
      .map(([type, n]) => `${n} ${type}`)
      .join(', ');
    this.say(
      `the receiver verified ${s.verified} of ${s.received} deliveries (HMAC-SHA256 over id.timestamp.body, ` +
        `constant-time compare): ${s.distinct} distinct webhook-ids (${byType}), ${s.duplicates} repeats dropped` +
        (this.verificationFailures() > 0 ? `; ${this.verificationFailures()} FAILED VERIFICATION` : ''),
    );
    if (count('agent.offline', CUT_GATE) === 0 && ci !== undefined) {
      this.say(
        `(no agent.offline for gate ${CUT_GATE}: its heartbeats stopped for less than ${DEMO_AGENT_OFFLINE_AFTER})`,
      );
    }
  }

  private async summary(): Promise<void> {
    this.section('Summary');
    // Let the last scans' check-ins leave the outboxes, if they are being sent; the numbers are shown as
    // /v1/status gives them either way.
    await this.poll(
      'the outboxes to settle',
      () => Promise.all(GATES.map((g) => this.status(g))),
      (all) => all.every((s) => s.checkins_unsent === 0),
      3_000,
      50,
    ).catch((err: unknown) => {
      if (err instanceof Interrupted) throw err;
    });
    const status = new Map<Gate, AgentStatus>();
    const applied = new Map<Gate, number>();
    for (const g of GATES) {
      status.set(g, await this.status(g));
      const m = await this.http<string>(`${this.agent(g).url}/metrics`, { token: this.token(g) });
      const match = /^gatesync_agent_ticket_events_applied_total (\d+)/m.exec(String(m.body));
      applied.set(g, match === null ? Number.NaN : Number(match[1]));
    }
    const st = (g: Gate) => this.stats.get(g) as GateStats;
    const sum = (f: (g: Gate) => number) => GATES.reduce((acc, g) => acc + f(g), 0);
    const rows: [string, ...string[]][] = [['', ...GATES, 'total']];
    const row = (label: string, f: (g: Gate) => string, total = '') => {
      rows.push([label, ...GATES.map(f), total]);
    };
    row('tickets issued (hub)', () => '', String(this.issuedTotal));
    row('scans made', (g) => String(st(g).scans), String(sum((g) => st(g).scans)));
    row('  admitted', (g) => String(st(g).admitted), String(sum((g) => st(g).admitted)));
    row(
      '  rejected',
      (g) => String(st(g).scans - st(g).admitted),
      String(sum((g) => st(g).scans - st(g).admitted)),
    );
    for (const reason of REASON_ORDER) {
      const total = sum((g) => st(g).rejected.get(reason) ?? 0);
      if (total === 0) continue;
      row(`    ${reason}`, (g) => String(st(g).rejected.get(reason) ?? 0), String(total));
    }
    row('ticket events synced', (g) => String(applied.get(g)));
    row('tickets held', (g) => String(status.get(g)?.tickets_held));
    row('link cuts', (g) => String(this.proxies.get(g)?.cuts ?? 0));
    const ci = this.cutInfo;
    row('  offline for', (g) => (g === CUT_GATE && ci !== undefined ? fmtSeconds(ci.offlineMs) : '-'));
    row('  scans answered offline', (g) => (g === CUT_GATE && ci !== undefined ? String(ci.scans) : '-'));
    row('  reconnected after', (g) =>
      g === CUT_GATE && ci !== undefined ? fmtSeconds(ci.reconnectMs) : '-',
    );
    row('  caught up after', (g) => (g === CUT_GATE && ci !== undefined ? fmtSeconds(ci.catchUpMs) : '-'));
    row('  outbox drained after', (g) =>
      g === CUT_GATE && ci?.drainedMs !== undefined ? fmtSeconds(ci.drainedMs) : '-',
    );
    row(
      'check-ins recorded (unsent outbox)',
      (g) => `${status.get(g)?.checkins_total} (${status.get(g)?.checkins_unsent})`,
    );
    const hub = this.hubReplay;
    row(
      'check-ins at the hub',
      (g) => (hub === undefined ? '?' : String(hub.checkins.filter((c) => c.gate === g).length)),
      hub === undefined ? '?' : String(hub.checkins.length),
    );
    const rx = this.receiver?.stats;
    const whCount = (type: string, g?: Gate) =>
      this.webhooks.filter((w) => w.type === type && (g === undefined || w.data['gate'] === g)).length;
    const admittedAtHub = (g?: Gate) =>
      hub === undefined
        ? '?'
        : String(
            hub.checkins.filter((c) => c.decision === 'admit' && (g === undefined || c.gate === g)).length,
          );
    if (rx !== undefined) {
      const refused = Object.values(rx.refused).reduce((a, b) => a + b, 0);
      row('webhooks received (POSTs)', () => '', String(rx.received));
      row('  verified', () => '', String(rx.verified));
      row('  refused', () => '', String(refused));
      row('  distinct webhook-ids', () => '', String(rx.distinct));
      row('  duplicates dropped', () => '', String(rx.duplicates));
      row(
        'checkin.created received',
        (g) => String(whCount('checkin.created', g)),
        String(whCount('checkin.created')),
      );
      row('check-ins admitted at the hub', (g) => admittedAtHub(g), admittedAtHub());
      row('checkin.conflict received', () => '', String(whCount('checkin.conflict')));
      row(
        'agent.offline / agent.online',
        (g) => `${whCount('agent.offline', g)} / ${whCount('agent.online', g)}`,
      );
    }
    const widths = (rows[0] ?? []).map((_c, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
    for (const r of rows) {
      const [label, ...cells] = r;
      process.stdout.write(
        `  ${label.padEnd(widths[0] ?? 0)}  ${cells.map((c, i) => c.padStart(Math.max(8, widths[i + 1] ?? 0))).join('  ')}\n`,
      );
    }
    process.stdout.write('\n');
    for (const g of GATES) {
      const s = status.get(g);
      if (s !== undefined && s.checkins_total !== st(g).scans) {
        this.unexpected.push(`gate ${g} recorded ${s.checkins_total} check-ins for ${st(g).scans} scans`);
      }
    }
    this.say(
      this.unexpected.length === 0
        ? 'every scan got the decision the demo expected'
        : `${this.unexpected.length} scans did NOT get the expected decision (see the UNEXPECTED lines above)`,
    );
    const repeated = [...this.warnings.values()].filter((w) => w.count > 1);
    for (const w of repeated) this.say(`daemon ${w.shown}: ${w.count} times in all`);
    const unsent = sum((g) => status.get(g)?.checkins_unsent ?? 0);
    const recorded = sum((g) => status.get(g)?.checkins_total ?? 0);
    this.say(
      unsent === 0
        ? `all ${recorded} check-ins left the gates' outboxes for the hub (checkins_unsent 0 at both gates)`
        : `${unsent} of ${recorded} check-ins are still in the gates' outboxes (checkins_unsent)`,
    );
    if (this.unexpected.length > 0) {
      this.failures.push(`${this.unexpected.length} scans did not get the expected decision`);
    }

    // Every scan's check-in, by the id its answer gave, against what the hub lists.
    const atHub = new Map<string, number>();
    for (const c of hub?.checkins ?? []) atHub.set(c.id, (atHub.get(c.id) ?? 0) + 1);
    const scans = this.totalScans;
    const hubCount = hub?.checkins.length ?? 0;
    const lost = this.scanCheckinIds.filter((id) => id === undefined || !atHub.has(id)).length;
    const duplicates = [...atHub.values()].filter((n) => n > 1).length;
    const conflicts = hub?.conflicts.length ?? 0;
    const mine = new Set(this.scanCheckinIds);
    const strangers = [...atHub.keys()].filter((id) => !mine.has(id)).length;
    const loud = (ok: boolean, why: string) => {
      if (ok) return '';
      this.failures.push(why);
      return `   <<< FAILED: ${why}`;
    };
    const lines = [
      `scans made ${scans}`,
      `check-ins at the hub ${hubCount}${loud(
        hub !== undefined && hubCount === scans,
        hub === undefined
          ? 'the hub could not be read'
          : `${hubCount} check-ins at the hub for ${scans} scans` +
              (strangers > 0 ? ` (${strangers} not from any scan the demo made)` : ''),
      )}`,
      `lost ${lost}${loud(lost === 0, `${lost} ${lost === 1 ? "scan's check-in is" : "scans' check-ins are"} not at the hub`)}`,
      `duplicates ${duplicates}${loud(duplicates === 0, `${duplicates} check-in id${duplicates === 1 ? ' appears' : 's appear'} more than once at the hub`)}`,
      `conflicts found ${conflicts}${loud(conflicts === 1, `${conflicts} conflicts at the hub where the demo made exactly 1`)}`,
    ];
    if (rx !== undefined) {
      const failed = this.verificationFailures();
      const created = this.createdCheckinIds.size;
      const admitted = hub?.checkins.filter((c) => c.decision === 'admit') ?? [];
      const notAdmitted = [...this.createdCheckinIds].filter(
        (id) => !admitted.some((c) => c.id === id),
      ).length;
      const conflictHooks = whCount('checkin.conflict');
      lines.push(
        `webhooks verified ${rx.verified} of ${rx.received}${loud(
          failed === 0,
          `${failed} webhook${failed === 1 ? '' : 's'} failed verification at the sample receiver`,
        )}`,
        `checkin.created ${created} for ${admitted.length} check-ins admitted at the hub${loud(
          hub !== undefined && created === admitted.length && notAdmitted === 0,
          `${created} checkin.created webhooks for ${admitted.length} check-ins admitted at the hub` +
            (notAdmitted > 0 ? ` (${notAdmitted} for check-ins the hub does not hold as admitted)` : ''),
        )}`,
        `conflicts received ${conflictHooks}${loud(
          conflictHooks === conflicts,
          `${conflictHooks} checkin.conflict webhooks for ${conflicts} conflicts at the hub`,
        )}`,
      );
    }
    if (this.failures.length > 0) {
      process.stdout.write(`\n!!! DEMO SELF-CHECK FAILED: ${this.failures.join('; ')}\n`);
    }
    process.stdout.write(`\n${lines.join('\n')}\n`);
  }

  /**
   * Stops everything in reverse order (agents, link proxies, hub with its nats-server) and removes the
   * work folder. Never throws, and never waits more than a bounded time for any one part.
   *
   * After a Ctrl-C in a terminal the embedded nats-server has had the SIGINT too (it is in our process
   * group) and is already gone, and each daemon then waits out its own NATS timeouts before it stops; so
   * after an interrupt the parts are stopped side by side rather than one after another.
   */
  async shutdown(): Promise<void> {
    const limit = this.interrupted ? STOP_STEP_TIMEOUT_INTERRUPTED_MS : STOP_STEP_TIMEOUT_MS;
    const stopped: string[] = [];
    const step = async (name: string, fn: () => Promise<unknown>): Promise<boolean> => {
      let timer: NodeJS.Timeout | undefined;
      const t0 = performance.now();
      let ok = true;
      try {
        await Promise.race([
          fn(),
          new Promise((_r, reject) => {
            timer = setTimeout(() => reject(new Error(`gave up waiting after ${fmtSeconds(limit)}`)), limit);
          }),
        ]);
        stopped.push(name);
      } catch (err: unknown) {
        ok = false;
        this.say(`  ! stopping ${name}: ${errorMessage(err)}`);
      } finally {
        clearTimeout(timer);
      }
      const took = performance.now() - t0;
      if (ok && took > 1_000) this.say(`  (stopping ${name} took ${fmtSeconds(took)})`);
      return ok;
    };
    const agents = [...GATES].reverse().flatMap((g) => {
      const agent = this.agents.get(g);
      this.agents.delete(g);
      return agent === undefined ? [] : [() => step(`gate ${g}`, () => agent.stop())];
    });
    const proxies = [...GATES].reverse().flatMap((g) => {
      const proxy = this.proxies.get(g);
      this.proxies.delete(g);
      return proxy === undefined ? [] : [() => step(`link proxy ${g}`, () => proxy.close())];
    });
    const hub = this.hub;
    this.hub = undefined;
    const hubStep =
      hub === undefined
        ? []
        : [
            async () => {
              // Never close the connection while stop() is draining it: the drain would never settle.
              const ok = await step('hub and its nats-server', () => hub.stop());
              // When the drain failed (NATS gone), stop() leaves the connection reconnecting forever.
              if (!hub.nc.isClosed()) await hub.nc.close().catch(() => undefined);
              return ok;
            },
          ];
    if (this.interrupted) {
      if (agents.length + hubStep.length > 0) {
        this.say('stopping everything at once (the daemons may take a few seconds to give up on NATS)');
      }
      // Agents first, as usual; if NATS is still there they are done in a moment. If they are stuck on a
      // NATS that is gone, the rest need not wait for them.
      const agentsDone = Promise.all(agents.map((f) => f()));
      await Promise.race([agentsDone, sleepFor(1_500, undefined, { ref: false })]);
      await Promise.all([agentsDone, ...[...proxies, ...hubStep].map((f) => f())]);
    } else {
      for (const f of [...agents, ...proxies, ...hubStep]) await f();
    }
    // Last: the hub may be delivering to it until it stops.
    const receiver = this.receiver;
    this.receiver = undefined;
    if (receiver !== undefined) await step('webhook receiver', () => receiver.close());
    if (this.dir !== undefined) {
      try {
        rmSync(this.dir, { recursive: true, force: true, maxRetries: 3 });
        stopped.push(`removed ${this.dir}`);
      } catch (err: unknown) {
        this.say(`  ! could not remove ${this.dir}: ${errorMessage(err)}`);
      }
      this.dir = undefined;
    }
    if (stopped.length > 0) this.say(`stopped ${stopped.join(', ')}`.replace('stopped removed', 'removed'));
  }
}

export async function runDemo(o: { tickets: number; fast: boolean }): Promise<void> {
  if (!Number.isSafeInteger(o.tickets) || o.tickets < MIN_TICKETS || o.tickets > MAX_TICKETS) {
    process.stderr.write(
      `gatesync demo: --tickets must be a whole number from ${MIN_TICKETS} to ${MAX_TICKETS}\n`,
    );
    process.exitCode = 2;
    return;
  }
  const demo = new Demo(o);
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (demo.interrupted) {
      // A second Ctrl-C: leave at once, but do not leave the work folder behind.
      process.stderr.write(`\n${signal} again: exiting now\n`);
      if (demo.dir !== undefined) rmSync(demo.dir, { recursive: true, force: true });
      process.exit(130);
    }
    demo.interrupted = true;
    process.stdout.write(`\n`);
    demo.say(`${signal}: ${stopping ? 'already stopping' : 'stopping the demo'} (again to exit at once)`);
    demo.ac.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let code = 0;
  try {
    await demo.run();
    if (demo.failures.length > 0) code = 1;
  } catch (err: unknown) {
    // Scanners still running in the background stop with everything else.
    demo.ac.abort();
    if (demo.interrupted) {
      code = 130;
    } else if (err instanceof GatesyncError && err.code === 'nats_server_missing') {
      process.stderr.write(`gatesync: ${err.message}\n`);
      code = 2;
    } else {
      demo.say(`demo failed: ${errorMessage(err)}`);
      code = 1;
    }
  }
  process.stdout.write('\n');
  stopping = true;
  await demo.shutdown();
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  process.exitCode = code;
  if (code === 0) demo.say('demo finished');
  else if (code === 1 && demo.failures.length > 0) {
    demo.say(`demo FAILED its self-check: ${demo.failures.join('; ')}`);
  }
  // Interrupted: whatever did not stop in time was abandoned on purpose; leave now.
  if (code === 130) process.exit(code);
  // Should some handle outlive the daemons, do not hang the terminal on it.
  setTimeout(() => process.exit(), 3_000).unref();
}
