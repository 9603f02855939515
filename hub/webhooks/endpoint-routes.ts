/**
 * Webhook endpoint management: create, list, read, change, disable and enable, delete, read and rotate
 * the signing secret, send a test event. Admin keys only (an endpoint receives events of every venue it
 * names, so a venue-scoped key could otherwise read other venues' check-ins). See docs/webhooks-api.md.
 *
 * An endpoint's secret is shown by the create, rotate and GET .../secret answers only; every other answer
 * carries `publicEndpoint(record)`, which leaves the secrets out.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type Static, Type } from 'typebox';
import { GatesyncError } from '../../shared/errors.ts';
import { ID_PATTERN_SOURCE, newId } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { assertAdmin, type Caller } from '../api-keys.ts';
import type { WebhookSettings } from '../config.ts';
import type { HubMetrics } from '../metrics.ts';
import type { EndpointStore } from './endpoints.ts';
import {
  DEFAULT_EVENT_TYPES,
  type EndpointRecord,
  EVENT_TYPES,
  type EventType,
  isEventType,
  type PublicEndpoint,
  publicEndpoint,
} from './model.ts';
import { DEFAULT_ROTATION_GRACE_MS, newSecretRing, parseSecret, rotateSecret } from './secrets.ts';
import { type Resolver, validateWebhookUrl } from './ssrf.ts';

export interface EndpointRouteDeps {
  store: EndpointStore;
  settings: WebhookSettings;
  /** DNS for registration checks; tests pass a fake one. */
  resolver?: Resolver;
  logger: Logger;
  metrics: HubMetrics;
  /** Queues a `webhook.test` message to one endpoint (enabled or not) and returns its id. */
  sendTest(
    endpoint: EndpointRecord,
    data: Record<string, unknown> | undefined,
  ): Promise<{ message_id: string }>;
  /**
   * Resolves once the webhook sources have caught up with every endpoint change made so far. A source
   * starts reading (at "new") only when some endpoint wants its types, so the answer to a create, enable
   * or update waits for it: an event published after the answer reaches the endpoint.
   */
  sourcesSettled(): Promise<void>;
}

/** Endpoint ids: `ep_` and a time-ordered 26-character id, so listing by id lists by age. */
export const ENDPOINT_ID_PREFIX = 'ep_';
export const DEFAULT_MAX_CONCURRENCY = 10;
export const MAX_CONCURRENCY = 100;
/** Messages per second; a guard against typos (1e9), far above what one receiver takes. */
export const MAX_RATE_LIMIT = 100_000;
/** Longest rotation grace period: 30 days, in seconds. */
export const MAX_GRACE_SECONDS = 30 * 24 * 60 * 60;
const DEFAULT_PAGE = 100;
const MAX_PAGE = 1000;

const Id = Type.String({ pattern: ID_PATTERN_SOURCE });
const IdParams = Type.Object({ id: Id });
type IdParams = Static<typeof IdParams>;

/** Fields a create and a change share. Event types are checked by hand so the error can name them all. */
const endpointFields = {
  url: Type.String({ minLength: 1, maxLength: 2048 }),
  event_types: Type.Array(Type.String({ minLength: 1, maxLength: 100 }), {
    minItems: 1,
    maxItems: 100,
    uniqueItems: true,
  }),
  venues: Type.Union([Type.Array(Id, { minItems: 1, maxItems: 1000, uniqueItems: true }), Type.Null()]),
  description: Type.String({ maxLength: 500 }),
  rate_limit: Type.Union([Type.Number({ exclusiveMinimum: 0, maximum: MAX_RATE_LIMIT }), Type.Null()]),
  max_concurrency: Type.Integer({ minimum: 1, maximum: MAX_CONCURRENCY }),
  disabled: Type.Boolean(),
};

const CreateBody = Type.Object(
  {
    url: endpointFields.url,
    event_types: Type.Optional(endpointFields.event_types),
    venues: Type.Optional(endpointFields.venues),
    description: Type.Optional(endpointFields.description),
    rate_limit: Type.Optional(endpointFields.rate_limit),
    max_concurrency: Type.Optional(endpointFields.max_concurrency),
    disabled: Type.Optional(endpointFields.disabled),
    secret: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  },
  { additionalProperties: false },
);
type CreateBody = Static<typeof CreateBody>;

const PatchBody = Type.Object(
  {
    url: Type.Optional(endpointFields.url),
    event_types: Type.Optional(endpointFields.event_types),
    venues: Type.Optional(endpointFields.venues),
    description: Type.Optional(endpointFields.description),
    rate_limit: Type.Optional(endpointFields.rate_limit),
    max_concurrency: Type.Optional(endpointFields.max_concurrency),
    disabled: Type.Optional(endpointFields.disabled),
  },
  { additionalProperties: false, minProperties: 1 },
);
type PatchBody = Static<typeof PatchBody>;

const ListQuery = Type.Object(
  {
    disabled: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
    after: Type.Optional(Id),
    limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,4}$' })),
  },
  { additionalProperties: false },
);
type ListQuery = Static<typeof ListQuery>;

const RotateBody = Type.Object(
  {
    secret: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
    grace_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_GRACE_SECONDS })),
  },
  { additionalProperties: false },
);
type RotateBody = Static<typeof RotateBody>;

const TestBody = Type.Object(
  { data: Type.Optional(Type.Record(Type.String(), Type.Unknown())) },
  { additionalProperties: false },
);
type TestBody = Static<typeof TestBody>;

function invalidField(field: string, message: string, extra: Record<string, unknown> = {}): GatesyncError {
  return new GatesyncError('validation_failed', message, { details: { field, ...extra } });
}

/** The event types as typed, or `validation_failed` naming every unknown one. */
function eventTypes(types: readonly string[]): EventType[] {
  const unknown = types.filter((t) => !isEventType(t));
  if (unknown.length > 0) {
    throw invalidField(
      'body/event_types',
      `unknown event type${unknown.length === 1 ? '' : 's'} ${unknown.map((t) => `"${t}"`).join(', ')}; known: ${EVENT_TYPES.join(', ')}`,
      { unknown },
    );
  }
  return types.filter(isEventType);
}

/** A caller-supplied secret, checked; the error never repeats it. */
function checkedSecret(secret: string, field: string): string {
  try {
    parseSecret(secret);
  } catch (err: unknown) {
    if (err instanceof GatesyncError) throw invalidField(field, `${field}: ${err.message}`);
    throw err;
  }
  return secret;
}

/**
 * Admin keys only, checked before the body is validated, so a key without the right never learns what a
 * valid body looks like. Runs after the hub's own onRequest hook has authenticated the caller.
 */
async function adminOnly(request: FastifyRequest): Promise<void> {
  assertAdmin(request.caller as Caller);
}

/** Routes whose body is optional: no body at all is read as `{}`. */
async function emptyBodyIsEmptyObject(request: FastifyRequest): Promise<void> {
  if (request.body === undefined || request.body === null) request.body = {};
}

function notFound(id: string): GatesyncError {
  return new GatesyncError('not_found', `no webhook endpoint ${id}`, { details: { id } });
}

/** The hostname alone, for logs: a URL's path or query may carry a receiver's token. */
function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '?';
  }
}

function disabledNow(e: EndpointRecord, now: string): EndpointRecord {
  // Disabling a disabled endpoint keeps the first reason (a 410 or a failing streak says more than 'manual').
  if (e.disabled) return e;
  return { ...e, disabled: true, disabled_reason: 'manual', disabled_at: now, updated_at: now };
}

function enabledNow(e: EndpointRecord, now: string): EndpointRecord {
  return {
    ...e,
    disabled: false,
    disabled_reason: null,
    disabled_at: null,
    failing_since: null,
    updated_at: now,
  };
}

export function registerEndpointRoutes(api: FastifyInstance, deps: EndpointRouteDeps): void {
  const { store, logger } = deps;
  const policy = { allowHttp: deps.settings.allowHttp, allowedCidrs: deps.settings.allowedCidrs };

  /** The URL as normalised by the SSRF check, or `webhook_url_refused` with its exact reason. */
  async function checkedUrl(url: string): Promise<string> {
    const verdict =
      deps.resolver === undefined
        ? await validateWebhookUrl(url, policy)
        : await validateWebhookUrl(url, policy, deps.resolver);
    if (!verdict.ok) {
      throw new GatesyncError('webhook_url_refused', `webhook URL refused: ${verdict.reason}`, {
        details: { field: 'body/url', reason: verdict.reason },
      });
    }
    return verdict.url;
  }

  function existing(id: string): EndpointRecord {
    const record = store.get(id);
    if (record === undefined) throw notFound(id);
    return record;
  }

  /** A change through the store's read-modify-write, 404 when the endpoint is gone. */
  async function change(
    id: string,
    fn: (current: EndpointRecord, now: string) => EndpointRecord,
  ): Promise<EndpointRecord> {
    const updated = await store.update(id, (current) => fn(current, new Date().toISOString()));
    if (updated === undefined) throw notFound(id);
    await deps.sourcesSettled();
    return updated;
  }

  api.post<{ Body: CreateBody }>(
    '/v1/webhooks/endpoints',
    { onRequest: adminOnly, schema: { body: CreateBody } },
    async (request, reply) => {
      const body = request.body;
      const types = body.event_types === undefined ? [...DEFAULT_EVENT_TYPES] : eventTypes(body.event_types);
      const secrets = newSecretRing(
        body.secret === undefined ? undefined : checkedSecret(body.secret, 'body/secret'),
      );
      const url = await checkedUrl(body.url);
      const now = new Date().toISOString();
      const disabled = body.disabled === true;
      const record: EndpointRecord = {
        id: newId(ENDPOINT_ID_PREFIX),
        url,
        description: body.description ?? '',
        event_types: types,
        venues: body.venues ?? null,
        rate_limit: body.rate_limit ?? null,
        max_concurrency: body.max_concurrency ?? DEFAULT_MAX_CONCURRENCY,
        disabled,
        disabled_reason: disabled ? 'manual' : null,
        disabled_at: disabled ? now : null,
        failing_since: null,
        secrets,
        created_at: now,
        updated_at: now,
      };
      await store.create(record);
      await deps.sourcesSettled();
      logger.info({ endpoint: record.id, host: hostOf(url), event_types: types }, 'webhook endpoint created');
      return reply.status(201).send({ ...publicEndpoint(record), secret: secrets.current });
    },
  );

  api.get<{ Querystring: ListQuery }>(
    '/v1/webhooks/endpoints',
    { onRequest: adminOnly, schema: { querystring: ListQuery } },
    async (request) => {
      const q = request.query;
      const limit = q.limit === undefined ? DEFAULT_PAGE : Number(q.limit);
      if (limit < 1 || limit > MAX_PAGE) {
        throw invalidField('querystring/limit', `querystring/limit must be between 1 and ${MAX_PAGE}`);
      }
      const wanted = q.disabled === undefined ? undefined : q.disabled === 'true';
      const { after } = q;
      const matching = store
        .list()
        .filter(
          (e) => (wanted === undefined || e.disabled === wanted) && (after === undefined || e.id > after),
        );
      const page = matching.slice(0, limit);
      const now = Date.now();
      const endpoints: PublicEndpoint[] = page.map((e) => publicEndpoint(e, now));
      const last = page[page.length - 1];
      return { endpoints, next_after: matching.length > limit && last !== undefined ? last.id : null };
    },
  );

  api.get<{ Params: IdParams }>(
    '/v1/webhooks/endpoints/:id',
    { onRequest: adminOnly, schema: { params: IdParams } },
    async (request) => {
      return publicEndpoint(existing(request.params.id));
    },
  );

  api.patch<{ Params: IdParams; Body: PatchBody }>(
    '/v1/webhooks/endpoints/:id',
    { onRequest: adminOnly, schema: { params: IdParams, body: PatchBody } },
    async (request) => {
      const { id } = request.params;
      const body = request.body;
      existing(id);
      const types = body.event_types === undefined ? undefined : eventTypes(body.event_types);
      const url = body.url === undefined ? undefined : await checkedUrl(body.url);
      const updated = await change(id, (current, now) => {
        let next: EndpointRecord = {
          ...current,
          ...(url === undefined ? {} : { url }),
          ...(types === undefined ? {} : { event_types: types }),
          ...(body.venues === undefined ? {} : { venues: body.venues }),
          ...(body.description === undefined ? {} : { description: body.description }),
          ...(body.rate_limit === undefined ? {} : { rate_limit: body.rate_limit }),
          ...(body.max_concurrency === undefined ? {} : { max_concurrency: body.max_concurrency }),
          updated_at: now,
        };
        if (body.disabled === true) next = disabledNow(next, now);
        else if (body.disabled === false && next.disabled) next = enabledNow(next, now);
        return next;
      });
      logger.info(
        { endpoint: id, fields: Object.keys(body), ...(url === undefined ? {} : { host: hostOf(url) }) },
        'webhook endpoint changed',
      );
      return publicEndpoint(updated);
    },
  );

  api.delete<{ Params: IdParams }>(
    '/v1/webhooks/endpoints/:id',
    { onRequest: adminOnly, schema: { params: IdParams } },
    async (request, reply) => {
      const { id } = request.params;
      if (!(await store.remove(id))) throw notFound(id);
      logger.info({ endpoint: id }, 'webhook endpoint deleted');
      return reply.status(204).send();
    },
  );

  api.post<{ Params: IdParams }>(
    '/v1/webhooks/endpoints/:id/disable',
    { onRequest: adminOnly, schema: { params: IdParams } },
    async (request) => {
      const { id } = request.params;
      existing(id);
      const updated = await change(id, disabledNow);
      logger.info({ endpoint: id, reason: updated.disabled_reason }, 'webhook endpoint disabled');
      return publicEndpoint(updated);
    },
  );

  api.post<{ Params: IdParams }>(
    '/v1/webhooks/endpoints/:id/enable',
    { onRequest: adminOnly, schema: { params: IdParams } },
    async (request) => {
      const { id } = request.params;
      existing(id);
      const updated = await change(id, enabledNow);
      logger.info({ endpoint: id }, 'webhook endpoint enabled');
      return publicEndpoint(updated);
    },
  );

  api.get<{ Params: IdParams }>(
    '/v1/webhooks/endpoints/:id/secret',
    { onRequest: adminOnly, schema: { params: IdParams } },
    async (request) => {
      return { secret: existing(request.params.id).secrets.current };
    },
  );

  api.post<{ Params: IdParams; Body: RotateBody }>(
    '/v1/webhooks/endpoints/:id/secret/rotate',
    {
      onRequest: adminOnly,
      preValidation: emptyBodyIsEmptyObject,
      schema: { params: IdParams, body: RotateBody },
    },
    async (request) => {
      const { id } = request.params;
      const body = request.body;
      existing(id);
      const next = body.secret === undefined ? undefined : checkedSecret(body.secret, 'body/secret');
      const graceMs =
        body.grace_seconds === undefined ? DEFAULT_ROTATION_GRACE_MS : body.grace_seconds * 1000;
      const updated = await change(id, (current, now) => {
        let secrets: EndpointRecord['secrets'];
        try {
          secrets = rotateSecret(current.secrets, Date.parse(now), {
            ...(next === undefined ? {} : { next }),
            graceMs,
          });
        } catch (err: unknown) {
          if (err instanceof GatesyncError) throw invalidField('body/secret', err.message);
          throw err;
        }
        return { ...current, secrets, updated_at: now };
      });
      const shown = publicEndpoint(updated);
      logger.info(
        { endpoint: id, previous_secret_expires_at: shown.previous_secret_expires_at },
        'webhook endpoint secret rotated',
      );
      return {
        secret: updated.secrets.current,
        previous_secret_expires_at: shown.previous_secret_expires_at,
      };
    },
  );

  api.post<{ Params: IdParams; Body: TestBody }>(
    '/v1/webhooks/endpoints/:id/test',
    {
      onRequest: adminOnly,
      preValidation: emptyBodyIsEmptyObject,
      schema: { params: IdParams, body: TestBody },
    },
    async (request, reply) => {
      const record = existing(request.params.id);
      const sent = await deps.sendTest(record, request.body.data);
      logger.info({ endpoint: record.id, message: sent.message_id }, 'webhook test message queued');
      return reply.status(202).send({ message_id: sent.message_id });
    },
  );
}
