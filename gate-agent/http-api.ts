/**
 * The agent's local HTTP API for scanner apps. Each scanner has its own bearer token (from config); the
 * token names the scanner, so a scan is always attributed to the device that sent it.
 */
import type { FastifyInstance } from 'fastify';
import { type Static, Type } from 'typebox';
import { GatesyncError } from '../shared/errors.ts';
import { bearerToken, createHttpServer, hashToken } from '../shared/http.ts';
import { ID_PATTERN_SOURCE } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import type { AgentMetrics } from './metrics.ts';
import type { ScanService } from './scan-service.ts';
import type { StoredTicket } from './ticket-store.ts';

const ScanBody = Type.Object(
  {
    code: Type.String({ minLength: 1, maxLength: 1024 }),
    direction: Type.Optional(Type.Union([Type.Literal('in'), Type.Literal('out')])),
    scanner: Type.Optional(Type.String({ pattern: ID_PATTERN_SOURCE })),
  },
  { additionalProperties: false },
);
type ScanBody = Static<typeof ScanBody>;
const TicketSummarySchema = Type.Object({
  id: Type.String(),
  holder: Type.String(),
  tier: Type.String(),
  seat: Type.Union([Type.String(), Type.Null()]),
  gates: Type.Array(Type.String()),
  valid_from: Type.String(),
  valid_until: Type.String(),
  status: Type.String(),
});
/** Declared so Fastify serialises the hot path's answer with a compiled serializer. */
const ScanResponse = Type.Object({
  decision: Type.String(),
  reason: Type.Optional(Type.String()),
  ticket: Type.Optional(TicketSummarySchema),
  unsynced_ticket: Type.Optional(Type.Boolean()),
  checkin_id: Type.String(),
  seq: Type.Integer(),
  scanned_at: Type.String(),
});
const CodeParams = Type.Object({ code: Type.String({ minLength: 1, maxLength: 1024 }) });
const CodeQuery = Type.Object(
  { direction: Type.Optional(Type.Union([Type.Literal('in'), Type.Literal('out')])) },
  { additionalProperties: false },
);

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

function summary(t: StoredTicket | undefined): TicketSummary | undefined {
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
  status: () => object;
  isReady: () => boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    scannerId?: string;
  }
}

export function buildAgentHttp(opts: AgentHttpOptions): FastifyInstance {
  const app = createHttpServer({
    logger: opts.logger,
    bodyLimit: 16 * 1024,
    errorCounter: opts.metrics.httpErrors,
    notReadyReason: () => (opts.isReady() ? undefined : 'the store is not open'),
  });

  app.register(async (api) => {
    api.addHook('onRequest', async (request) => {
      const scanner = opts.scannerTokens.get(hashToken(bearerToken(request)));
      if (scanner === undefined)
        throw new GatesyncError('unauthorized', 'the bearer token is not a scanner token');
      request.scannerId = scanner;
    });

    api.post<{ Body: ScanBody }>(
      '/v1/scans',
      { schema: { body: ScanBody, response: { 200: ScanResponse } } },
      async (request) => {
        const started = performance.now();
        const scanner = request.scannerId as string;
        if (request.body.scanner !== undefined && request.body.scanner !== scanner) {
          throw new GatesyncError(
            'forbidden',
            `this token belongs to scanner ${scanner}, not ${request.body.scanner}`,
          );
        }
        const r = await opts.scans.scan({
          code: request.body.code,
          direction: request.body.direction ?? 'in',
          scanner,
        });
        opts.metrics.decisions.inc({ decision: r.decision, reason: r.reason ?? '' });
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
      },
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

    api.get('/v1/status', async () => opts.status());

    api.get('/metrics', async (_request, reply) =>
      reply.type(opts.metrics.registry.contentType).send(await opts.metrics.registry.metrics()),
    );
  });
  return app;
}
