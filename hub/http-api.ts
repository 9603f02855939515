/**
 * The hub's HTTP API for ticketing platforms. Every route but /healthz, /readyz and the public key set
 * needs a bearer API key; bodies are validated against JSON schemas before a handler sees them.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { type Static, Type } from 'typebox';
import { GatesyncError, toErrorEnvelope } from '../shared/errors.ts';
import type { TicketState } from '../shared/events.ts';
import { asHttpError, bearerToken, createHttpServer } from '../shared/http.ts';
import { ID_PATTERN_SOURCE } from '../shared/ids.ts';
import type { Logger } from '../shared/logger.ts';
import { type ApiKeys, assertAdmin, assertVenueAccess, type Caller } from './api-keys.ts';
import { derivedTicketId, type IdempotencyStore, requestHash, type StoredResponse } from './idempotency.ts';
import type { HubMetrics } from './metrics.ts';
import type { IssueInput, StoredTicketState, TicketService } from './ticket-service.ts';
import type { VenueQueries } from './venue-queries.ts';

const Id = Type.String({ pattern: ID_PATTERN_SOURCE });
const IssueBody = Type.Object(
  {
    id: Type.Optional(Id),
    holder: Type.String({ minLength: 1, maxLength: 200 }),
    tier: Type.String({ minLength: 1, maxLength: 64 }),
    seat: Type.Optional(Type.Union([Type.String({ maxLength: 64 }), Type.Null()])),
    gates: Type.Optional(Type.Array(Id, { maxItems: 64, uniqueItems: true })),
    valid_from: Type.String({ format: 'date-time' }),
    valid_until: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
type IssueBody = Static<typeof IssueBody>;
export const MAX_BATCH = 10_000;
const BatchBody = Type.Object(
  { tickets: Type.Array(IssueBody, { minItems: 1, maxItems: MAX_BATCH }) },
  { additionalProperties: false },
);
type BatchBody = Static<typeof BatchBody>;
const RevokeBody = Type.Object(
  { reason: Type.String({ minLength: 1, maxLength: 500 }) },
  { additionalProperties: false },
);
type RevokeBody = Static<typeof RevokeBody>;
const VenueParams = Type.Object({ venue: Id });
const TicketParams = Type.Object({ venue: Id, id: Id });
const ApiKeyBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 100 }),
    venues: Type.Optional(Type.Union([Type.Array(Id, { maxItems: 1000 }), Type.Null()])),
    admin: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
type ApiKeyBody = Static<typeof ApiKeyBody>;
export const PageQuery = Type.Object(
  {
    after: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })),
    since: Type.Optional(Type.String({ format: 'date-time' })),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
  },
  { additionalProperties: false },
);
export type PageQuery = Static<typeof PageQuery>;

export function pageQuery(q: PageQuery) {
  const limit = q.limit === undefined ? 100 : Number(q.limit);
  if (limit < 1 || limit > 1000) {
    throw new GatesyncError('validation_failed', 'querystring/limit must be between 1 and 1000', {
      details: { field: 'querystring/limit' },
    });
  }
  return {
    after: q.after === undefined ? undefined : Number(q.after),
    since: q.since === undefined ? undefined : Date.parse(q.since),
    limit,
  };
}

export interface TicketView {
  id: string;
  venue: string;
  holder: string;
  tier: string;
  seat: string | null;
  gates: string[];
  valid_from: string;
  valid_until: string;
  status: 'valid' | 'revoked';
  revoked_reason: string | null;
  issued_at: string;
  updated_at: string;
  qr: string;
  rev: number;
}

export function ticketView(s: { ticket: TicketState; rev: number }): TicketView {
  const t = s.ticket;
  const iso = (ms: number) => new Date(ms).toISOString();
  return {
    id: t.id,
    venue: t.venue,
    holder: t.holder,
    tier: t.tier,
    seat: t.seat,
    gates: t.gates,
    valid_from: iso(t.valid_from),
    valid_until: iso(t.valid_until),
    status: t.status,
    revoked_reason: t.revoked_reason,
    issued_at: iso(t.issued_at),
    updated_at: iso(t.updated_at),
    qr: t.qr,
    rev: s.rev,
  };
}

function toIssueInput(b: IssueBody, id = b.id): IssueInput {
  return {
    id,
    holder: b.holder,
    tier: b.tier,
    seat: b.seat,
    gates: b.gates,
    valid_from: Date.parse(b.valid_from),
    valid_until: Date.parse(b.valid_until),
  };
}

export interface HubHttpOptions {
  /** More routes behind the same API-key check (webhooks, dashboard). */
  routes?: ((api: FastifyInstance) => void)[];
  /**
   * Routes outside the API-key check (the dashboard page, the OpenAPI document), registered before any
   * other route so an `onRoute` hook added here sees every route.
   */
  publicRoutes?: ((app: FastifyInstance) => void)[];
  logger: Logger;
  metrics: HubMetrics;
  tickets: TicketService;
  apiKeys: ApiKeys;
  idempotency: IdempotencyStore;
  queries: VenueQueries;
  publicKeys: () => { kid: string; public_key: string; status: 'active' | 'trusted' }[];
  /** Bytes, for the batch route; other routes take at most 64 KiB. */
  batchBodyLimit: number;
  isReady: () => boolean;
}

/**
 * Issues a ticket. With an Idempotency-Key and no id, the id is derived from the key, and finding that
 * ticket already there means an earlier attempt of this same request published it: return it.
 */
async function issueOne(
  opts: HubHttpOptions,
  request: FastifyRequest,
  venue: string,
  body: IssueBody,
  index: number,
): Promise<StoredTicketState> {
  const key = request.headers['idempotency-key'];
  const derived =
    body.id === undefined && typeof key === 'string'
      ? derivedTicketId((request.caller as Caller).keyId, key, index)
      : undefined;
  try {
    return await opts.tickets.issue(venue, toIssueInput(body, body.id ?? derived));
  } catch (err: unknown) {
    if (derived !== undefined && err instanceof GatesyncError && err.code === 'ticket_exists') {
      const existing = await opts.tickets.get(venue, derived);
      if (existing !== undefined) return existing;
    }
    throw err;
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
}

/** Runs a handler through the Idempotency-Key store when the header is present. */
async function idempotent(
  opts: HubHttpOptions,
  request: FastifyRequest,
  reply: FastifyReply,
  exec: () => Promise<StoredResponse>,
): Promise<unknown> {
  const key = request.headers['idempotency-key'];
  const caller = request.caller as Caller;
  let res: StoredResponse & { replayed?: boolean };
  if (typeof key === 'string') {
    const hash = requestHash(request.method, request.url, request.body);
    res = await opts.idempotency.run(caller.keyId, key, hash, exec);
    if (res.replayed === true) void reply.header('Idempotent-Replayed', 'true');
  } else {
    res = await exec();
  }
  return reply.status(res.status).send(res.body);
}

export function buildHubHttp(opts: HubHttpOptions): FastifyInstance {
  const app = createHttpServer({
    logger: opts.logger,
    bodyLimit: 64 * 1024,
    errorCounter: opts.metrics.httpErrors,
    notReadyReason: () => (opts.isReady() ? undefined : 'not connected to NATS'),
  });
  for (const register of opts.publicRoutes ?? []) register(app);

  app.addHook('onResponse', async (request, reply) => {
    opts.metrics.httpDuration.observe(
      { route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });

  // Public by nature, like a JWKS document: agents pin keys from their own config and may compare.
  app.get('/.well-known/gatesync/keys.json', async () => ({ keys: opts.publicKeys() }));

  app.register(async (api) => {
    api.addHook('onRequest', async (request) => {
      request.caller = opts.apiKeys.authenticate(bearerToken(request));
    });

    api.get('/metrics', async (request, reply) => {
      assertAdmin(request.caller as Caller);
      return reply.type(opts.metrics.registry.contentType).send(await opts.metrics.registry.metrics());
    });

    api.post<{ Params: Static<typeof VenueParams>; Body: IssueBody }>(
      '/v1/venues/:venue/tickets',
      { schema: { params: VenueParams, body: IssueBody } },
      async (request, reply) => {
        const { venue } = request.params;
        assertVenueAccess(request.caller as Caller, venue);
        return idempotent(opts, request, reply, async () => {
          const issued = await issueOne(opts, request, venue, request.body, 0);
          return { status: 201, body: ticketView(issued) };
        });
      },
    );

    api.post<{ Params: Static<typeof VenueParams>; Body: BatchBody }>(
      '/v1/venues/:venue/tickets::batch',
      { schema: { params: VenueParams, body: BatchBody }, bodyLimit: opts.batchBodyLimit },
      async (request, reply) => {
        const { venue } = request.params;
        assertVenueAccess(request.caller as Caller, venue);
        return idempotent(opts, request, reply, async () => {
          const items = request.body.tickets;
          const results: ({ index: number; ticket: TicketView } | { index: number; error: unknown })[] =
            new Array(items.length);
          let next = 0;
          let issued = 0;
          // A bounded number in flight: enough to hide the JetStream round trip, few enough to stay fair.
          // Once the bus fails, the rest is not tried (each would wait out its own timeout) and the
          // failure is logged once, not once per ticket.
          let busFailure: unknown;
          const worker = async () => {
            for (let i = next++; i < items.length; i = next++) {
              if (busFailure !== undefined) {
                results[i] = { index: i, error: toErrorEnvelope(busFailure).body.error };
                continue;
              }
              try {
                const r = await issueOne(opts, request, venue, items[i] as IssueBody, i);
                results[i] = { index: i, ticket: ticketView(r) };
                issued++;
              } catch (err: unknown) {
                const env = toErrorEnvelope(asHttpError(err));
                if (env.status >= 500) busFailure ??= asHttpError(err);
                results[i] = { index: i, error: env.body.error };
              }
            }
          };
          await Promise.all(Array.from({ length: Math.min(128, items.length) }, worker));
          if (busFailure !== undefined) {
            opts.logger.error(
              { err: busFailure, venue, issued, of: items.length },
              'batch stopped: bus failure',
            );
          }
          return { status: 200, body: { issued, failed: items.length - issued, results } };
        });
      },
    );

    api.post<{ Params: Static<typeof TicketParams>; Body: RevokeBody }>(
      '/v1/venues/:venue/tickets/:id/revoke',
      { schema: { params: TicketParams, body: RevokeBody } },
      async (request, reply) => {
        const { venue, id } = request.params;
        assertVenueAccess(request.caller as Caller, venue);
        return idempotent(opts, request, reply, async () => {
          const revoked = await opts.tickets.revoke(venue, id, request.body.reason);
          return { status: 200, body: ticketView(revoked) };
        });
      },
    );

    api.get<{ Params: Static<typeof TicketParams> }>(
      '/v1/venues/:venue/tickets/:id',
      { schema: { params: TicketParams } },
      async (request) => {
        const { venue, id } = request.params;
        assertVenueAccess(request.caller as Caller, venue);
        const t: StoredTicketState | undefined = await opts.tickets.get(venue, id);
        if (t === undefined) throw new GatesyncError('not_found', `no ticket ${id} in venue ${venue}`);
        return ticketView(t);
      },
    );

    api.get<{ Params: Static<typeof VenueParams>; Querystring: PageQuery }>(
      '/v1/venues/:venue/checkins',
      { schema: { params: VenueParams, querystring: PageQuery } },
      async (request) => {
        assertVenueAccess(request.caller as Caller, request.params.venue);
        const page = await opts.queries.checkins(request.params.venue, pageQuery(request.query));
        return {
          checkins: page.items.map(({ v: _v, ...c }) => ({
            ...c,
            cursor: String(c.cursor),
            scanned_at: new Date(c.scanned_at).toISOString(),
          })),
          next_cursor: page.next_cursor === null ? null : String(page.next_cursor),
        };
      },
    );

    api.get<{ Params: Static<typeof VenueParams>; Querystring: PageQuery }>(
      '/v1/venues/:venue/conflicts',
      { schema: { params: VenueParams, querystring: PageQuery } },
      async (request) => {
        assertVenueAccess(request.caller as Caller, request.params.venue);
        const page = await opts.queries.conflicts(request.params.venue, pageQuery(request.query));
        const iso = (ms: number) => new Date(ms).toISOString();
        return {
          conflicts: page.items.map((c) => ({
            id: c.id,
            type: 'checkin.conflict',
            venue: c.venue,
            ticket_id: c.ticket_id,
            first: { ...c.first, scanned_at: iso(c.first.scanned_at) },
            second: { ...c.second, scanned_at: iso(c.second.scanned_at) },
            detected_at: iso(c.detected_at),
            cursor: String(c.cursor),
          })),
          next_cursor: page.next_cursor === null ? null : String(page.next_cursor),
        };
      },
    );

    api.get<{ Params: Static<typeof VenueParams> }>(
      '/v1/venues/:venue/agents',
      { schema: { params: VenueParams } },
      async (request) => {
        assertVenueAccess(request.caller as Caller, request.params.venue);
        return { agents: await opts.queries.agents(request.params.venue) };
      },
    );

    api.post<{ Body: ApiKeyBody }>(
      '/v1/api-keys',
      { schema: { body: ApiKeyBody } },
      async (request, reply) => {
        assertAdmin(request.caller as Caller);
        if (
          request.body.admin === true &&
          request.body.venues !== undefined &&
          request.body.venues !== null
        ) {
          throw new GatesyncError('validation_failed', 'an admin key acts on every venue: leave venues out', {
            details: { field: 'body/venues' },
          });
        }
        const { key, record } = await opts.apiKeys.create(
          request.body.name,
          request.body.venues ?? null,
          request.body.admin ?? false,
        );
        const { hash: _hash, ...shown } = record;
        return reply.status(201).send({ ...shown, key });
      },
    );
    api.get('/v1/api-keys', async (request) => {
      assertAdmin(request.caller as Caller);
      return { keys: opts.apiKeys.list() };
    });
    api.delete<{ Params: { id: string } }>(
      '/v1/api-keys/:id',
      { schema: { params: Type.Object({ id: Id }) } },
      async (request, reply) => {
        assertAdmin(request.caller as Caller);
        if (!(await opts.apiKeys.remove(request.params.id))) {
          throw new GatesyncError('not_found', `no API key ${request.params.id}`);
        }
        return reply.status(204).send();
      },
    );

    for (const register of opts.routes ?? []) register(api);
  });

  return app;
}
