/** The hub's Prometheus metrics, on a registry of its own (tests run several daemons in one process). */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

export function createHubMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'gatesync_hub_' });
  return {
    registry,
    httpErrors: new Counter({
      name: 'gatesync_hub_http_errors_total',
      help: 'HTTP requests answered with an error, by error code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
    eventsPublished: new Counter({
      name: 'gatesync_hub_ticket_events_published_total',
      help: 'Signed ticket events published to JetStream, by type',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    checkinsProcessed: new Counter({
      name: 'gatesync_hub_checkins_processed_total',
      help: 'Check-ins judged by the hub, by decision and entry verdict',
      labelNames: ['decision', 'verdict'] as const,
      registers: [registry],
    }),
    conflicts: new Counter({
      name: 'gatesync_hub_checkin_conflicts_total',
      help: 'Double entries detected (a ticket admitted at two gates without an exit between)',
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'gatesync_hub_http_request_duration_seconds',
      help: 'HTTP request duration by route and status',
      labelNames: ['route', 'status'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
      registers: [registry],
    }),
    webhookMessages: new Counter({
      name: 'gatesync_hub_webhook_messages_total',
      help: 'Webhook messages created (events with at least one subscribed endpoint), by type',
      labelNames: ['type'] as const,
      registers: [registry],
    }),
    webhookEventsRefused: new Counter({
      name: 'gatesync_hub_webhook_events_refused_total',
      help: 'Events not turned into webhook messages, by reason (payload_too_large, malformed)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    webhookDeliveries: new Counter({
      name: 'gatesync_hub_webhook_attempts_total',
      help: 'Webhook delivery attempts by outcome (succeeded, failed) and what came next',
      labelNames: ['outcome', 'next'] as const,
      registers: [registry],
    }),
    webhookLatency: new Histogram({
      name: 'gatesync_hub_webhook_attempt_duration_seconds',
      help: 'Duration of webhook delivery attempts (request sent to response read), by outcome',
      labelNames: ['outcome'] as const,
      buckets: [0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    webhookEndToEnd: new Histogram({
      name: 'gatesync_hub_webhook_delivery_lag_seconds',
      help: 'From the event (message timestamp) to its successful delivery',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300, 3600, 36000],
      registers: [registry],
    }),
    webhookDeadLetters: new Counter({
      name: 'gatesync_hub_webhook_dead_letters_total',
      help: 'Deliveries dead-lettered (retries used up, or the endpoint answered 410)',
      registers: [registry],
    }),
    webhookEndpointsDisabled: new Counter({
      name: 'gatesync_hub_webhook_endpoints_disabled_total',
      help: 'Endpoints disabled by the hub, by reason (gone = 410, failing = failed too long)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    webhookInFlight: new Gauge({
      name: 'gatesync_hub_webhook_attempts_in_flight',
      help: 'Webhook requests in flight, all endpoints',
      registers: [registry],
    }),
  };
}

export type HubMetrics = ReturnType<typeof createHubMetrics>;
