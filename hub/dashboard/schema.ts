/**
 * The dashboard snapshot's shape as a typebox schema, for the OpenAPI document (hub/openapi.ts). It
 * mirrors the `Snapshot` type of hub/dashboard/snapshot.ts; test/hub-openapi.test.ts checks real
 * snapshots against it.
 */
import { type TSchema, Type } from 'typebox';

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
const IsoTime = Type.String({ format: 'date-time' });
const Count = Type.Integer({ minimum: 0 });
const Closed = { additionalProperties: false } as const;

const AgentRow = Type.Object(
  {
    venue: Type.String(),
    agent: Type.String(),
    gate: Type.String(),
    online: Type.Boolean({ description: 'A heartbeat arrived within offline_after_ms' }),
    link_connected: Type.Boolean({ description: "The agent's own view of its link at its last heartbeat" }),
    last_heartbeat: IsoTime,
    last_heartbeat_age_ms: Type.Number({ minimum: 0 }),
    outbox_depth: Count,
    oldest_unsent_age_ms: Nullable(Type.Number({ minimum: 0 })),
    tickets_held: Count,
    last_event_seq: Count,
    sync_pending: Nullable(
      Type.Integer({ minimum: 0, description: 'Ticket events not yet taken (sync lag)' }),
    ),
    checkins_total: Count,
    scans_recent: Type.Integer({ description: 'Scans in the last scans_window_ms, from heartbeat totals' }),
    scans_window_ms: Type.Number({ minimum: 0 }),
  },
  Closed,
);

const Admission = Type.Object(
  { checkin_id: Type.String(), agent: Type.String(), gate: Type.String(), scanned_at: IsoTime },
  Closed,
);

export const DashboardSnapshot = Type.Object(
  {
    generated_at: IsoTime,
    offline_after_ms: Type.Number({ minimum: 0 }),
    scan_window_ms: Type.Number({ minimum: 0 }),
    totals: Type.Object(
      {
        venues: Count,
        agents: Count,
        agents_online: Count,
        agents_offline: Count,
        outbox_depth: Count,
        scans_recent: Type.Integer(),
      },
      Closed,
    ),
    venues: Type.Object(
      {
        query: Type.Object(
          {
            filter: Type.String(),
            problems: Type.Boolean(),
            page: Type.Integer({ minimum: 1 }),
            page_size: Type.Integer({ minimum: 1 }),
          },
          Closed,
        ),
        matching: Count,
        pages: Type.Integer({ minimum: 1 }),
        items: Type.Array(
          Type.Object(
            {
              venue: Type.String(),
              agents: Type.Array(AgentRow),
              agents_online: Count,
              agents_offline: Count,
              outbox_depth: Count,
              scans_recent: Type.Integer(),
            },
            Closed,
          ),
        ),
      },
      Closed,
    ),
    webhooks: Type.Object(
      {
        endpoints: Type.Array(
          Type.Object(
            {
              id: Type.String(),
              url: Type.String(),
              description: Type.String(),
              disabled: Type.Boolean(),
              disabled_reason: Nullable(Type.String()),
              failing_since: Nullable(IsoTime),
              queued: Nullable(Count),
              health: Nullable(
                Type.Object(
                  {
                    in_flight: Count,
                    breaker: Type.String(),
                    attempts: Count,
                    succeeded: Count,
                    failed: Count,
                    success_rate: Nullable(Type.Number({ minimum: 0, maximum: 1 })),
                    latency_p50_ms: Nullable(Type.Number({ minimum: 0 })),
                    latency_p95_ms: Nullable(Type.Number({ minimum: 0 })),
                    last_error: Nullable(Type.String()),
                    last_error_at: Nullable(IsoTime),
                    last_attempt_at: Nullable(IsoTime),
                  },
                  Closed,
                ),
              ),
              state: Type.Union(
                ['disabled', 'failing', 'degraded', 'healthy', 'idle'].map((s) => Type.Literal(s)),
              ),
            },
            Closed,
          ),
        ),
        error: Nullable(Type.String()),
      },
      Closed,
    ),
    failed: Type.Object(
      {
        items: Type.Array(
          Type.Object(
            {
              message_id: Type.String(),
              endpoint_id: Type.String(),
              endpoint_url: Nullable(Type.String()),
              event_type: Type.String(),
              attempts: Type.Integer({ minimum: 1 }),
              reason: Type.String(),
              dead_at: IsoTime,
              cursor: Type.Integer({ minimum: 1 }),
              replay: Type.Object(
                {
                  state: Type.Union(['none', 'retrying', 'delivered', 'failed'].map((s) => Type.Literal(s))),
                  at: Nullable(IsoTime),
                  webhook_id: Type.String(),
                },
                Closed,
              ),
            },
            Closed,
          ),
        ),
        total_recent: Count,
        error: Nullable(Type.String()),
      },
      Closed,
    ),
    conflicts: Type.Object(
      {
        items: Type.Array(
          Type.Object(
            {
              id: Type.String(),
              venue: Type.String(),
              ticket_id: Type.String(),
              first: Admission,
              second: Admission,
              detected_at: IsoTime,
            },
            Closed,
          ),
        ),
        error: Nullable(Type.String()),
      },
      Closed,
    ),
  },
  Closed,
);
