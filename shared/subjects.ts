/**
 * Stream names and subjects. Every subject is venue-scoped so NATS permissions (and, later, a leaf node per
 * venue) can cut along venue lines. See docs/architecture.md for the table.
 */
import { assertId } from './ids.ts';

export const STREAMS = {
  tickets: 'GS_TICKETS',
  checkins: 'GS_CHECKINS',
  entries: 'GS_ENTRIES',
  webhooks: 'GS_WEBHOOKS',
  attempts: 'GS_ATTEMPTS',
  conflicts: 'GS_CONFLICTS',
  /** Every webhook message (event) once, for GET /v1/webhooks/messages/{id}, resend and redrive. */
  messages: 'GS_WH_MESSAGES',
  /** Deliveries that used up their retries, per endpoint. */
  dead: 'GS_WH_DEAD',
} as const;

export const KV_BUCKETS = {
  /** API keys (hashed) and, later, webhook endpoints. */
  config: 'GS_CONFIG',
  /** Idempotency-Key records of the hub API, 24 h TTL. */
  idempotency: 'GS_IDEMPOTENCY',
  /** Each agent's latest heartbeat, key `<venue>.<agent>`. */
  agents: 'GS_AGENTS',
  /** Webhook endpoints (with their secrets), key = endpoint id. */
  endpoints: 'GS_WH_ENDPOINTS',
} as const;

export const subjects = {
  ticket(venue: string, ticket: string): string {
    return `gs.tix.${assertId(venue, 'venue')}.${assertId(ticket, 'ticket id')}`;
  },
  venueTickets(venue: string): string {
    return `gs.tix.${assertId(venue, 'venue')}.*`;
  },
  allTickets: 'gs.tix.>',
  checkin(venue: string, agent: string, checkin: string): string {
    return `gs.chk.${assertId(venue, 'venue')}.${assertId(agent, 'agent id')}.${assertId(checkin, 'checkin id')}`;
  },
  venueCheckins(venue: string): string {
    return `gs.chk.${assertId(venue, 'venue')}.>`;
  },
  allCheckins: 'gs.chk.>',
  entry(venue: string, ticket: string): string {
    return `gs.ent.${assertId(venue, 'venue')}.${assertId(ticket, 'ticket id')}`;
  },
  allEntries: 'gs.ent.>',
  /** The agent's heartbeat: a put to the GS_AGENTS KV bucket, written as a plain JetStream publish. */
  heartbeat(venue: string, agent: string): string {
    return `$KV.GS_AGENTS.${assertId(venue, 'venue')}.${assertId(agent, 'agent id')}`;
  },
  conflict(venue: string, id: string): string {
    return `gs.cfl.${assertId(venue, 'venue')}.${assertId(id, 'conflict id')}`;
  },
  venueConflicts(venue: string): string {
    return `gs.cfl.${assertId(venue, 'venue')}.*`;
  },
  allConflicts: 'gs.cfl.>',
  /** A queued delivery to one endpoint (work queue). */
  delivery(endpoint: string): string {
    return `gs.wh.${assertId(endpoint, 'endpoint id')}`;
  },
  allDeliveries: 'gs.wh.>',
  attempt(endpoint: string, message: string): string {
    return `gs.att.${assertId(endpoint, 'endpoint id')}.${assertId(message, 'message id')}`;
  },
  allAttempts: 'gs.att.>',
  message(message: string): string {
    return `gs.msg.${assertId(message, 'message id')}`;
  },
  allMessages: 'gs.msg.>',
  deadLetter(endpoint: string, message: string): string {
    return `gs.dead.${assertId(endpoint, 'endpoint id')}.${assertId(message, 'message id')}`;
  },
  allDeadLetters: 'gs.dead.>',
} as const;

/** Splits `gs.tix.<venue>.<ticket>`; undefined when the subject has another shape. */
export function parseTicketSubject(subject: string): { venue: string; ticket: string } | undefined {
  const parts = subject.split('.');
  if (parts.length !== 4 || parts[0] !== 'gs' || parts[1] !== 'tix') return undefined;
  return { venue: parts[2] as string, ticket: parts[3] as string };
}

/**
 * The agent and check-in id of `gs.chk.<venue>.<agent>.<id>`, read from the end of the subject without
 * splitting it (the venue reader does this for every check-in of its venue).
 */
export function checkinSubjectTail(subject: string): { agent: string; id: string } {
  const idAt = subject.lastIndexOf('.');
  const agentAt = subject.lastIndexOf('.', idAt - 1);
  return { agent: subject.slice(agentAt + 1, idAt), id: subject.slice(idAt + 1) };
}

/** The durable ticket consumer of one agent on GS_TICKETS. */
export function agentConsumerName(venue: string, agent: string): string {
  return `gs_agent_${assertId(venue, 'venue')}_${assertId(agent, 'agent id')}`;
}
