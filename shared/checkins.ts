/**
 * The check-in a gate publishes to `gs.chk.<venue>.<agent>.<checkin>`, and what the hub derives from
 * check-ins: the first admission of a ticket (GS_ENTRIES) and double entries (GS_CONFLICTS).
 *
 * Check-ins are idempotent by id: the subject ends in the check-in id, and the agent publishes with
 * `Nats-Msg-Id` = id and an expected last subject sequence of 0, so the stream refuses a re-send for as
 * long as it keeps the check-in, not only inside the duplicate window.
 */
import { createHash } from 'node:crypto';
import { decode } from './codec.ts';
import { GatesyncError } from './errors.ts';
import { isValidId } from './ids.ts';

export const CHECKIN_SCHEMA_VERSION = 1;

export interface CheckinMessage {
  v: typeof CHECKIN_SCHEMA_VERSION;
  id: string;
  venue: string;
  agent: string;
  gate: string;
  /** The agent's own sequence number for this check-in (1, 2, 3...). */
  seq: number;
  ticket_id: string | null;
  direction: 'in' | 'out';
  decision: 'admit' | 'reject';
  reason: string | null;
  scanner: string;
  method: string;
  unsynced_ticket: boolean;
  /** The agent's clock when the scan arrived, milliseconds since the epoch. */
  scanned_at: number;
}

/** GS_ENTRIES: a ticket's admission state at the hub, one message per ticket. */
export interface EntryState {
  v: 1;
  ticket_id: string;
  inside: boolean;
  /** The admitted check-in that set this state. */
  checkin_id: string;
  agent: string;
  gate: string;
  at: number;
}

/** GS_CONFLICTS: two gates admitted the same ticket without an exit between. */
export interface ConflictRecord {
  v: 1;
  id: string;
  venue: string;
  ticket_id: string;
  /** The admission the hub saw first, and the one that collided with it. */
  first: { checkin_id: string; agent: string; gate: string; scanned_at: number };
  second: { checkin_id: string; agent: string; gate: string; scanned_at: number };
  detected_at: number;
}

/** A conflict's id depends only on the pair, so however the two arrive it is recorded once. */
export function conflictId(a: string, b: string): string {
  const [x, y] = a < b ? [a, b] : [b, a];
  return `X${createHash('sha256').update(`${x}\n${y}`).digest('base64url').slice(0, 40)}`;
}

export function decodeCheckin(bytes: Uint8Array): CheckinMessage {
  const v = decode(bytes) as Partial<CheckinMessage> | null;
  const ok =
    v !== null &&
    typeof v === 'object' &&
    v.v === CHECKIN_SCHEMA_VERSION &&
    isValidId(v.id) &&
    isValidId(v.venue) &&
    isValidId(v.agent) &&
    isValidId(v.gate) &&
    Number.isSafeInteger(v.seq) &&
    (v.ticket_id === null || isValidId(v.ticket_id)) &&
    (v.direction === 'in' || v.direction === 'out') &&
    (v.decision === 'admit' || v.decision === 'reject') &&
    Number.isSafeInteger(v.scanned_at);
  if (!ok) throw new GatesyncError('malformed', 'check-in message has the wrong shape');
  return v as CheckinMessage;
}
