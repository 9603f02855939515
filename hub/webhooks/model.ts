/**
 * The webhook data model: endpoints (kept in the GS_WEBHOOK_ENDPOINTS KV bucket), messages (one per event,
 * kept in GS_WH_MESSAGES), deliveries (one per message and endpoint, queued in GS_WEBHOOKS), attempts
 * (GS_ATTEMPTS) and dead letters (GS_WH_DEAD). See docs/webhooks.md for how they move.
 */
import type { SecretRing } from './secrets.ts';
import type { EndpointHealth } from './worker.ts';

/** Every event type an endpoint can subscribe to, and the ones a new endpoint gets when it names none. */
export const EVENT_TYPES = [
  'checkin.created',
  'checkin.rejected',
  'checkin.conflict',
  'ticket.issued',
  'ticket.revoked',
  'agent.offline',
  'agent.online',
  'endpoint.disabled',
  'message.attempt.exhausted',
  'webhook.test',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Subscribed when an endpoint names no types. The rest are opt-in. */
export const DEFAULT_EVENT_TYPES: readonly EventType[] = ['checkin.created', 'checkin.conflict'];

export function isEventType(v: string): v is EventType {
  return (EVENT_TYPES as readonly string[]).includes(v);
}

/** An endpoint as stored (secrets included). Never returned by the API as is: see `publicEndpoint`. */
export interface EndpointRecord {
  id: string;
  url: string;
  description: string;
  event_types: EventType[];
  /** null: every venue. */
  venues: string[] | null;
  /** Messages per second; null: no limit beyond concurrency. */
  rate_limit: number | null;
  max_concurrency: number;
  disabled: boolean;
  /** Why it was disabled: `manual`, `gone` (410), `failing` (failed continuously too long). */
  disabled_reason: string | null;
  disabled_at: string | null;
  /** When the current run of failures began (ISO time); null while healthy. */
  failing_since: string | null;
  secrets: SecretRing;
  created_at: string;
  updated_at: string;
}

/** What the API shows of an endpoint. */
export interface PublicEndpoint extends Omit<EndpointRecord, 'secrets'> {
  /** When the previous secret stops signing, if a rotation is in its grace period. */
  previous_secret_expires_at: string | null;
}

export function publicEndpoint(e: EndpointRecord, now = Date.now()): PublicEndpoint {
  const { secrets, ...rest } = e;
  const live = secrets.previous.filter((p) => p.expiresAt > now).map((p) => p.expiresAt);
  return {
    ...rest,
    previous_secret_expires_at: live.length === 0 ? null : new Date(Math.max(...live)).toISOString(),
  };
}

/** An event as sent: the JSON body is `{ type, timestamp, data }`; `id` goes in `webhook-id`. */
export interface WebhookMessage {
  id: string;
  type: EventType;
  /** ISO time of the event. */
  timestamp: string;
  data: Record<string, unknown>;
  /** Venue the event belongs to, for the endpoint venue filter; null for venue-less events. */
  venue: string | null;
  /** Messages with the same key are first attempted in order at each endpoint (a ticket id). */
  order_key: string | null;
}

/** One queued delivery of a message to an endpoint (the GS_WEBHOOKS payload). */
export interface Delivery {
  v: 1;
  /** The message travels with each delivery, so an attempt needs no second read. */
  message: WebhookMessage;
  endpoint_id: string;
  /** One id per run of attempts (the event's, or a resend's, a redrive's): retries are deduplicated by it. */
  chain: string;
  /** 1 for the first attempt. */
  attempt: number;
  /** Not before this time (milliseconds since the epoch). */
  due_at: number;
  /** What queued it: the event itself, a retry, a manual resend, a recovery or a redrive. */
  trigger: 'event' | 'retry' | 'resend' | 'recover' | 'redrive' | 'test';
}

export interface AttemptRecord {
  id: string;
  message_id: string;
  endpoint_id: string;
  event_type: EventType;
  attempt: number;
  trigger: Delivery['trigger'];
  /** ISO time the request started. */
  at: string;
  outcome: 'succeeded' | 'failed';
  status_code: number | null;
  duration_ms: number;
  /** For a failure: what went wrong, e.g. "timed out waiting for response headers", "HTTP 500". */
  error: string | null;
  /** The first bytes of the response body (capped), as text. */
  response_body: string;
  response_truncated: boolean;
  /** What happens next: `delivered`, `retry`, `dead_letter`, `endpoint_disabled`. */
  next: 'delivered' | 'retry' | 'dead_letter' | 'endpoint_disabled';
  next_attempt_at: string | null;
}

export interface DeadLetter {
  v: 1;
  message: WebhookMessage;
  message_id: string;
  endpoint_id: string;
  event_type: EventType;
  attempts: number;
  reason: string;
  dead_at: string;
}

/** An endpoint as `GET /v1/webhooks/health` and the dashboard show it. */
export interface EndpointWithHealth extends PublicEndpoint {
  /** This hub process's view of its recent attempts; null when it has no worker (disabled). */
  health: EndpointHealth | null;
  /** Deliveries waiting or in flight in JetStream; null when unknown. */
  queued: number | null;
}
