/**
 * The hub dashboard's routes.
 *
 * - GET /dashboard: the page. A browser cannot put a bearer key on a page load, so the page is static and
 *   holds no data: it is served without authentication, asks once for an admin API key (kept in the tab's
 *   sessionStorage) and reads everything below with `Authorization: Bearer`. Inline CSS and JS only (no
 *   CDN), allowed by hash in its Content-Security-Policy, with network access only to this hub.
 * - GET /v1/dashboard/summary: one snapshot (hub/dashboard/snapshot.ts), for the first paint.
 * - GET /v1/dashboard/stream: the same snapshot as server-sent events, one every STREAM_INTERVAL_MS.
 *   EventSource cannot send headers, so the page reads this stream with fetch() and a stream reader.
 *
 * The two /v1 routes are admin only (the dashboard shows every venue and every webhook endpoint).
 */
import { readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type Static, Type } from 'typebox';
import { errorMessage, GatesyncError, toErrorEnvelope } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import { registerStaticPage, staticPage } from '../../shared/static-page.ts';
import { assertAdmin, type Caller } from '../api-keys.ts';
import { DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, type SnapshotBuilder, type VenueQuery } from './snapshot.ts';

/** Milliseconds between two snapshots on a stream. */
export const STREAM_INTERVAL_MS = 1_500;

export const DashboardQuery = Type.Object(
  {
    filter: Type.Optional(
      Type.String({ maxLength: 100, description: 'Part of a venue, agent or gate name' }),
    ),
    problems: Type.Optional(
      Type.Union([Type.Literal('true'), Type.Literal('false')], {
        description: 'true: only venues with an offline agent or check-ins waiting in an outbox',
      }),
    ),
    page: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}$', description: '1-based, default 1' })),
    page_size: Type.Optional(
      Type.String({
        pattern: '^[0-9]{1,3}$',
        description: `Venues per page, 1 to ${MAX_PAGE_SIZE}, default ${DEFAULT_PAGE_SIZE}`,
      }),
    ),
  },
  { additionalProperties: false },
);
export type DashboardQuery = Static<typeof DashboardQuery>;

export function venueQuery(q: DashboardQuery): VenueQuery {
  const pageSize = q.page_size === undefined ? DEFAULT_PAGE_SIZE : Number(q.page_size);
  if (pageSize < 1 || pageSize > MAX_PAGE_SIZE) {
    throw new GatesyncError(
      'validation_failed',
      `querystring/page_size must be between 1 and ${MAX_PAGE_SIZE}`,
      {
        details: { field: 'querystring/page_size' },
      },
    );
  }
  return {
    filter: q.filter ?? '',
    problems: q.problems === 'true',
    page: Math.max(1, q.page === undefined ? 1 : Number(q.page)),
    page_size: pageSize,
  };
}

const PAGE = staticPage(readFileSync(new URL('./page.html', import.meta.url), 'utf8'));

/** GET /dashboard, outside the API-key check. */
export function registerDashboardPage(app: FastifyInstance): void {
  registerStaticPage(app, '/dashboard', PAGE);
}

export interface DashboardRouteDeps {
  snapshots: SnapshotBuilder;
  logger: Logger;
}

/** The JSON and stream routes, inside the API-key check. */
export function registerDashboardRoutes(api: FastifyInstance, deps: DashboardRouteDeps): void {
  const streams = new Set<ServerResponse>();

  // Open streams would keep the server from closing (Fastify closes idle connections only): end them.
  api.addHook('preClose', async () => {
    for (const res of streams) res.end();
    streams.clear();
  });

  api.get<{ Querystring: DashboardQuery }>(
    '/v1/dashboard/summary',
    { schema: { querystring: DashboardQuery } },
    async (request, reply) => {
      assertAdmin(request.caller as Caller);
      const snapshot = await deps.snapshots.get(venueQuery(request.query));
      return reply.header('cache-control', 'no-store').send(snapshot);
    },
  );

  api.get<{ Querystring: DashboardQuery }>(
    '/v1/dashboard/stream',
    { schema: { querystring: DashboardQuery } },
    async (request: FastifyRequest<{ Querystring: DashboardQuery }>, reply) => {
      assertAdmin(request.caller as Caller);
      const query = venueQuery(request.query);
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-store',
        'x-accel-buffering': 'no',
        connection: 'keep-alive',
      });
      res.flushHeaders();
      streams.add(res);
      let closed = false;
      let timer: NodeJS.Timeout | undefined;
      const close = () => {
        closed = true;
        if (timer !== undefined) clearTimeout(timer);
        streams.delete(res);
      };
      request.raw.on('close', close);
      res.on('close', close);
      let id = 0;
      const send = async () => {
        if (closed) return;
        let event: string;
        try {
          const snapshot = await deps.snapshots.get(query);
          event = `id: ${++id}\nevent: snapshot\ndata: ${JSON.stringify(snapshot)}\n\n`;
        } catch (err: unknown) {
          deps.logger.warn({ err: errorMessage(err) }, 'dashboard snapshot failed');
          event = `id: ${++id}\nevent: error\ndata: ${JSON.stringify(toErrorEnvelope(err).body)}\n\n`;
        }
        if (closed) return;
        res.write(event);
        timer = setTimeout(() => void send(), STREAM_INTERVAL_MS);
      };
      res.write(`retry: ${STREAM_INTERVAL_MS}\n\n`);
      await send();
    },
  );
}
