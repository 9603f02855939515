/**
 * The shapes of the agent's HTTP API, as typebox schemas: the routes validate and serialise with them
 * (gate-agent/http-api.ts) and the OpenAPI document is built from them (gate-agent/openapi.ts), so the
 * document cannot drift from what the routes accept.
 */
import { type Static, Type } from 'typebox';
import { ID_PATTERN_SOURCE } from '../shared/ids.ts';
import { IsoTime, Nullable, TICKET_FIELDS } from '../shared/openapi.ts';
import type { Decision as DecisionValue, RejectReason } from './ticket-store.ts';

const Direction = Type.Union([Type.Literal('in'), Type.Literal('out')]);

export const ScanBody = Type.Object(
  {
    code: Type.String({
      minLength: 1,
      maxLength: 1024,
      description: 'The scanned QR content (GS1.…) or a ticket id typed in or printed as a plain barcode.',
    }),
    direction: Type.Optional(
      Type.Union([Type.Literal('in'), Type.Literal('out')], { description: 'Default "in".' }),
    ),
    scanner: Type.Optional(
      Type.String({
        pattern: ID_PATTERN_SOURCE,
        description: "If given, it must be the token's own scanner id (else 403 forbidden).",
      }),
    ),
  },
  { additionalProperties: false },
);
export type ScanBody = Static<typeof ScanBody>;

export const TicketSummary = Type.Object({
  id: Type.String(),
  ...TICKET_FIELDS,
  status: Type.String(),
});

// A record, so that a reason added to RejectReason and not here fails to compile.
const REASONS: Record<RejectReason, true> = {
  malformed: true,
  bad_signature: true,
  wrong_venue: true,
  unknown: true,
  revoked: true,
  not_yet_valid: true,
  expired: true,
  wrong_gate: true,
  already_used: true,
  not_inside: true,
};
// `type: string` with an enum rather than a union of literals: Fastify's serializer then writes the
// scan answer's strings directly instead of trying each branch of an anyOf on the hot path.
const Decision = Type.Unsafe<DecisionValue>({ type: 'string', enum: ['admit', 'reject'] });
const Reason = Type.Unsafe<RejectReason>({
  type: 'string',
  enum: Object.keys(REASONS),
  description: 'Why the scan was rejected (docs/errors.md#scan-decision-reasons).',
});

/** Declared so Fastify serialises the hot path's answer with a compiled serializer. */
export const ScanResponse = Type.Object({
  decision: Decision,
  reason: Type.Optional(Reason),
  ticket: Type.Optional(TicketSummary),
  unsynced_ticket: Type.Optional(Type.Boolean()),
  checkin_id: Type.String(),
  seq: Type.Integer(),
  scanned_at: IsoTime,
});

/** What a scan would decide now: no check-in is recorded, so no id, seq or time. */
export const PreviewResponse = Type.Object({
  decision: Decision,
  reason: Type.Optional(Reason),
  ticket: Type.Optional(TicketSummary),
  unsynced_ticket: Type.Optional(Type.Boolean()),
});

export const CodeParams = Type.Object({ code: Type.String({ minLength: 1, maxLength: 1024 }) });
export const CodeQuery = Type.Object(
  { direction: Type.Optional(Direction) },
  { additionalProperties: false },
);

/** What the agent's wiring (gate-agent/main.ts) reports; the HTTP API adds the fields below it. */
export const AgentStatusBase = Type.Object({
  venue: Type.String(),
  agent: Type.String(),
  gate: Type.String(),
  connected: Type.Boolean({ description: 'The agent has a live link to NATS.' }),
  link_since: Type.String({ format: 'date-time', description: 'When `connected` last changed.' }),
  last_event: Type.Object({
    seq: Type.Integer(),
    at: Nullable(IsoTime),
    age_ms: Nullable(Type.Integer()),
    applied_at: Nullable(IsoTime),
  }),
  sync_pending: Nullable(Type.Integer()),
  sync_error: Nullable(Type.String()),
  tickets_held: Type.Integer(),
  checkins_unsent: Type.Integer(),
  oldest_unsent_age_ms: Nullable(Type.Integer()),
  checkins_total: Type.Integer(),
});
export type AgentStatusBase = Static<typeof AgentStatusBase>;

export const RecentReject = Type.Object({
  checkin_id: Type.String(),
  seq: Type.Integer(),
  scanned_at: IsoTime,
  reason: Reason,
  ticket_id: Nullable(Type.String()),
  holder: Nullable(Type.String({ description: 'When the gate holds the ticket.' })),
  scanner: Type.String(),
  direction: Direction,
  sent: Type.Boolean({ description: 'The check-in has reached the hub.' }),
});
export type RecentReject = Static<typeof RecentReject>;

export const AgentStatus = Type.Object({
  ...AgentStatusBase.properties,
  last_sync_at: Nullable(
    Type.String({ format: 'date-time', description: 'When ticket changes were last applied.' }),
  ),
  last_sync_age_ms: Nullable(Type.Integer()),
  scans_per_minute: Type.Integer({ description: 'Scans answered in the last 60 s by this process.' }),
  scans_last_minute: Type.Object({ admit: Type.Integer(), reject: Type.Integer() }),
  recent_rejects: Type.Array(RecentReject, { description: 'The newest rejected scans, newest first.' }),
});
export type AgentStatus = Static<typeof AgentStatus>;

export const Ok = Type.Object({ ok: Type.Literal(true) });
