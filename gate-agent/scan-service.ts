/**
 * Turns scanner requests into committed check-ins, with group commit.
 *
 * A scan is queued; the first scan of a burst schedules a flush on the next turn of the event loop
 * (setImmediate), so every scan that arrived while the previous commit was being fsync'd is decided and
 * written in one transaction: one fsync for the whole group. Decisions inside the group are made in
 * arrival order against the transaction's own view, so two scans of one ticket in one group still give
 * admit then already_used. Each promise resolves only after the commit returned: nothing is answered
 * before it is on disk.
 */
import { isValidId, newId } from '../shared/ids.ts';
import { isQrToken, parseQrToken, verifyQrToken } from '../shared/qr-token.ts';
import type { PublicKeyInfo } from '../shared/signing.ts';
import { type CodeCheck, type DecisionOutcome, decideScan } from './scan-decision.ts';
import {
  type CheckinRecord,
  type Direction,
  qrHashKey,
  type StoredTicket,
  type TicketStore,
} from './ticket-store.ts';
import type { WalSync } from './wal-sync.ts';

export interface ScanRequest {
  code: string;
  direction: Direction;
  scanner: string;
}

export interface ScanResult extends DecisionOutcome {
  checkinId: string;
  seq: number;
  scannedAt: number;
  ticket: Readonly<StoredTicket> | undefined;
  /** The check-in as committed: what the outbox sends. */
  record: CheckinRecord;
}

export interface ScanServiceOptions {
  store: TicketStore;
  venue: string;
  agent: string;
  gate: string;
  reentry: boolean;
  trustedKeys: ReadonlyMap<string, PublicKeyInfo>;
  /** Called after each committed group, for metrics. */
  onCommitted?: (results: ScanResult[], groupSize: number, commitMs: number) => void;
  /** Makes each group durable before it is answered; absent only in tests of the decision logic. */
  walSync?: WalSync;
  now?: () => number;
}

interface Pending {
  request: ScanRequest;
  receivedAt: number;
  resolve: (r: ScanResult) => void;
  reject: (err: unknown) => void;
}

export class ScanService {
  private queue: Pending[] = [];
  private scheduled = false;
  private readonly now: () => number;
  private durable: number;

  constructor(private readonly opts: ScanServiceOptions) {
    this.now = opts.now ?? Date.now;
    // Rows from before this start were fsync'd by WalSync's start-up sync (or by the previous run).
    this.durable = opts.store.maxCheckinSeq();
  }

  /** Decides, records and commits one scan. Resolves after the check-in is on disk. */
  scan(request: ScanRequest): Promise<ScanResult> {
    return new Promise<ScanResult>((resolve, reject) => {
      this.queue.push({ request, receivedAt: this.now(), resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** What a scan would decide now, without recording anything. */
  preview(
    code: string,
    direction: Direction,
  ): DecisionOutcome & { ticket: Readonly<StoredTicket> | undefined } {
    const { check, ticket } = this.checkCode(code);
    const outcome = this.decide(check, ticket, direction, this.now());
    return { ...outcome, ticket };
  }

  private flush(): void {
    this.scheduled = false;
    const group = this.queue;
    this.queue = [];
    if (group.length === 0) return;
    const started = performance.now();
    let results: ScanResult[];
    try {
      results = this.opts.store.transaction(() => group.map((p) => this.record(p)));
    } catch (err: unknown) {
      for (const p of group) p.reject(err);
      return;
    }
    const lastSeq = results.reduce((m, r) => Math.max(m, r.seq), 0);
    const answer = () => {
      if (lastSeq > this.durable) this.durable = lastSeq;
      const commitMs = performance.now() - started;
      for (let i = 0; i < group.length; i++) group[i]?.resolve(results[i] as ScanResult);
      this.opts.onCommitted?.(results, group.length, commitMs);
    };
    // Nothing is answered before it is on disk.
    if (this.opts.walSync === undefined) answer();
    else
      this.opts.walSync.sync().then(answer, (err: unknown) => {
        for (const p of group) p.reject(err);
      });
  }

  /** The highest check-in seq known to be on disk: the outbox never sends past it. */
  durableSeq(): number {
    return this.durable;
  }

  private record(p: Pending): ScanResult {
    const { check, ticket } = this.checkCode(p.request.code);
    const outcome = this.decide(check, ticket, p.request.direction, p.receivedAt);
    const rec: Omit<CheckinRecord, 'seq'> = {
      id: newId(),
      agent: this.opts.agent,
      venue: this.opts.venue,
      gate: this.opts.gate,
      ticket_id: outcome.ticketId,
      direction: p.request.direction,
      decision: outcome.decision,
      reason: outcome.reason,
      scanner: p.request.scanner,
      method: check.kind === 'code' ? 'code' : check.kind === 'token' ? 'qr' : 'none',
      unsynced_ticket: outcome.unsyncedTicket,
      scanned_at: p.receivedAt,
    };
    const seq = this.opts.store.recordCheckin(rec);
    return { ...outcome, checkinId: rec.id, seq, scannedAt: p.receivedAt, ticket, record: { ...rec, seq } };
  }

  private decide(
    check: CodeCheck,
    ticket: Readonly<StoredTicket> | undefined,
    direction: Direction,
    now: number,
  ) {
    const ticketId = check.kind === 'code' || check.kind === 'token' ? check.ticketId : undefined;
    const presence = ticketId === undefined ? undefined : this.opts.store.getPresence(ticketId);
    return decideScan({
      code: check,
      ticket,
      presence,
      venue: this.opts.venue,
      gate: this.opts.gate,
      direction,
      now,
      reentry: this.opts.reentry,
    });
  }

  /**
   * Parses the code and establishes whether it can be trusted. For a synced ticket, the token's hash is
   * compared with the stored one (about a microsecond); only a token the store does not know is
   * signature-checked (about 120 microseconds).
   */
  private checkCode(code: string): { check: CodeCheck; ticket: Readonly<StoredTicket> | undefined } {
    if (!isQrToken(code)) {
      if (!isValidId(code)) return { check: { kind: 'malformed' }, ticket: undefined };
      const ticket = this.opts.store.getTicket(code);
      return { check: { kind: 'code', ticketId: code }, ticket };
    }
    let parsed: ReturnType<typeof parseQrToken>;
    try {
      parsed = parseQrToken(code);
    } catch {
      return { check: { kind: 'malformed' }, ticket: undefined };
    }
    const { claims } = parsed;
    const ticket = claims.venue === this.opts.venue ? this.opts.store.getTicket(claims.ticket) : undefined;
    const trusted =
      (ticket !== undefined && qrHashKey(code) === ticket.qr_hash) ||
      verifyQrToken(parsed, this.opts.trustedKeys);
    if (!trusted) return { check: { kind: 'bad_signature' }, ticket: undefined };
    return {
      check: {
        kind: 'token',
        venue: claims.venue,
        ticketId: claims.ticket,
        valid_from: claims.valid_from,
        valid_until: claims.valid_until,
        gates: claims.gates,
      },
      ticket,
    };
  }
}
