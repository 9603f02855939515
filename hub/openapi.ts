/**
 * The OpenAPI 3.1 document of the hub's HTTP API, served without authentication at GET /openapi.json.
 *
 * How it is built: `registerOpenApi` runs before any other route is added (hub/http-api.ts
 * `publicRoutes`) and hooks Fastify's `onRoute`, so it sees every route as registered, with the typebox
 * schemas the route validates its path parameters, query string and body with. Those become the
 * document's parameters and request bodies as they are (OpenAPI 3.1 uses JSON Schema 2020-12), so what
 * the document says a route accepts cannot drift from what it does accept. The routes declare no
 * response schemas (Fastify would then filter answers through them), so the answers are described here,
 * in typebox, and test/hub-openapi.test.ts checks real answers of a running hub against them.
 *
 * A route registered without an entry in OPERATIONS is still listed, marked `x-gatesync-undocumented`.
 */
import type { FastifyInstance, RouteOptions } from 'fastify';
import { type TSchema, Type } from 'typebox';
import {
  Closed,
  ErrorBody,
  ErrorEnvelope,
  IsoTime,
  type Json,
  type JsonObject,
  Nullable,
  openApiDocument,
  plain,
  schemaRef as ref,
  TICKET_FIELDS,
} from '../shared/openapi.ts';
import { DashboardSnapshot } from './dashboard/schema.ts';

const Ok = Type.Object({ ok: Type.Literal(true) }, Closed);

const Ticket = Type.Object(
  {
    id: Type.String(),
    venue: Type.String(),
    ...TICKET_FIELDS,
    status: Type.Union([Type.Literal('valid'), Type.Literal('revoked')]),
    revoked_reason: Nullable(Type.String()),
    issued_at: IsoTime,
    updated_at: IsoTime,
    qr: Type.String({ description: 'The QR token (GS1.…) to print on the ticket' }),
    rev: Type.Integer({ minimum: 1 }),
  },
  Closed,
);

const BatchResult = Type.Object(
  {
    issued: Type.Integer({ minimum: 0 }),
    failed: Type.Integer({ minimum: 0 }),
    results: Type.Array(
      Type.Union([
        Type.Object({ index: Type.Integer({ minimum: 0 }), ticket: Ticket }, Closed),
        Type.Object({ index: Type.Integer({ minimum: 0 }), error: ErrorBody }, Closed),
      ]),
    ),
  },
  Closed,
);

const Cursor = Type.String({ pattern: '^[0-9]+$', description: 'Pass as `after` to read on' });

const Checkin = Type.Object(
  {
    id: Type.String(),
    venue: Type.String(),
    agent: Type.String(),
    gate: Type.String(),
    seq: Type.Integer({ minimum: 1 }),
    ticket_id: Nullable(Type.String()),
    direction: Type.Union([Type.Literal('in'), Type.Literal('out')]),
    decision: Type.Union([Type.Literal('admit'), Type.Literal('reject')]),
    reason: Nullable(Type.String()),
    scanner: Type.String(),
    method: Type.String(),
    unsynced_ticket: Type.Boolean(),
    scanned_at: IsoTime,
    cursor: Cursor,
  },
  Closed,
);
const CheckinPage = Type.Object({ checkins: Type.Array(Checkin), next_cursor: Nullable(Cursor) }, Closed);

const Admission = Type.Object(
  { checkin_id: Type.String(), agent: Type.String(), gate: Type.String(), scanned_at: IsoTime },
  Closed,
);
const Conflict = Type.Object(
  {
    id: Type.String(),
    type: Type.Literal('checkin.conflict'),
    venue: Type.String(),
    ticket_id: Type.String(),
    first: Admission,
    second: Admission,
    detected_at: IsoTime,
    cursor: Cursor,
  },
  Closed,
);
const ConflictPage = Type.Object({ conflicts: Type.Array(Conflict), next_cursor: Nullable(Cursor) }, Closed);

const Agent = Type.Object(
  {
    agent: Type.String(),
    gate: Type.String(),
    online: Type.Boolean(),
    last_heartbeat: IsoTime,
    last_heartbeat_age_ms: Type.Number(),
    outbox_depth: Type.Integer({ minimum: 0 }),
    oldest_unsent_age_ms: Nullable(Type.Number()),
    tickets_held: Type.Integer({ minimum: 0 }),
    last_event_seq: Type.Integer({ minimum: 0 }),
    sync_pending: Nullable(Type.Integer({ minimum: 0 })),
    checkins_total: Type.Integer({ minimum: 0 }),
  },
  Closed,
);
const AgentList = Type.Object({ agents: Type.Array(Agent) }, Closed);

const apiKeyFields = {
  id: Type.String(),
  name: Type.String(),
  venues: Nullable(Type.Array(Type.String())),
  admin: Type.Boolean(),
  created_at: IsoTime,
};
const ApiKey = Type.Object(apiKeyFields, Closed);
const ApiKeyCreated = Type.Object(
  { ...apiKeyFields, key: Type.String({ description: 'Shown once; the hub keeps only its hash' }) },
  Closed,
);
const ApiKeyList = Type.Object({ keys: Type.Array(ApiKey) }, Closed);

const PublicKeys = Type.Object(
  {
    keys: Type.Array(
      Type.Object(
        {
          kid: Type.String(),
          public_key: Type.String(),
          status: Type.Union([Type.Literal('active'), Type.Literal('trusted')]),
        },
        Closed,
      ),
    ),
  },
  Closed,
);

const endpointFields = {
  id: Type.String(),
  url: Type.String(),
  description: Type.String(),
  event_types: Type.Array(Type.String()),
  venues: Nullable(Type.Array(Type.String())),
  rate_limit: Nullable(Type.Number()),
  max_concurrency: Type.Integer({ minimum: 1 }),
  disabled: Type.Boolean(),
  disabled_reason: Nullable(Type.String()),
  disabled_at: Nullable(IsoTime),
  failing_since: Nullable(IsoTime),
  created_at: IsoTime,
  updated_at: IsoTime,
  previous_secret_expires_at: Nullable(IsoTime),
};
const Endpoint = Type.Object(endpointFields, Closed);
const Secret = Type.String({ pattern: '^whsec_', description: 'Standard Webhooks secret' });
const EndpointCreated = Type.Object({ ...endpointFields, secret: Secret }, Closed);
const EndpointList = Type.Object(
  { endpoints: Type.Array(Endpoint), next_after: Nullable(Type.String()) },
  Closed,
);
const EndpointSecret = Type.Object({ secret: Secret }, Closed);
const SecretRotated = Type.Object({ secret: Secret, previous_secret_expires_at: Nullable(IsoTime) }, Closed);
const MessageQueued = Type.Object({ message_id: Type.String() }, Closed);
const ResendQueued = Type.Object({ message_id: Type.String(), endpoint_id: Type.String() }, Closed);

const attemptFields = {
  id: Type.String(),
  message_id: Type.String(),
  endpoint_id: Type.String(),
  event_type: Type.String(),
  attempt: Type.Integer({ minimum: 1 }),
  trigger: Type.Union(['event', 'retry', 'resend', 'recover', 'redrive', 'test'].map((t) => Type.Literal(t))),
  at: IsoTime,
  outcome: Type.Union([Type.Literal('succeeded'), Type.Literal('failed')]),
  status_code: Nullable(Type.Integer()),
  duration_ms: Type.Number({ minimum: 0 }),
  error: Nullable(Type.String()),
  response_body: Type.String(),
  response_truncated: Type.Boolean(),
  next: Type.Union(['delivered', 'retry', 'dead_letter', 'endpoint_disabled'].map((t) => Type.Literal(t))),
  next_attempt_at: Nullable(IsoTime),
};
const Attempt = Type.Object(attemptFields, Closed);
const AttemptPage = Type.Object(
  {
    attempts: Type.Array(Type.Object({ ...attemptFields, cursor: Cursor }, Closed)),
    next_cursor: Nullable(Cursor),
  },
  Closed,
);

const DeadLetter = Type.Object(
  {
    message_id: Type.String(),
    endpoint_id: Type.String(),
    event_type: Type.String(),
    attempts: Type.Integer({ minimum: 1 }),
    reason: Type.String(),
    dead_at: IsoTime,
    cursor: Cursor,
  },
  Closed,
);
const DeadLetterPage = Type.Object(
  { dead_letters: Type.Array(DeadLetter), next_cursor: Nullable(Cursor) },
  Closed,
);

const Message = Type.Object(
  {
    id: Type.String({ description: 'Sent as `webhook-id`' }),
    type: Type.String(),
    timestamp: IsoTime,
    data: Type.Record(Type.String(), Type.Unknown()),
    venue: Nullable(Type.String()),
    order_key: Nullable(Type.String()),
    attempts: Type.Array(Attempt),
  },
  Closed,
);

const Job = Type.Object(
  {
    id: Type.String(),
    kind: Type.Union([Type.Literal('recover'), Type.Literal('redrive')]),
    endpoint_id: Type.String(),
    since: Nullable(IsoTime),
    status: Type.Union([Type.Literal('running'), Type.Literal('done'), Type.Literal('failed')]),
    queued: Type.Integer({ minimum: 0 }),
    error: Nullable(Type.String()),
    started_at: IsoTime,
    finished_at: Nullable(IsoTime),
  },
  Closed,
);
const JobAccepted = Type.Object({ job: Job }, Closed);

const EndpointHealth = Type.Object(
  {
    in_flight: Type.Integer({ minimum: 0 }),
    breaker: Type.String({ description: 'closed, open or half_open' }),
    attempts: Type.Integer({ minimum: 0, description: 'Recent attempts this hub process made' }),
    succeeded: Type.Integer({ minimum: 0 }),
    failed: Type.Integer({ minimum: 0 }),
    success_rate: Nullable(Type.Number({ minimum: 0, maximum: 1 })),
    latency_p50_ms: Nullable(Type.Number({ minimum: 0 })),
    latency_p95_ms: Nullable(Type.Number({ minimum: 0 })),
    last_error: Nullable(Type.String()),
    last_error_at: Nullable(IsoTime),
    last_attempt_at: Nullable(IsoTime),
  },
  Closed,
);
const WebhookHealth = Type.Object(
  {
    endpoints: Type.Array(
      Type.Object(
        {
          ...endpointFields,
          health: Nullable(EndpointHealth),
          queued: Nullable(Type.Integer({ minimum: 0, description: 'Deliveries waiting or in flight' })),
        },
        Closed,
      ),
    ),
  },
  Closed,
);

/** Every named schema of the document. */
const SCHEMAS: Record<string, TSchema> = {
  Error: ErrorEnvelope,
  Ok,
  Ticket,
  BatchResult,
  Checkin,
  CheckinPage,
  Conflict,
  ConflictPage,
  Agent,
  AgentList,
  ApiKey,
  ApiKeyCreated,
  ApiKeyList,
  PublicKeys,
  Endpoint,
  EndpointCreated,
  EndpointList,
  EndpointSecret,
  SecretRotated,
  MessageQueued,
  ResendQueued,
  Attempt,
  AttemptPage,
  DeadLetter,
  DeadLetterPage,
  Message,
  Job,
  JobAccepted,
  EndpointHealth,
  WebhookHealth,
  DashboardSnapshot,
};

/** A response: a schema name (JSON), `null` (no body), or a media type with a string body. */
type ResponseSpec = [description: string, body: string | null | { media: string }];

interface Operation {
  operationId: string;
  tag: 'tickets' | 'check-ins' | 'agents' | 'api keys' | 'webhooks' | 'deliveries' | 'dashboard' | 'hub';
  summary: string;
  description?: string;
  /** `public`: no key; `key`: any key with access to the venue; `admin`: an admin key. */
  auth: 'public' | 'key' | 'admin';
  responses: Record<string, ResponseSpec>;
}

const E = (description: string): ResponseSpec => [description, 'Error'];
const AUTH_ERRORS = {
  '401': E('Missing or unknown API key (unauthorized)'),
  '403': E('The key may not act on this venue, or is not an admin key (forbidden)'),
};
const BODY_ERRORS = {
  '400': E('The body or a parameter is not valid (validation_failed, invalid_json)'),
  '413': E('Body too large (payload_too_large)'),
  '415': E('Not application/json (unsupported_media_type)'),
};
const NOT_FOUND = { '404': E('Not found (not_found)') };
const IDEMPOTENCY = {
  '409': E(
    'A twin request with the same Idempotency-Key is running (idempotency_in_progress), or a conflict',
  ),
  '422': E('The Idempotency-Key was used with another body (idempotency_mismatch)'),
};
const URL_REFUSED = {
  '422': E('The URL is not https, or resolves to a refused address (webhook_url_refused)'),
};
const BUS = { '503': E('NATS is unreachable right now (nats_unavailable); retry later') };

/** Keyed by `<method> <OpenAPI path>`. */
const OPERATIONS: Record<string, Operation> = {
  'post /v1/venues/{venue}/tickets': {
    operationId: 'issueTicket',
    tag: 'tickets',
    summary: 'Issue one ticket',
    description: 'Signed and published to the venue. Takes an Idempotency-Key header.',
    auth: 'key',
    responses: {
      '201': ['The ticket', 'Ticket'],
      ...BODY_ERRORS,
      ...AUTH_ERRORS,
      '409': E('A ticket with this id exists (ticket_exists), or an Idempotency-Key twin is running'),
      '422': IDEMPOTENCY['422'],
      ...BUS,
    },
  },
  'post /v1/venues/{venue}/tickets:batch': {
    operationId: 'issueTickets',
    tag: 'tickets',
    summary: 'Issue up to 10,000 tickets',
    description: 'Each ticket succeeds or fails on its own; the answer lists both, in order.',
    auth: 'key',
    responses: {
      '200': ['What became of each ticket', 'BatchResult'],
      ...BODY_ERRORS,
      ...AUTH_ERRORS,
      ...IDEMPOTENCY,
      ...BUS,
    },
  },
  'post /v1/venues/{venue}/tickets/{id}/revoke': {
    operationId: 'revokeTicket',
    tag: 'tickets',
    summary: 'Revoke a ticket',
    auth: 'key',
    responses: {
      '200': ['The revoked ticket', 'Ticket'],
      ...BODY_ERRORS,
      ...AUTH_ERRORS,
      ...NOT_FOUND,
      '409': E('Changed meanwhile (revision_conflict), or an Idempotency-Key twin is running'),
      '422': IDEMPOTENCY['422'],
      ...BUS,
    },
  },
  'get /v1/venues/{venue}/tickets/{id}': {
    operationId: 'getTicket',
    tag: 'tickets',
    summary: "A ticket's latest state",
    auth: 'key',
    responses: { '200': ['The ticket', 'Ticket'], ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'get /v1/venues/{venue}/checkins': {
    operationId: 'listCheckins',
    tag: 'check-ins',
    summary: "The venue's check-ins, oldest first, paged by cursor",
    auth: 'key',
    responses: {
      '200': ['A page of check-ins', 'CheckinPage'],
      '400': BODY_ERRORS['400'],
      ...AUTH_ERRORS,
      ...BUS,
    },
  },
  'get /v1/venues/{venue}/conflicts': {
    operationId: 'listConflicts',
    tag: 'check-ins',
    summary: "The venue's double entries, oldest first, paged by cursor",
    auth: 'key',
    responses: {
      '200': ['A page of conflicts', 'ConflictPage'],
      '400': BODY_ERRORS['400'],
      ...AUTH_ERRORS,
      ...BUS,
    },
  },
  'get /v1/venues/{venue}/agents': {
    operationId: 'listAgents',
    tag: 'agents',
    summary: "The venue's agents: latest heartbeat, online, sync lag, outbox",
    auth: 'key',
    responses: { '200': ['The agents', 'AgentList'], ...AUTH_ERRORS, ...BUS },
  },
  'post /v1/api-keys': {
    operationId: 'createApiKey',
    tag: 'api keys',
    summary: 'Create an API key (shown once)',
    auth: 'admin',
    responses: { '201': ['The key', 'ApiKeyCreated'], ...BODY_ERRORS, ...AUTH_ERRORS, ...BUS },
  },
  'get /v1/api-keys': {
    operationId: 'listApiKeys',
    tag: 'api keys',
    summary: 'Every API key (without the keys themselves)',
    auth: 'admin',
    responses: { '200': ['The keys', 'ApiKeyList'], ...AUTH_ERRORS },
  },
  'delete /v1/api-keys/{id}': {
    operationId: 'deleteApiKey',
    tag: 'api keys',
    summary: 'Delete an API key',
    auth: 'admin',
    responses: { '204': ['Deleted', null], ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'post /v1/webhooks/endpoints': {
    operationId: 'createEndpoint',
    tag: 'webhooks',
    summary: 'Register a webhook endpoint (its secret is in the answer)',
    description: 'The URL must be https (or an allowed address); see docs/webhooks-api.md.',
    auth: 'admin',
    responses: {
      '201': ['The endpoint and its secret', 'EndpointCreated'],
      ...BODY_ERRORS,
      ...AUTH_ERRORS,
      ...URL_REFUSED,
      ...BUS,
    },
  },
  'get /v1/webhooks/endpoints': {
    operationId: 'listEndpoints',
    tag: 'webhooks',
    summary: 'Webhook endpoints, by id (age), paged with `after`',
    auth: 'admin',
    responses: { '200': ['A page of endpoints', 'EndpointList'], '400': BODY_ERRORS['400'], ...AUTH_ERRORS },
  },
  'get /v1/webhooks/endpoints/{id}': {
    operationId: 'getEndpoint',
    tag: 'webhooks',
    summary: 'One endpoint',
    auth: 'admin',
    responses: { '200': ['The endpoint', 'Endpoint'], ...AUTH_ERRORS, ...NOT_FOUND },
  },
  'patch /v1/webhooks/endpoints/{id}': {
    operationId: 'changeEndpoint',
    tag: 'webhooks',
    summary: 'Change an endpoint',
    auth: 'admin',
    responses: {
      '200': ['The endpoint', 'Endpoint'],
      ...BODY_ERRORS,
      ...AUTH_ERRORS,
      ...NOT_FOUND,
      ...URL_REFUSED,
      ...BUS,
    },
  },
  'delete /v1/webhooks/endpoints/{id}': {
    operationId: 'deleteEndpoint',
    tag: 'webhooks',
    summary: 'Delete an endpoint and its queue',
    auth: 'admin',
    responses: { '204': ['Deleted', null], ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'post /v1/webhooks/endpoints/{id}/disable': {
    operationId: 'disableEndpoint',
    tag: 'webhooks',
    summary: 'Stop delivering (messages keep queueing)',
    auth: 'admin',
    responses: { '200': ['The endpoint', 'Endpoint'], ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'post /v1/webhooks/endpoints/{id}/enable': {
    operationId: 'enableEndpoint',
    tag: 'webhooks',
    summary: 'Deliver again',
    auth: 'admin',
    responses: { '200': ['The endpoint', 'Endpoint'], ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'get /v1/webhooks/endpoints/{id}/secret': {
    operationId: 'getEndpointSecret',
    tag: 'webhooks',
    summary: "The endpoint's current signing secret",
    auth: 'admin',
    responses: { '200': ['The secret', 'EndpointSecret'], ...AUTH_ERRORS, ...NOT_FOUND },
  },
  'post /v1/webhooks/endpoints/{id}/secret/rotate': {
    operationId: 'rotateEndpointSecret',
    tag: 'webhooks',
    summary: 'Rotate the signing secret; the old one keeps signing for a grace period',
    auth: 'admin',
    responses: {
      '200': ['The new secret', 'SecretRotated'],
      ...BODY_ERRORS,
      ...AUTH_ERRORS,
      ...NOT_FOUND,
      ...BUS,
    },
  },
  'post /v1/webhooks/endpoints/{id}/test': {
    operationId: 'testEndpoint',
    tag: 'webhooks',
    summary: 'Queue a webhook.test message to this endpoint',
    auth: 'admin',
    responses: { '202': ['Queued', 'MessageQueued'], ...BODY_ERRORS, ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'get /v1/webhooks/endpoints/{id}/attempts': {
    operationId: 'listAttempts',
    tag: 'deliveries',
    summary: "The endpoint's delivery attempts, oldest first",
    auth: 'admin',
    responses: {
      '200': ['A page of attempts', 'AttemptPage'],
      '400': BODY_ERRORS['400'],
      ...AUTH_ERRORS,
      ...NOT_FOUND,
      ...BUS,
    },
  },
  'get /v1/webhooks/endpoints/{id}/dead-letters': {
    operationId: 'listDeadLetters',
    tag: 'deliveries',
    summary: 'Messages that used up their attempts at this endpoint, oldest first',
    auth: 'admin',
    responses: {
      '200': ['A page of dead letters', 'DeadLetterPage'],
      '400': BODY_ERRORS['400'],
      ...AUTH_ERRORS,
      ...NOT_FOUND,
      ...BUS,
    },
  },
  'get /v1/webhooks/messages/{id}': {
    operationId: 'getMessage',
    tag: 'deliveries',
    summary: 'A message and every attempt at it, at every endpoint',
    auth: 'admin',
    responses: { '200': ['The message', 'Message'], ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'post /v1/webhooks/endpoints/{id}/messages/{msg}/resend': {
    operationId: 'resendMessage',
    tag: 'deliveries',
    summary: 'Deliver one message again (same webhook-id), as a fresh run of attempts',
    auth: 'admin',
    responses: { '202': ['Queued', 'ResendQueued'], ...AUTH_ERRORS, ...NOT_FOUND, ...BUS },
  },
  'post /v1/webhooks/endpoints/{id}/recover': {
    operationId: 'recoverEndpoint',
    tag: 'deliveries',
    summary: 'Re-queue the dead letters of this endpoint since a time (a background job)',
    auth: 'admin',
    responses: {
      '202': ['The job', 'JobAccepted'],
      ...BODY_ERRORS,
      ...AUTH_ERRORS,
      ...NOT_FOUND,
      '409': E('A job is already running for this endpoint (job_running)'),
    },
  },
  'post /v1/webhooks/endpoints/{id}/dead-letters/redrive': {
    operationId: 'redriveDeadLetters',
    tag: 'deliveries',
    summary: 'Re-queue every dead letter of this endpoint (a background job)',
    auth: 'admin',
    responses: {
      '202': ['The job', 'JobAccepted'],
      ...AUTH_ERRORS,
      ...NOT_FOUND,
      '409': E('A job is already running for this endpoint (job_running)'),
    },
  },
  'get /v1/webhooks/jobs/{id}': {
    operationId: 'getJob',
    tag: 'deliveries',
    summary: 'A recover or redrive job (kept by the hub process that runs it)',
    auth: 'admin',
    responses: { '200': ['The job', 'Job'], ...AUTH_ERRORS, ...NOT_FOUND },
  },
  'get /v1/webhooks/health': {
    operationId: 'webhookHealth',
    tag: 'deliveries',
    summary: "Every endpoint with this hub process's recent delivery figures",
    auth: 'admin',
    responses: { '200': ['The endpoints', 'WebhookHealth'], ...AUTH_ERRORS },
  },
  'get /v1/dashboard/summary': {
    operationId: 'dashboardSummary',
    tag: 'dashboard',
    summary: 'One dashboard snapshot: a page of venues and agents, webhooks, failed messages, conflicts',
    auth: 'admin',
    responses: { '200': ['The snapshot', 'DashboardSnapshot'], '400': BODY_ERRORS['400'], ...AUTH_ERRORS },
  },
  'get /v1/dashboard/stream': {
    operationId: 'dashboardStream',
    tag: 'dashboard',
    summary: 'The same snapshot as server-sent events, one every 1.5 s',
    description:
      'Each event is `event: snapshot` with a DashboardSnapshot as `data` (or `event: error` with an error ' +
      'envelope). The stream stays open until the client closes it. Browsers read it with fetch() and a ' +
      'stream reader, since EventSource cannot send the Authorization header.',
    auth: 'admin',
    responses: {
      '200': ['Server-sent events', { media: 'text/event-stream' }],
      '400': BODY_ERRORS['400'],
      ...AUTH_ERRORS,
    },
  },
  'get /dashboard': {
    operationId: 'dashboardPage',
    tag: 'dashboard',
    summary: 'The operations dashboard (HTML, no data of its own)',
    description: 'A static page; it asks for an admin key and reads /v1/dashboard/* with it.',
    auth: 'public',
    responses: { '200': ['The page', { media: 'text/html' }] },
  },
  'get /metrics': {
    operationId: 'metrics',
    tag: 'hub',
    summary: 'Prometheus metrics (text exposition format)',
    auth: 'admin',
    responses: { '200': ['Prometheus text', { media: 'text/plain' }], ...AUTH_ERRORS },
  },
  'get /.well-known/gatesync/keys.json': {
    operationId: 'publicKeys',
    tag: 'hub',
    summary: "The hub's event-signing public keys",
    auth: 'public',
    responses: { '200': ['The keys', 'PublicKeys'] },
  },
  'get /healthz': {
    operationId: 'healthz',
    tag: 'hub',
    summary: 'Liveness',
    auth: 'public',
    responses: { '200': ['The process is alive', 'Ok'] },
  },
  'get /readyz': {
    operationId: 'readyz',
    tag: 'hub',
    summary: 'Readiness: connected to NATS',
    auth: 'public',
    responses: { '200': ['Ready', 'Ok'], '503': E('not_ready: not connected to NATS') },
  },
  'get /openapi.json': {
    operationId: 'openapi',
    tag: 'hub',
    summary: 'This document',
    auth: 'public',
    responses: { '200': ['OpenAPI 3.1', { media: 'application/json' }] },
  },
};

/** `/v1/venues/:venue/tickets::batch` → `/v1/venues/{venue}/tickets:batch`. */
export function openApiPath(fastifyUrl: string): string {
  // Fastify writes a literal colon as `::`; a single colon starts a parameter.
  return fastifyUrl
    .split('::')
    .map((part) => part.replace(/:([A-Za-z0-9_]+)/g, '{$1}'))
    .join(':');
}

interface CollectedRoute {
  method: string;
  path: string;
  schema: { params?: unknown; querystring?: unknown; body?: unknown };
}

function parameters(where: 'path' | 'query', schema: unknown): Json[] {
  if (schema === undefined) return [];
  const s = plain(schema) as { properties?: Record<string, JsonObject>; required?: string[] };
  return Object.entries(s.properties ?? {}).map(([name, p]) => {
    const { description, ...rest } = p;
    return {
      name,
      in: where,
      required: where === 'path' || (s.required ?? []).includes(name),
      ...(typeof description === 'string' ? { description } : {}),
      schema: rest,
    };
  });
}

function response([description, body]: ResponseSpec): Json {
  if (body === null) return { description };
  if (typeof body === 'string')
    return { description, content: { 'application/json': { schema: ref(body) } } };
  const schema: Json = body.media === 'application/json' ? { type: 'object' } : { type: 'string' };
  return { description, content: { [body.media]: { schema } } };
}

export function buildHubOpenApi(routes: readonly CollectedRoute[]): JsonObject {
  const paths: Record<string, JsonObject> = {};
  for (const r of routes) {
    const method = r.method.toLowerCase();
    const op = OPERATIONS[`${method} ${r.path}`];
    const entry: JsonObject = op
      ? {
          operationId: op.operationId,
          tags: [op.tag],
          summary: op.summary,
          ...(op.description === undefined ? {} : { description: op.description }),
          ...(op.auth === 'public' ? { security: [] } : {}),
          ...(op.auth === 'admin' ? { 'x-gatesync-admin-only': true } : {}),
        }
      : { summary: 'Not described yet', 'x-gatesync-undocumented': true };
    const params = [...parameters('path', r.schema.params), ...parameters('query', r.schema.querystring)];
    if (params.length > 0) entry.parameters = params;
    if (r.schema.body !== undefined) {
      entry.requestBody = {
        required: true,
        content: { 'application/json': { schema: plain(r.schema.body) } },
      };
    }
    const responses: JsonObject = {};
    for (const [status, spec] of Object.entries(op?.responses ?? { default: E('An error') })) {
      responses[status] = response(spec);
    }
    entry.responses = responses;
    const forPath = paths[r.path] ?? {};
    forPath[method] = entry;
    paths[r.path] = forPath;
  }
  const schemas: JsonObject = {};
  for (const [name, s] of Object.entries(SCHEMAS)) schemas[name] = plain(s);
  return openApiDocument({
    title: 'gatesync hub',
    description:
      "The hub's API for ticketing platforms (tickets, check-ins, conflicts, agents), for webhook " +
      'subscriptions and their deliveries, and for the operations dashboard. See docs/api.md and ' +
      'docs/webhooks-api.md. Operations marked x-gatesync-admin-only need an admin key.',
    tags: [
      { name: 'tickets', description: 'Issuing and revoking tickets' },
      { name: 'check-ins', description: 'What the gates recorded, and double entries' },
      { name: 'agents', description: 'Gate agents' },
      { name: 'api keys', description: 'API keys (admin)' },
      { name: 'webhooks', description: 'Webhook endpoints (admin)' },
      { name: 'deliveries', description: 'Webhook attempts, dead letters, replays (admin)' },
      { name: 'dashboard', description: 'The operations dashboard (admin)' },
      { name: 'hub', description: 'Health, metrics, keys, this document' },
    ],
    paths,
    securitySchemes: {
      apiKey: {
        type: 'http',
        scheme: 'bearer',
        description: 'An API key: GATESYNC_ADMIN_KEY, or one made with POST /v1/api-keys.',
      },
    },
    schemas,
    security: [{ apiKey: [] }],
  });
}

/**
 * Hooks route registration (call it before any other route is added) and serves the document at
 * GET /openapi.json, built on the first request (every route is registered by then) and kept.
 */
export function registerOpenApi(app: FastifyInstance): void {
  // The routes createHttpServer adds before this hook can see them.
  const routes: CollectedRoute[] = [
    { method: 'GET', path: '/healthz', schema: {} },
    { method: 'GET', path: '/readyz', schema: {} },
  ];
  app.addHook('onRoute', (options: RouteOptions) => {
    const methods = Array.isArray(options.method) ? options.method : [options.method];
    const schema = (options.schema ?? {}) as CollectedRoute['schema'];
    for (const method of methods) {
      if (method === 'HEAD' || options.url.includes('*')) continue;
      routes.push({ method, path: openApiPath(options.url), schema });
    }
  });
  let doc: string | undefined;
  app.get('/openapi.json', async (_request, reply) => {
    doc ??= JSON.stringify(buildHubOpenApi(routes));
    return reply.type('application/json; charset=utf-8').header('cache-control', 'no-store').send(doc);
  });
}
