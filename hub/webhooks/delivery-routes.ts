/**
 * Routes for what happened to deliveries: attempts, messages, dead letters; and for doing it again:
 * resend one message, recover an endpoint's dead letters since a time, redrive all of them. Admin only,
 * like the endpoint routes.
 */
import type { FastifyInstance } from 'fastify';
import { type Static, Type } from 'typebox';
import { GatesyncError } from '../../shared/errors.ts';
import { ID_PATTERN_SOURCE } from '../../shared/ids.ts';
import { assertAdmin, type Caller } from '../api-keys.ts';
import { PageQuery, pageQuery } from '../http-api.ts';
import type { EndpointStore } from './endpoints.ts';
import type { EndpointWithHealth } from './model.ts';
import type { WebhookQueries } from './queries.ts';

const Id = Type.String({ pattern: ID_PATTERN_SOURCE });
const EndpointParams = Type.Object({ id: Id });
const MessageParams = Type.Object({ id: Id, msg: Id });
const RecoverBody = Type.Object(
  { since: Type.String({ format: 'date-time' }) },
  { additionalProperties: false },
);

export interface DeliveryRouteDeps {
  store: EndpointStore;
  queries: WebhookQueries;
  /** Every endpoint with its delivery health (Webhooks.health). */
  health(): Promise<EndpointWithHealth[]>;
}

export function registerDeliveryRoutes(api: FastifyInstance, deps: DeliveryRouteDeps): void {
  const endpointOr404 = (id: string) => {
    const e = deps.store.get(id);
    if (e === undefined) throw new GatesyncError('not_found', `no webhook endpoint ${id}`);
    return e;
  };

  api.get<{ Params: Static<typeof EndpointParams>; Querystring: PageQuery }>(
    '/v1/webhooks/endpoints/:id/attempts',
    { schema: { params: EndpointParams, querystring: PageQuery } },
    async (request) => {
      assertAdmin(request.caller as Caller);
      endpointOr404(request.params.id);
      const page = await deps.queries.endpointAttempts(request.params.id, pageQuery(request.query));
      return {
        attempts: page.items.map((a) => ({ ...a, cursor: String(a.cursor) })),
        next_cursor: page.next_cursor === null ? null : String(page.next_cursor),
      };
    },
  );

  api.get<{ Params: Static<typeof EndpointParams>; Querystring: PageQuery }>(
    '/v1/webhooks/endpoints/:id/dead-letters',
    { schema: { params: EndpointParams, querystring: PageQuery } },
    async (request) => {
      assertAdmin(request.caller as Caller);
      endpointOr404(request.params.id);
      const page = await deps.queries.deadLetters(request.params.id, pageQuery(request.query));
      return {
        dead_letters: page.items.map(({ message: _m, v: _v, ...d }) => ({ ...d, cursor: String(d.cursor) })),
        next_cursor: page.next_cursor === null ? null : String(page.next_cursor),
      };
    },
  );

  api.get<{ Params: Static<typeof EndpointParams> }>(
    '/v1/webhooks/messages/:id',
    { schema: { params: EndpointParams } },
    async (request) => {
      assertAdmin(request.caller as Caller);
      const m = await deps.queries.message(request.params.id);
      if (m === undefined) throw new GatesyncError('not_found', `no message ${request.params.id}`);
      return { ...m, attempts: await deps.queries.messageAttempts(m.id) };
    },
  );

  api.post<{ Params: Static<typeof MessageParams> }>(
    '/v1/webhooks/endpoints/:id/messages/:msg/resend',
    { schema: { params: MessageParams } },
    async (request, reply) => {
      assertAdmin(request.caller as Caller);
      endpointOr404(request.params.id);
      await deps.queries.resend(request.params.id, request.params.msg);
      return reply.status(202).send({ message_id: request.params.msg, endpoint_id: request.params.id });
    },
  );

  api.post<{ Params: Static<typeof EndpointParams>; Body: Static<typeof RecoverBody> }>(
    '/v1/webhooks/endpoints/:id/recover',
    { schema: { params: EndpointParams, body: RecoverBody } },
    async (request, reply) => {
      assertAdmin(request.caller as Caller);
      endpointOr404(request.params.id);
      const since = Date.parse(request.body.since);
      return reply.status(202).send({ job: deps.queries.startJob('recover', request.params.id, since) });
    },
  );

  api.post<{ Params: Static<typeof EndpointParams> }>(
    '/v1/webhooks/endpoints/:id/dead-letters/redrive',
    { schema: { params: EndpointParams } },
    async (request, reply) => {
      assertAdmin(request.caller as Caller);
      endpointOr404(request.params.id);
      return reply.status(202).send({ job: deps.queries.startJob('redrive', request.params.id, undefined) });
    },
  );

  api.get<{ Params: Static<typeof EndpointParams> }>(
    '/v1/webhooks/jobs/:id',
    { schema: { params: EndpointParams } },
    async (request) => {
      assertAdmin(request.caller as Caller);
      const job = deps.queries.job(request.params.id);
      if (job === undefined) throw new GatesyncError('not_found', `no job ${request.params.id}`);
      return job;
    },
  );

  // Every endpoint with how its deliveries are going (this hub process's recent attempts).
  api.get('/v1/webhooks/health', async (request) => {
    assertAdmin(request.caller as Caller);
    return { endpoints: await deps.health() };
  });
}
