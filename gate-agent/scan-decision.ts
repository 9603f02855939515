/**
 * The scan decision, a pure function of what the gate knows: the scanned code (already parsed and, where
 * needed, signature-checked), the stored ticket if any, who is inside, the clock and the venue's re-entry
 * rule. No I/O, so every rule is a row in a table test.
 *
 * Order of checks (the first that fails is the reason):
 *   malformed -> bad_signature -> wrong_venue -> unknown -> revoked -> not_yet_valid -> expired
 *   -> wrong_gate -> (in) already_used | (out) not_inside -> admit
 */
import type { Decision, Direction, Presence, RejectReason, StoredTicket } from './ticket-store.ts';

/** What the gate learned from the code before looking at state. */
export type CodeCheck =
  | { kind: 'malformed' }
  | { kind: 'bad_signature' }
  /** A QR token whose signature holds (or whose hash matches the stored ticket's token). */
  | {
      kind: 'token';
      venue: string;
      ticketId: string;
      valid_from: number;
      valid_until: number;
      gates: string[];
    }
  /** A bare ticket code typed in or printed without a token: only a stored ticket can be admitted. */
  | { kind: 'code'; ticketId: string };

export interface DecisionInput {
  code: CodeCheck;
  ticket: StoredTicket | undefined;
  presence: Presence | undefined;
  venue: string;
  gate: string;
  direction: Direction;
  /** Milliseconds since the epoch. */
  now: number;
  reentry: boolean;
}

export interface DecisionOutcome {
  decision: Decision;
  reason: RejectReason | null;
  ticketId: string | null;
  /** Admitted on the strength of its signed token alone: the ticket is not in the store yet. */
  unsyncedTicket: boolean;
}

function reject(reason: RejectReason, ticketId: string | null): DecisionOutcome {
  return { decision: 'reject', reason, ticketId, unsyncedTicket: false };
}

export function decideScan(input: DecisionInput): DecisionOutcome {
  const { code, ticket, presence, now } = input;
  switch (code.kind) {
    case 'malformed':
      return reject('malformed', null);
    case 'bad_signature':
      return reject('bad_signature', null);
    case 'code':
    case 'token':
      break;
    default: {
      const never: never = code;
      throw new Error(`unhandled code kind ${String(never)}`);
    }
  }
  const ticketId = code.ticketId;
  if (code.kind === 'token' && code.venue !== input.venue) return reject('wrong_venue', ticketId);
  if (ticket === undefined && code.kind === 'code') return reject('unknown', ticketId);
  if (ticket?.status === 'revoked') return reject('revoked', ticketId);

  // The stored ticket is the hub's latest word; a token alone is used only for a ticket not synced yet.
  const window =
    ticket !== undefined
      ? { from: ticket.valid_from, until: ticket.valid_until, gates: ticket.gates }
      : code.kind === 'token'
        ? { from: code.valid_from, until: code.valid_until, gates: code.gates }
        : undefined;
  if (window === undefined) return reject('unknown', ticketId);
  if (now < window.from) return reject('not_yet_valid', ticketId);
  if (now >= window.until) return reject('expired', ticketId);
  if (window.gates.length > 0 && !window.gates.includes(input.gate)) return reject('wrong_gate', ticketId);

  if (input.direction === 'in') {
    if (presence !== undefined && (presence.inside || !input.reentry))
      return reject('already_used', ticketId);
  } else if (presence === undefined || !presence.inside) {
    return reject('not_inside', ticketId);
  }
  return { decision: 'admit', reason: null, ticketId, unsyncedTicket: ticket === undefined };
}
