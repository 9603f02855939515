/** The gate agent's Prometheus metrics, on a registry of its own. */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/** Read at scrape time, so the gauges are never stale. */
export interface AgentGaugeSource {
  outboxDepth(): number;
  oldestUnsentAgeSeconds(): number;
  ticketsHeld(): number;
  syncLagSeconds(): number;
  connected(): boolean;
}

export function createAgentMetrics(source?: AgentGaugeSource) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'gatesync_agent_' });
  return {
    registry,
    httpErrors: new Counter({
      name: 'gatesync_agent_http_errors_total',
      help: 'HTTP requests answered with an error, by error code',
      labelNames: ['code'] as const,
      registers: [registry],
    }),
    decisions: new Counter({
      name: 'gatesync_agent_scan_decisions_total',
      help: 'Scan decisions by decision and reason',
      labelNames: ['decision', 'reason'] as const,
      registers: [registry],
    }),
    scanLatency: new Histogram({
      name: 'gatesync_agent_scan_duration_seconds',
      help: 'From a scan request to its committed answer',
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      registers: [registry],
    }),
    commitGroup: new Histogram({
      name: 'gatesync_agent_commit_group_size',
      help: 'Scans committed together by one fsync',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers: [registry],
    }),
    eventsApplied: new Counter({
      name: 'gatesync_agent_ticket_events_applied_total',
      help: 'Ticket events stored (newer revision)',
      registers: [registry],
    }),
    eventsStale: new Counter({
      name: 'gatesync_agent_ticket_events_stale_total',
      help: 'Ticket events skipped because the store held a newer revision',
      registers: [registry],
    }),
    eventsRejected: new Counter({
      name: 'gatesync_agent_ticket_events_rejected_total',
      help: 'Ticket events dropped and never stored, by reason (bad_signature, unknown_key, malformed, wrong_subject)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    outboxDepth: new Gauge({
      name: 'gatesync_agent_outbox_depth',
      help: 'Check-ins recorded but not yet acknowledged by JetStream',
      registers: [registry],
      collect() {
        if (source !== undefined) this.set(source.outboxDepth());
      },
    }),
    oldestUnsent: new Gauge({
      name: 'gatesync_agent_outbox_oldest_unsent_age_seconds',
      help: 'Age of the oldest check-in not yet acknowledged by JetStream (0 when none)',
      registers: [registry],
      collect() {
        if (source !== undefined) this.set(source.oldestUnsentAgeSeconds());
      },
    }),
    syncLag: new Gauge({
      name: 'gatesync_agent_sync_lag_seconds',
      help: 'Age of the last ticket event applied (grows while the link is down or the hub is quiet)',
      registers: [registry],
      collect() {
        if (source !== undefined) this.set(source.syncLagSeconds());
      },
    }),
    connected: new Gauge({
      name: 'gatesync_agent_nats_connected',
      help: '1 while the NATS link is up',
      registers: [registry],
      collect() {
        if (source !== undefined) this.set(source.connected() ? 1 : 0);
      },
    }),
    checkinsSent: new Counter({
      name: 'gatesync_agent_checkins_sent_total',
      help: 'Check-ins acknowledged by JetStream (including ones it already held)',
      registers: [registry],
    }),
    ticketsHeld: new Gauge({
      name: 'gatesync_agent_tickets_held',
      help: 'Tickets in the local store',
      registers: [registry],
      collect() {
        if (source !== undefined) this.set(source.ticketsHeld());
      },
    }),
  };
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;
