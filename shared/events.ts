/**
 * The ticket event envelope the hub publishes to `gs.tix.<venue>.<ticket>`.
 *
 * Every event carries the whole latest state of the ticket (not a delta), so GS_TICKETS can keep one
 * message per subject and a fresh agent reads O(tickets), and `rev` orders the states of one ticket:
 * an agent keeps a state only when its rev is higher than the one it holds.
 */
import { decode } from './codec.ts';
import { GatesyncError } from './errors.ts';
import { isValidId } from './ids.ts';

export const EVENT_SCHEMA_VERSION = 1;

export type TicketEventType = 'ticket.issued' | 'ticket.revoked';
export type TicketStatus = 'valid' | 'revoked';

export interface TicketState {
  id: string;
  venue: string;
  holder: string;
  tier: string;
  seat: string | null;
  /** Gate names this ticket may enter by; empty means any gate. */
  gates: string[];
  /** Milliseconds since the epoch. */
  valid_from: number;
  valid_until: number;
  status: TicketStatus;
  revoked_reason: string | null;
  issued_at: number;
  updated_at: number;
  /** The QR token printed on the ticket. */
  qr: string;
}

export interface TicketEvent {
  v: typeof EVENT_SCHEMA_VERSION;
  type: TicketEventType;
  /** Event id, unique per event. */
  id: string;
  /** When the hub made the change, milliseconds since the epoch. */
  at: number;
  /** Per-ticket revision: 1 at issue, +1 per change. */
  rev: number;
  ticket: TicketState;
}

function malformed(what: string): never {
  throw new GatesyncError('malformed', `ticket event: ${what}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const isStr = (v: unknown, max = 1024): v is string => typeof v === 'string' && v.length <= max;
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

/** Decodes and checks an event body; anything off is `malformed`. */
export function decodeTicketEvent(bytes: Uint8Array): TicketEvent {
  const value = decode(bytes);
  if (!isObject(value)) malformed('not a map');
  if (value.v !== EVENT_SCHEMA_VERSION) malformed(`unsupported schema version ${String(value.v)}`);
  if (value.type !== 'ticket.issued' && value.type !== 'ticket.revoked') malformed('unknown type');
  if (!isValidId(value.id)) malformed('bad id');
  if (!isInt(value.at) || !isInt(value.rev) || value.rev < 1) malformed('bad at or rev');
  const t = value.ticket;
  if (!isObject(t)) malformed('no ticket');
  if (!isValidId(t.id) || !isValidId(t.venue)) malformed('bad ticket or venue id');
  if (!isStr(t.holder) || !isStr(t.tier) || !(t.seat === null || isStr(t.seat)))
    malformed('bad holder/tier/seat');
  if (!Array.isArray(t.gates) || !t.gates.every((g) => isValidId(g))) malformed('bad gates');
  if (!isInt(t.valid_from) || !isInt(t.valid_until)) malformed('bad validity window');
  if (t.status !== 'valid' && t.status !== 'revoked') malformed('bad status');
  if (!(t.revoked_reason === null || isStr(t.revoked_reason))) malformed('bad revoked_reason');
  if (!isInt(t.issued_at) || !isInt(t.updated_at) || !isStr(t.qr, 4096)) malformed('bad timestamps or qr');
  return value as unknown as TicketEvent;
}
