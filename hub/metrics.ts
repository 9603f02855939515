/** The hub's Prometheus metrics, on a registry of its own (tests run several daemons in one process). */
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';

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
  };
}

export type HubMetrics = ReturnType<typeof createHubMetrics>;
