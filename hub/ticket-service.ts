/**
 * Issues and revokes tickets: every change becomes a signed event published to `gs.tix.<venue>.<ticket>`
 * with a per-subject expected sequence, so the stream itself arbitrates races. An issue expects sequence
 * 0 (no ticket yet) and a revoke expects the sequence it read; the loser of a race gets 409 and nothing
 * is overwritten. JetStream is the system of record: the hub keeps no ticket state of its own.
 */
import { JetStreamApiError, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { headers } from '@nats-io/transport-node';
import { encode } from '../shared/codec.ts';
import { GatesyncError } from '../shared/errors.ts';
import {
  decodeTicketEvent,
  EVENT_SCHEMA_VERSION,
  type TicketEvent,
  type TicketEventType,
  type TicketState,
} from '../shared/events.ts';
import { assertId, newId } from '../shared/ids.ts';
import { signQrToken } from '../shared/qr-token.ts';
import { EVENT_CONTEXT, KID_HEADER, SIG_HEADER, type SigningKey, signBytes } from '../shared/signing.ts';
import { STREAMS, subjects } from '../shared/subjects.ts';

/** JetStream's "wrong last sequence" API error code. */
export const JS_WRONG_LAST_SEQUENCE = 10071;

export interface IssueInput {
  id?: string | undefined;
  holder: string;
  tier: string;
  seat?: string | null | undefined;
  gates?: string[] | undefined;
  /** Milliseconds since the epoch. */
  valid_from: number;
  valid_until: number;
}

export interface StoredTicketState {
  ticket: TicketState;
  rev: number;
  seq: number;
}

export interface PublishedChange extends StoredTicketState {
  event: TicketEvent;
}

export interface TicketServiceOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  signingKey: SigningKey;
  /** Milliseconds to wait for a JetStream ack. */
  publishTimeout?: number;
  onPublished?: (type: TicketEventType) => void;
}

function isWrongLastSequence(err: unknown): boolean {
  return err instanceof JetStreamApiError && err.code === JS_WRONG_LAST_SEQUENCE;
}

export class TicketService {
  constructor(private readonly opts: TicketServiceOptions) {}

  /** Builds the state of a new ticket (id generated when absent) without publishing it. */
  prepare(venue: string, input: IssueInput, now = Date.now()): TicketState {
    assertId(venue, 'venue');
    const id = input.id === undefined ? newId('T') : assertId(input.id, 'id');
    const gates = input.gates ?? [];
    for (const [i, g] of gates.entries()) assertId(g, `gates[${i}]`);
    if (!(input.valid_until > input.valid_from)) {
      throw new GatesyncError('validation_failed', 'valid_until must be later than valid_from', {
        details: { field: 'body/valid_until' },
      });
    }
    const qr = signQrToken(this.opts.signingKey, {
      venue,
      ticket: id,
      valid_from: input.valid_from,
      valid_until: input.valid_until,
      gates,
    });
    return {
      id,
      venue,
      holder: input.holder,
      tier: input.tier,
      seat: input.seat ?? null,
      gates,
      valid_from: input.valid_from,
      valid_until: input.valid_until,
      status: 'valid',
      revoked_reason: null,
      issued_at: now,
      updated_at: now,
      qr,
    };
  }

  async issue(venue: string, input: IssueInput): Promise<PublishedChange> {
    const ticket = this.prepare(venue, input);
    try {
      return await this.publish('ticket.issued', ticket, 1, 0);
    } catch (err: unknown) {
      if (isWrongLastSequence(err)) {
        throw new GatesyncError('ticket_exists', `ticket ${ticket.id} already exists in venue ${venue}`, {
          cause: err,
          details: { id: ticket.id },
        });
      }
      throw err;
    }
  }

  async revoke(venue: string, id: string, reason: string): Promise<PublishedChange> {
    const current = await this.get(venue, id);
    if (current === undefined) throw new GatesyncError('not_found', `no ticket ${id} in venue ${venue}`);
    if (current.ticket.status === 'revoked') {
      throw new GatesyncError('already_revoked', `ticket ${id} is already revoked`, { details: { id } });
    }
    const next: TicketState = {
      ...current.ticket,
      status: 'revoked',
      revoked_reason: reason,
      updated_at: Date.now(),
    };
    try {
      return await this.publish('ticket.revoked', next, current.rev + 1, current.seq);
    } catch (err: unknown) {
      if (isWrongLastSequence(err)) {
        throw new GatesyncError(
          'revision_conflict',
          `ticket ${id} changed while it was being revoked; retry`,
          {
            cause: err,
            details: { id },
          },
        );
      }
      throw err;
    }
  }

  async get(venue: string, id: string): Promise<StoredTicketState | undefined> {
    const subject = subjects.ticket(venue, id);
    let msg: Awaited<ReturnType<JetStreamManager['streams']['getMessage']>>;
    try {
      msg = await this.opts.jsm.streams.getMessage(STREAMS.tickets, { last_by_subj: subject });
    } catch (err: unknown) {
      // 2.9 answers a missing subject with an API error (10037) rather than an empty result.
      if (err instanceof JetStreamApiError && (err.code === 10037 || /no message found/i.test(err.message))) {
        return undefined;
      }
      throw err;
    }
    if (msg === null) return undefined;
    const event = decodeTicketEvent(msg.data);
    return { ticket: event.ticket, rev: event.rev, seq: msg.seq };
  }

  private async publish(
    type: TicketEventType,
    ticket: TicketState,
    rev: number,
    expectedSubjectSeq: number,
  ): Promise<PublishedChange> {
    const event: TicketEvent = {
      v: EVENT_SCHEMA_VERSION,
      type,
      id: newId('E'),
      at: ticket.updated_at,
      rev,
      ticket,
    };
    const body = encode(event);
    const h = headers();
    h.set(KID_HEADER, this.opts.signingKey.kid);
    h.set(SIG_HEADER, signBytes(this.opts.signingKey, EVENT_CONTEXT, body).toString('base64'));
    const ack = await this.opts.js.publish(subjects.ticket(ticket.venue, ticket.id), body, {
      headers: h,
      msgID: event.id,
      expect: { lastSubjectSequence: expectedSubjectSeq },
      timeout: this.opts.publishTimeout ?? 10_000,
    });
    this.opts.onPublished?.(type);
    return { ticket, rev, seq: ack.seq, event };
  }
}
