/**
 * The agent's local HTTP API for scanner apps. Each scanner has its own bearer token (from config); the
 * token names the scanner, so a scan is always attributed to the device that sent it.
 */
import type { FastifyInstance } from 'fastify';
import type { Static } from 'typebox';
import { GatesyncError } from '../shared/errors.ts';
import { bearerToken, createHttpServer, hashToken } from '../shared/http.ts';
import type { Logger } from '../shared/logger.ts';
import { childCache } from '../shared/metric-children.ts';
import {
  type AgentStatus,
  type AgentStatusBase,
  CodeParams,
  CodeQuery,
  type RecentReject,
  ScanBody,
  ScanResponse,
} from './api-schemas.ts';
import type { AgentMetrics } from './metrics.ts';
import { AGENT_OPENAPI } from './openapi.ts';
import { ScanRate } from './scan-rate.ts';
import type { ScanResult, ScanService } from './scan-service.ts';
import { registerStatusPage } from './status-page.ts';
import type { CheckinRecord, ListedCheckin, StoredTicket } from './ticket-store.ts';

/** Bytes a request body may have. */
export const AGENT_BODY_LIMIT = 16 * 1024;

/** How many rejects GET /v1/status lists. */
const RECENT_REJECTS = 10;

export interface TicketSummary {
  id: string;
  holder: string;
  tier: string;
  seat: string | null;
  gates: string[];
  valid_from: string;
  valid_until: string;
  status: string;
}

function summary(t: Readonly<StoredTicket> | undefined): TicketSummary | undefined {
  if (t === undefined) return undefined;
  return {
    id: t.id,
    holder: t.holder,
    tier: t.tier,
    seat: t.seat,
    gates: t.gates,
    valid_from: new Date(t.valid_from).toISOString(),
    valid_until: new Date(t.valid_until).toISOString(),
    status: t.status,
  };
}

export interface AgentHttpOptions {
  logger: Logger;
  metrics: AgentMetrics;
  scans: ScanService;
  scannerTokens: ReadonlyMap<string, string>;
  status: () => AgentStatusBase;
  /**
   * The newest rejected check-ins, newest first (TicketStore.recentRejects), read once; later rejects
   * come from the scans this API answers. None listed when absent.
   */
  recentRejects?: (limit: number) => (ListedCheckin & { holder: string | null })[];
  /** Every check-in up to this seq is acknowledged by JetStream (the `sent` of a listed reject). */
  sentThrough?: () => number;
  /** Why the agent is not ready (store closed, NATS not connected), or undefined when it is. */
  notReadyReason: () => string | undefined;
}

declare module 'fastify' {
  interface FastifyRequest {
    scannerId?: string;
  }
}

type KeptReject = CheckinRecord & { holder: string | null };

function rejectView(c: KeptReject, sentThrough: number): RecentReject {
  return {
    checkin_id: c.id,
    seq: c.seq,
    scanned_at: new Date(c.scanned_at).toISOString(),
    reason: c.reason ?? 'malformed',
    ticket_id: c.ticket_id,
    holder: c.holder,
    scanner: c.scanner,
    direction: c.direction,
    sent: c.seq <= sentThrough,
  };
}

/**
 * The last rejects the status page lists: read from the store at the first status request (a walk back
 * over up to 10,000 check-ins), then kept from the scans answered here, so a status poll at a busy gate
 * runs no query.
 */
class RecentRejects {
  private list: KeptReject[] | undefined;

  constructor(private readonly opts: AgentHttpOptions) {}

  noteScan(r: ScanResult): void {
    if (this.list === undefined || r.decision !== 'reject') return; // not loaded yet: the store has it
    this.list.unshift({ ...r.record, holder: r.ticket?.holder ?? null });
    if (this.list.length > RECENT_REJECTS) this.list.length = RECENT_REJECTS;
  }

  view(): RecentReject[] {
    this.list ??= this.opts.recentRejects?.(RECENT_REJECTS) ?? [];
    const through = this.opts.sentThrough?.() ?? 0;
    return this.list.map((c) => rejectView(c, through));
  }
}

/** The wiring's status plus what the status page shows: last sync, scan rate, last rejects. */
function fullStatus(opts: AgentHttpOptions, rate: ScanRate, rejects: RecentRejects): AgentStatus {
  const base = opts.status();
  const now = Date.now();
  const lastSync = base.last_event.applied_at;
  const minute = rate.lastMinute(now);
  return {
    ...base,
    last_sync_at: lastSync,
    last_sync_age_ms: lastSync === null ? null : Math.max(0, now - Date.parse(lastSync)),
    scans_per_minute: minute.admit + minute.reject,
    scans_last_minute: minute,
    recent_rejects: rejects.view(),
  };
}

/** The scan answer of each app built here, for the HTTP front thread (see scanAnswerOf). */
const answerScans = new WeakMap<
  FastifyInstance,
  (body: ScanBody, scanner: string) => Promise<Static<typeof ScanResponse>>
>();

/** What POST /v1/scans answers for a validated body and the scanner its token names. */
export function scanAnswerOf(
  app: FastifyInstance,
): (body: ScanBody, scanner: string) => Promise<Static<typeof ScanResponse>> {
  const answer = answerScans.get(app);
  if (answer === undefined) throw new Error('not an agent HTTP app');
  return answer;
}

export function buildAgentHttp(opts: AgentHttpOptions): FastifyInstance {
  const rate = new ScanRate();
  const rejects = new RecentRejects(opts);
  const app = createHttpServer({
    logger: opts.logger,
    bodyLimit: AGENT_BODY_LIMIT,
    errorCounter: opts.metrics.httpErrors,
    notReadyReason: opts.notReadyReason,
  });

  // Public: the page holds no data (it asks for a token and reads /v1/status), the document none either.
  registerStatusPage(app);
  app.get('/openapi.json', async (_request, reply) => reply.type('application/json').send(AGENT_OPENAPI));

  const decisionCounter = childCache((decision: string, reason: string) =>
    opts.metrics.decisions.labels({ decision, reason }),
  );

  /**
   * A scan, from a validated body and the scanner its token names, to the answer: the route's handler,
   * and what the HTTP front thread calls for the scans it takes (http-front.ts).
   */
  const answerScan = async (body: ScanBody, scanner: string): Promise<Static<typeof ScanResponse>> => {
    const started = performance.now();
    if (body.scanner !== undefined && body.scanner !== scanner) {
      throw new GatesyncError('forbidden', `this token belongs to scanner ${scanner}, not ${body.scanner}`);
    }
    const r = await opts.scans.scan({ code: body.code, direction: body.direction ?? 'in', scanner });
    decisionCounter(r.decision, r.reason ?? '').inc();
    rate.record(r.decision);
    rejects.noteScan(r);
    opts.metrics.scanLatency.observe((performance.now() - started) / 1000);
    return {
      decision: r.decision,
      ...(r.reason === null ? {} : { reason: r.reason }),
      ...(r.ticket === undefined ? {} : { ticket: summary(r.ticket) }),
      ...(r.unsyncedTicket ? { unsynced_ticket: true } : {}),
      checkin_id: r.checkinId,
      seq: r.seq,
      scanned_at: new Date(r.scannedAt).toISOString(),
    };
  };
  answerScans.set(app, answerScan);

  app.register(async (api) => {
    // Callback style, not async: it runs before every scan, and an async hook costs a promise each time.
    api.addHook('onRequest', (request, _reply, done) => {
      let scanner: string | undefined;
      try {
        scanner = opts.scannerTokens.get(hashToken(bearerToken(request)));
      } catch (err: unknown) {
        done(err as Error);
        return;
      }
      if (scanner === undefined) {
        done(new GatesyncError('unauthorized', 'the bearer token is not a scanner token'));
        return;
      }
      request.scannerId = scanner;
      done();
    });

    api.post<{ Body: ScanBody }>(
      '/v1/scans',
      { schema: { body: ScanBody, response: { 200: ScanResponse } } },
      async (request) => answerScan(request.body, request.scannerId as string),
    );

    api.get<{ Params: Static<typeof CodeParams>; Querystring: Static<typeof CodeQuery> }>(
      '/v1/tickets/:code',
      { schema: { params: CodeParams, querystring: CodeQuery } },
      async (request) => {
        const r = opts.scans.preview(request.params.code, request.query.direction ?? 'in');
        return {
          decision: r.decision,
          ...(r.reason === null ? {} : { reason: r.reason }),
          ...(r.ticket === undefined ? {} : { ticket: summary(r.ticket) }),
          ...(r.unsyncedTicket ? { unsynced_ticket: true } : {}),
        };
      },
    );

    api.get('/v1/status', async () => fullStatus(opts, rate, rejects));

    api.get('/metrics', async (_request, reply) =>
      reply.type(opts.metrics.registry.contentType).send(await opts.metrics.registry.metrics()),
    );
  });
  return app;
}
