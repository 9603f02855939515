/**
 * The gate agent's local truth: one SQLite file (WAL) holding the venue's tickets, the
 * stream position they were read up to, every check-in this agent recorded (which is also the outbox),
 * and who is inside.
 *
 * Applying ticket events and recording the stream position happen in one transaction, so a crash at any
 * point leaves the file either before or after a batch, never between. Stale revisions never overwrite
 * newer ones: the upsert only replaces a row whose rev is lower.
 *
 * The outbox is the check-ins table itself, read in seq order. What has been sent is one number, the
 * `sent_through` watermark: every check-in with seq at or below it was acknowledged by JetStream. The
 * publisher sends in seq order and moves the watermark over the acknowledged prefix only, so a crash can
 * re-send a few check-ins acknowledged above it (harmless: the stream and the hub dedupe by id) but can
 * never skip one. One small row per acknowledged batch replaces an UPDATE of every sent row and a partial
 * index over the unsent ones (migration 3), which made each sent check-in cost a second write.
 *
 * Who is inside is held in memory (`presence`), not read from SQLite per scan. It is a projection of two
 * durable sources: this gate's own admissions (the check-ins table, fsync'd before any answer) and the
 * venue's other gates' admissions (the presence table, written with the venue stream position in one
 * transaction, as before). At open the table is loaded and the gate's own admissions are folded over it
 * in seq order. A scan therefore writes one appended check-in row and no presence row: the presence row
 * was a random page of a table as large as the crowd, and writing it was half of the scan path's SQLite
 * cost (25 of 41 µs per scan in a group of six, 100,000 tickets).
 */
import { hash } from 'node:crypto';
import Database from 'better-sqlite3';
import type { TicketEvent, TicketStatus } from '../shared/events.ts';

export type Direction = 'in' | 'out';
export type Decision = 'admit' | 'reject';
export type RejectReason =
  | 'unknown'
  | 'revoked'
  | 'already_used'
  | 'not_inside'
  | 'wrong_venue'
  | 'wrong_gate'
  | 'not_yet_valid'
  | 'expired'
  | 'bad_signature'
  | 'malformed';

export interface StoredTicket {
  id: string;
  rev: number;
  status: TicketStatus;
  holder: string;
  tier: string;
  seat: string | null;
  gates: string[];
  valid_from: number;
  valid_until: number;
  revoked_reason: string | null;
  /**
   * The QR token's qrHash, as a 16-character latin1 string: held for every cached ticket, a string is
   * a Buffer costs about 155 bytes more of heap (565 -> 410 bytes per cached ticket, 100,000 loaded, after gc). Stored as a BLOB.
   */
  qr_hash: string;
  stream_seq: number;
  event_at: number;
}

export interface Presence {
  ticket_id: string;
  inside: boolean;
  first_checkin_id: string;
  last_checkin_id: string;
  last_at: number;
  /**
   * Entries counted as they were applied as the newest admission: exact when admissions arrive in scan
   * order, an undercount when an older one arrives after a newer one (it is then ignored). Shown, never
   * decided on.
   */
  entries: number;
}

export interface CheckinRecord {
  seq: number;
  id: string;
  agent: string;
  venue: string;
  gate: string;
  ticket_id: string | null;
  direction: Direction;
  decision: Decision;
  reason: RejectReason | null;
  scanner: string;
  method: 'qr' | 'code' | 'none';
  unsynced_ticket: boolean;
  scanned_at: number;
}

/** A check-in as listed for people: with whether JetStream has acknowledged it. */
export interface ListedCheckin extends CheckinRecord {
  sent: boolean;
}

export interface AppliedEvent {
  seq: number;
  event: TicketEvent;
}

export interface ApplyResult {
  applied: number;
  stale: number;
}

const MIGRATIONS: string[] = [
  // 1: tickets, sync position, check-ins (outbox), presence.
  `
  CREATE TABLE tickets (
    id TEXT PRIMARY KEY,
    rev INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
    holder TEXT NOT NULL,
    tier TEXT NOT NULL,
    seat TEXT,
    gates TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    revoked_reason TEXT,
    qr_hash BLOB NOT NULL,
    stream_seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_at INTEGER NOT NULL,
    applied_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE sync_state (
    stream TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_event_at INTEGER,
    last_applied_at INTEGER
  ) WITHOUT ROWID;
  CREATE TABLE checkins (
    -- Plain rowid, not AUTOINCREMENT: rows are never deleted, so ids only grow, and each commit skips a
    -- write to sqlite_sequence.
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    agent TEXT NOT NULL,
    venue TEXT NOT NULL,
    gate TEXT NOT NULL,
    ticket_id TEXT,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    decision TEXT NOT NULL CHECK (decision IN ('admit', 'reject')),
    reason TEXT,
    scanner TEXT NOT NULL,
    method TEXT NOT NULL,
    unsynced_ticket INTEGER NOT NULL DEFAULT 0,
    scanned_at INTEGER NOT NULL,
    sent_at INTEGER
  );
  CREATE INDEX checkins_unsent ON checkins (seq) WHERE sent_at IS NULL;
  CREATE TABLE presence (
    ticket_id TEXT PRIMARY KEY,
    inside INTEGER NOT NULL,
    first_checkin_id TEXT NOT NULL,
    last_checkin_id TEXT NOT NULL,
    last_at INTEGER NOT NULL,
    entries INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // 2: small facts about the store itself (the trusted-key set it was synced with).
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
  `,
  // 3: the outbox's sent state becomes one watermark (see the top of this file). Rows sent before are
  // below it; the first unsent row (if any) is just above it. sent_at stays, no longer written.
  `
  CREATE TABLE outbox_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    sent_through INTEGER NOT NULL
  );
  INSERT INTO outbox_state (id, sent_through) VALUES (1, coalesce(
    (SELECT min(seq) - 1 FROM checkins WHERE sent_at IS NULL),
    (SELECT max(seq) FROM checkins),
    0));
  DROP INDEX checkins_unsent;
  `,
];

/** Tickets the store keeps in memory at most (about 410 bytes of heap each); past it, misses ask the table. */
export const TICKET_CACHE_MAX = 500_000;

/** How often the outbox's sent watermark is written at most (see markSentThrough). */
export const SENT_WRITE_INTERVAL_MS = 250;

/** The columns of a ticket row, in StoredTicket's shape (the look-up's, and the cache's at open). */
const TICKET_COLUMNS = `id, rev, status, holder, tier, seat, gates, valid_from, valid_until, revoked_reason, qr_hash,
  stream_seq, event_at`;

/** The columns of a check-in row, in CheckinRecord's shape (sent_at is a relic of schema 1 and 2). */
const CHECKIN_COLUMNS = `seq, id, agent, venue, gate, ticket_id, direction, decision, reason, scanner, method,
  unsynced_ticket, scanned_at`;

/** 16 bytes of sha256: enough to tell tokens apart, half the space of the full digest. */
export function qrHash(token: string): Buffer {
  // crypto.hash: one call, no Hash object (1.3 against 2.1 µs per ticket, and less for the GC).
  return hash('sha256', token, 'buffer').subarray(0, 16);
}

interface TicketRow extends Omit<StoredTicket, 'gates' | 'qr_hash'> {
  gates: string;
  qr_hash: Buffer;
}

function ticketOf(row: TicketRow): StoredTicket {
  return { ...row, gates: JSON.parse(row.gates) as string[], qr_hash: row.qr_hash.toString('latin1') };
}

/** qrHash as StoredTicket keeps it. */
export function qrHashKey(token: string): string {
  return qrHash(token).toString('latin1');
}

interface PresenceRow extends Omit<Presence, 'inside'> {
  inside: number;
}

/** One admission as presence sees it. */
export interface PresenceChange {
  ticket_id: string;
  id: string;
  direction: Direction;
  scanned_at: number;
}

/**
 * The presence rule, the same as the table's upsert: the newest admission (by scan time, then by id)
 * says whether the ticket is inside; an admission already applied, or older than the one applied,
 * changes nothing.
 * Returns the new presence, or undefined when nothing changes.
 */
export function nextPresence(p: Presence | undefined, c: PresenceChange): Presence | undefined {
  const entry = c.direction === 'in' ? 1 : 0;
  if (p === undefined)
    return {
      ticket_id: c.ticket_id,
      inside: c.direction === 'in',
      first_checkin_id: c.id,
      last_checkin_id: c.id,
      last_at: c.scanned_at,
      entries: entry,
    };
  // Newer wins; at the same millisecond the larger check-in id does, so the result is the same in any
  // order of arrival (a re-open folds this gate's own admissions after the other gates').
  if (c.scanned_at < p.last_at || (c.scanned_at === p.last_at && c.id <= p.last_checkin_id)) return undefined;
  return {
    ...p,
    inside: c.direction === 'in',
    last_checkin_id: c.id,
    last_at: c.scanned_at,
    entries: p.entries + entry,
  };
}

interface CheckinRow extends Omit<CheckinRecord, 'unsynced_ticket'> {
  unsynced_ticket: number;
}

export class TicketStore {
  readonly db: Database.Database;
  private readonly stmts;

  constructor(readonly path: string) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // NORMAL: commits do not fsync on the event loop. A scan's answer still waits until its check-in is
    // on disk: ScanService fsyncs the WAL file off the main thread first (see wal-sync.ts).
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    this.migrate();
    this.stmts = {
      getTicket: this.db.prepare<[string], TicketRow>(`SELECT ${TICKET_COLUMNS} FROM tickets WHERE id = ?`),
      // Positional parameters: binding by name costs a lookup per parameter and an object per row, and
      // a fresh agent runs this once per ticket (100,000 times at bootstrap).
      upsertTicket: this.db.prepare<
        [
          id: string,
          rev: number,
          status: string,
          holder: string,
          tier: string,
          seat: string | null,
          gates: string,
          valid_from: number,
          valid_until: number,
          revoked_reason: string | null,
          qr_hash: Buffer,
          stream_seq: number,
          event_id: string,
          event_at: number,
          applied_at: number,
        ]
      >(
        `INSERT INTO tickets (id, rev, status, holder, tier, seat, gates, valid_from, valid_until, revoked_reason,
                              qr_hash, stream_seq, event_id, event_at, applied_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET
           rev = excluded.rev, status = excluded.status, holder = excluded.holder, tier = excluded.tier,
           seat = excluded.seat, gates = excluded.gates, valid_from = excluded.valid_from,
           valid_until = excluded.valid_until, revoked_reason = excluded.revoked_reason,
           qr_hash = excluded.qr_hash, stream_seq = excluded.stream_seq, event_id = excluded.event_id,
           event_at = excluded.event_at, applied_at = excluded.applied_at
         WHERE excluded.rev > tickets.rev`,
      ),
      getSync: this.db.prepare<
        [string],
        { last_seq: number; last_event_at: number | null; last_applied_at: number | null }
      >('SELECT last_seq, last_event_at, last_applied_at FROM sync_state WHERE stream = ?'),
      setSync: this.db.prepare(
        `INSERT INTO sync_state (stream, last_seq, last_event_at, last_applied_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (stream) DO UPDATE SET last_seq = excluded.last_seq,
           last_event_at = coalesce(excluded.last_event_at, sync_state.last_event_at),
           last_applied_at = excluded.last_applied_at
         WHERE excluded.last_seq > sync_state.last_seq`,
      ),
      countTickets: this.db.prepare<[], { n: number }>('SELECT count(*) AS n FROM tickets'),
      upsertPresence: this.db.prepare(
        `INSERT INTO presence (ticket_id, inside, first_checkin_id, last_checkin_id, last_at, entries)
         VALUES (@ticket_id, @inside, @checkin_id, @checkin_id, @at, @entry)
         ON CONFLICT (ticket_id) DO UPDATE SET inside = excluded.inside, last_checkin_id = excluded.last_checkin_id,
           last_at = excluded.last_at, entries = presence.entries + excluded.entries
         WHERE excluded.last_at > presence.last_at
            OR (excluded.last_at = presence.last_at AND excluded.last_checkin_id > presence.last_checkin_id)`,
      ),
      // Positional, like upsertTicket: binding by name built an object and looked up each name per scan.
      insertCheckin: this.db.prepare<
        [
          id: string,
          agent: string,
          venue: string,
          gate: string,
          ticket_id: string | null,
          direction: Direction,
          decision: Decision,
          reason: RejectReason | null,
          scanner: string,
          method: string,
          unsynced_ticket: number,
          scanned_at: number,
        ]
      >(
        `INSERT INTO checkins (id, agent, venue, gate, ticket_id, direction, decision, reason, scanner, method,
                               unsynced_ticket, scanned_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO NOTHING`,
      ),
      checkinsAfter: this.db.prepare<[number, number, number], CheckinRow>(
        `SELECT ${CHECKIN_COLUMNS} FROM checkins WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?`,
      ),
      maxSeq: this.db.prepare<[], { m: number | null }>('SELECT max(seq) AS m FROM checkins'),
      sentThrough: this.db.prepare<[], { s: number }>('SELECT sent_through AS s FROM outbox_state'),
      setSentThrough: this.db.prepare<[number, number]>(
        'UPDATE outbox_state SET sent_through = ? WHERE sent_through < ?',
      ),
      outboxStats: this.db.prepare<[number, number], { n: number; oldest: number | null }>(
        // Both walk the rowid from the watermark: cost follows the outbox depth, not the table size.
        `SELECT (SELECT count(*) FROM checkins WHERE seq > ?) AS n,
                (SELECT scanned_at FROM checkins WHERE seq > ? ORDER BY seq LIMIT 1) AS oldest`,
      ),
      recentCheckins: this.db.prepare<[number], CheckinRow>(
        `SELECT ${CHECKIN_COLUMNS} FROM checkins ORDER BY seq DESC LIMIT ?`,
      ),
      // Walks the rowid backwards from the newest check-in and stops after `limit` rejects; the window
      // (`seq > ?`) bounds the walk when rejects are rare, so the status page's poll stays cheap.
      recentRejects: this.db.prepare<[number, number], CheckinRow & { holder: string | null }>(
        `SELECT c.seq, c.id, c.agent, c.venue, c.gate, c.ticket_id, c.direction, c.decision, c.reason,
                c.scanner, c.method, c.unsynced_ticket, c.scanned_at, t.holder AS holder
         FROM checkins c LEFT JOIN tickets t ON t.id = c.ticket_id
         WHERE c.seq > ? AND c.decision = 'reject' ORDER BY c.seq DESC LIMIT ?`,
      ),
      hasCheckin: this.db.prepare<[string], { one: number }>('SELECT 1 AS one FROM checkins WHERE id = ?'),
    };
    this.loadTickets();
    this.loadPresence();
  }

  /** Who is inside, by ticket id (see the top of this file). Replaced entries are never mutated. */
  private readonly presence = new Map<string, Presence>();
  /**
   * The tickets, by id, as a read cache in front of the table: a scan's look-up was a SQLite query of
   * about 9 µs (a row object of 13 columns from a B-tree of 100,000 text keys). Loaded at open and kept
   * by every write, so a miss means "not held" until the cache is full; past TICKET_CACHE_MAX a miss
   * asks the table.
   */
  private readonly tickets = new Map<string, StoredTicket>();
  private ticketsComplete = true;
  /** Map entries replaced in the open transaction, to put back if it rolls back. */
  private undo: [Map<string, StoredTicket> | Map<string, Presence>, string, unknown][] = [];
  private depth = 0;

  private loadTickets(): void {
    const all = this.db
      .prepare<[number], TicketRow>(`SELECT ${TICKET_COLUMNS} FROM tickets LIMIT ?`)
      .all(TICKET_CACHE_MAX + 1);
    this.ticketsComplete = all.length <= TICKET_CACHE_MAX;
    for (const row of all.slice(0, TICKET_CACHE_MAX)) this.tickets.set(row.id, ticketOf(row));
  }

  private cacheTicket(t: StoredTicket): void {
    if (!this.tickets.has(t.id) && this.tickets.size >= TICKET_CACHE_MAX) {
      this.ticketsComplete = false;
      return;
    }
    if (this.depth > 0) this.undo.push([this.tickets, t.id, this.tickets.get(t.id)]);
    this.tickets.set(t.id, t);
  }

  private loadPresence(): void {
    const rows = this.db
      .prepare<[], PresenceRow>(
        'SELECT ticket_id, inside, first_checkin_id, last_checkin_id, last_at, entries FROM presence',
      )
      .all();
    for (const r of rows) this.presence.set(r.ticket_id, { ...r, inside: r.inside === 1 });
    const own = this.db
      .prepare<[], PresenceChange>(
        `SELECT ticket_id, id, direction, scanned_at FROM checkins
         WHERE decision = 'admit' AND ticket_id IS NOT NULL ORDER BY seq`,
      )
      .iterate();
    for (const c of own) this.foldPresence(c);
  }

  /** Applies one admission to who is inside; true when it changed something. */
  private foldPresence(c: PresenceChange): boolean {
    const before = this.presence.get(c.ticket_id);
    const after = nextPresence(before, c);
    if (after === undefined) return false;
    if (this.depth > 0) this.undo.push([this.presence, c.ticket_id, before]);
    this.presence.set(c.ticket_id, after);
    return true;
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < MIGRATIONS.length; v++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[v] as string);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /** The stored ticket; shared with the cache, so callers must not change it. */
  getTicket(id: string): Readonly<StoredTicket> | undefined {
    const hit = this.tickets.get(id);
    if (hit !== undefined || this.ticketsComplete) return hit;
    const row = this.stmts.getTicket.get(id);
    return row === undefined ? undefined : ticketOf(row);
  }

  private countCache = { n: 0, at: 0 };

  /** Tickets held; counting 100,000 rows takes milliseconds, so the answer is reused for a second. */
  ticketCount(): number {
    const now = Date.now();
    if (now - this.countCache.at > 1_000)
      this.countCache = { n: this.stmts.countTickets.get()?.n ?? 0, at: now };
    return this.countCache.n;
  }

  /**
   * A transaction for state that can be derived again (tickets and positions re-read from the streams,
   * sent marks that only cause a harmless re-send): it needs no fsync of its own, and the next scan's
   * WAL sync makes it durable anyway, since WAL frames reach the disk in order.
   */
  private relaxed<T>(fn: () => T): T {
    return this.transaction(fn);
  }

  syncPosition(stream: string): {
    lastSeq: number;
    lastEventAt: number | null;
    lastAppliedAt: number | null;
  } {
    const row = this.stmts.getSync.get(stream);
    return {
      lastSeq: row?.last_seq ?? 0,
      lastEventAt: row?.last_event_at ?? null,
      lastAppliedAt: row?.last_applied_at ?? null,
    };
  }

  /**
   * Applies verified events and moves the stream position to `upToSeq` in one transaction. `upToSeq`
   * may be past the last event when the batch ended in messages that were dropped (bad signatures):
   * they are never to be read again. Events at or below the stored position are skipped, so a
   * redelivery after a crash is harmless.
   */
  applyTicketEvents(stream: string, events: AppliedEvent[], upToSeq: number): ApplyResult {
    return this.relaxed((): ApplyResult => {
      const from = this.syncPosition(stream).lastSeq;
      const now = Date.now();
      let applied = 0;
      let stale = 0;
      let lastEventAt: number | null = null;
      for (const { seq, event } of events) {
        if (seq <= from) continue;
        const t = event.ticket;
        const hashOfQr = qrHash(t.qr);
        const info = this.stmts.upsertTicket.run(
          t.id,
          event.rev,
          t.status,
          t.holder,
          t.tier,
          t.seat,
          JSON.stringify(t.gates),
          t.valid_from,
          t.valid_until,
          t.revoked_reason,
          hashOfQr,
          seq,
          event.id,
          event.at,
          now,
        );
        if (info.changes > 0) {
          applied++;
          this.cacheTicket({
            id: t.id,
            rev: event.rev,
            status: t.status,
            holder: t.holder,
            tier: t.tier,
            seat: t.seat,
            gates: t.gates,
            valid_from: t.valid_from,
            valid_until: t.valid_until,
            revoked_reason: t.revoked_reason,
            qr_hash: hashOfQr.toString('latin1'),
            stream_seq: seq,
            event_at: event.at,
          });
        } else stale++;
        lastEventAt = event.at;
      }
      if (upToSeq > from) this.stmts.setSync.run(stream, upToSeq, lastEventAt, now);
      if (applied > 0) this.countCache.at = 0;
      return { applied, stale };
    });
  }

  hasCheckin(id: string): boolean {
    return this.stmts.hasCheckin.get(id) !== undefined;
  }

  getMeta(key: string): string | undefined {
    const row = this.db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?').get(key);
    return row?.value;
  }

  setMeta(key: string, value: string): void {
    this.db
      .prepare(
        'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value',
      )
      .run(key, value);
  }

  /**
   * Forgets how far a stream was read, so the next sync reads it again from the start. Stored tickets
   * stay (a re-read only adds what was skipped and replaces older revisions).
   */
  resetSyncPosition(stream: string): void {
    this.db.prepare('DELETE FROM sync_state WHERE stream = ?').run(stream);
  }

  /** Who is inside for one ticket: a map look-up, no query. */
  getPresence(ticketId: string): Readonly<Presence> | undefined {
    return this.presence.get(ticketId);
  }

  /**
   * Records a check-in and, for an admission, who is inside (in memory: the row is its durable record).
   * Call inside a transaction for group commit.
   */
  recordCheckin(c: Omit<CheckinRecord, 'seq'>): number {
    const info = this.stmts.insertCheckin.run(
      c.id,
      c.agent,
      c.venue,
      c.gate,
      c.ticket_id,
      c.direction,
      c.decision,
      c.reason,
      c.scanner,
      c.method,
      c.unsynced_ticket ? 1 : 0,
      c.scanned_at,
    );
    if (info.changes > 0 && c.decision === 'admit' && c.ticket_id !== null) {
      this.foldPresence({
        ticket_id: c.ticket_id,
        id: c.id,
        direction: c.direction,
        scanned_at: c.scanned_at,
      });
    }
    return Number(info.lastInsertRowid);
  }

  /**
   * Applies the venue's check-ins read from GS_CHECKINS (other gates' and, after a store was replaced,
   * this gate's own) to who is inside, and moves the stream position, in one transaction.
   */
  applyVenueCheckins(
    stream: string,
    items: {
      ticket_id: string | null;
      id: string;
      direction: Direction;
      decision: Decision;
      scanned_at: number;
    }[],
    upToSeq: number,
  ): number {
    return this.relaxed((): number => {
      const from = this.syncPosition(stream).lastSeq;
      if (upToSeq <= from) return 0;
      let applied = 0;
      for (const c of items) {
        if (c.decision !== 'admit' || c.ticket_id === null) continue;
        // The table keeps other gates' admissions durable with the stream position; the map is what
        // decisions read. An admission this gate recorded itself is already in the map.
        this.stmts.upsertPresence.run({
          ticket_id: c.ticket_id,
          inside: c.direction === 'in' ? 1 : 0,
          checkin_id: c.id,
          at: c.scanned_at,
          entry: c.direction === 'in' ? 1 : 0,
        });
        if (this.foldPresence({ ...c, ticket_id: c.ticket_id })) applied++;
      }
      this.stmts.setSync.run(stream, upToSeq, null, Date.now());
      return applied;
    });
  }

  /**
   * Runs `fn` in one transaction: one fsync for everything it writes (group commit). If it rolls back,
   * the in-memory presence it changed is put back too.
   */
  transaction<T>(fn: () => T): T {
    const mark = this.undo.length;
    this.depth++;
    try {
      return this.db.transaction(fn)();
    } catch (err: unknown) {
      for (let i = this.undo.length - 1; i >= mark; i--) {
        const [map, id, before] = this.undo[i] as [Map<string, unknown>, string, unknown];
        if (before === undefined) map.delete(id);
        else map.set(id, before);
      }
      this.undo.length = mark;
      throw err;
    } finally {
      // A nested transaction that committed is still undone with its outer one.
      if (--this.depth === 0) this.undo.length = 0;
    }
  }

  maxCheckinSeq(): number {
    return this.stmts.maxSeq.get()?.m ?? 0;
  }

  /**
   * Check-ins after `afterSeq` up to `upToSeq` (the durable ones), in seq order: the outbox read from
   * the watermark, or from wherever the publisher got to.
   */
  checkinsAfter(afterSeq: number, limit: number, upToSeq = Number.MAX_SAFE_INTEGER): CheckinRecord[] {
    return this.stmts.checkinsAfter
      .all(afterSeq, upToSeq, limit)
      .map((r) => ({ ...r, unsynced_ticket: r.unsynced_ticket === 1 }));
  }

  private sentCache: number | undefined;

  /** Every check-in with seq at or below this was acknowledged by JetStream. */
  sentThrough(): number {
    this.sentCache ??= this.stmts.sentThrough.get()?.s ?? 0;
    return this.sentCache;
  }

  /** When the watermark was last written, and the timer that writes a newer one. */
  private sentWrittenAt = 0;
  private sentTimer: NodeJS.Timeout | undefined;

  /**
   * Moves the watermark up to `seq` (never down): every check-in up to it is acknowledged. It moves in
   * memory at once; the row is written at most every SENT_WRITE_INTERVAL_MS (and at close), in a relaxed
   * transaction of its own. A write per acknowledged batch was a commit (WAL frame, locks) per scan
   * group; losing the last interval's moves to a crash only means a harmless re-send.
   */
  markSentThrough(seq: number, epoch = this.outboxEpoch): void {
    // A requeue since the caller read the outbox: what it acknowledged no longer moves the watermark.
    if (epoch !== this.outboxEpoch || seq <= this.sentThrough()) return;
    this.sentCache = seq;
    const wait = this.sentWrittenAt + SENT_WRITE_INTERVAL_MS - Date.now();
    if (wait <= 0) this.writeSentThrough();
    else
      this.sentTimer ??= setTimeout(() => {
        try {
          this.writeSentThrough();
        } catch {
          // Say, SQLITE_BUSY. The next move writes at once and the outbox's drain sees the error.
          this.sentWrittenAt = 0;
        }
      }, wait).unref();
  }

  private writeSentThrough(): void {
    clearTimeout(this.sentTimer);
    this.sentTimer = undefined;
    if (!this.db.open || this.sentCache === undefined) return;
    this.sentWrittenAt = Date.now();
    this.stmts.setSentThrough.run(this.sentCache, this.sentCache);
  }

  /**
   * Counts operator requeues in this process: a publisher reads it when it starts reading the outbox and
   * passes it to markSentThrough, so acknowledgements of a drain that began before a requeue cannot
   * undo it.
   */
  outboxEpoch = 0;

  /**
   * Puts every check-in back in the outbox, for an operator replay (say, after the hub lost data).
   * Harmless by design: the stream refuses the ones it holds. Returns how many rows were re-queued.
   */
  requeueAll(): number {
    const before = this.sentThrough();
    const n =
      before === 0
        ? 0
        : (this.db
            .prepare<[number], { n: number }>('SELECT count(*) AS n FROM checkins WHERE seq <= ?')
            .get(before)?.n ?? 0);
    clearTimeout(this.sentTimer);
    this.sentTimer = undefined;
    this.db.prepare('UPDATE outbox_state SET sent_through = 0').run();
    this.sentCache = 0;
    this.outboxEpoch++;
    return n;
  }

  outboxStats(): { depth: number; oldestScannedAt: number | null } {
    const through = this.sentThrough();
    const row = this.stmts.outboxStats.get(through, through);
    return { depth: row?.n ?? 0, oldestScannedAt: row?.oldest ?? null };
  }

  recentCheckins(limit: number): ListedCheckin[] {
    const through = this.sentThrough();
    return this.stmts.recentCheckins
      .all(limit)
      .map((r) => ({ ...r, unsynced_ticket: r.unsynced_ticket === 1, sent: r.seq <= through }));
  }

  /**
   * The newest rejected scans at this gate, newest first, among the last `window` check-ins, with the
   * holder's name when the gate holds the ticket. Read-only; for the status page.
   */
  recentRejects(limit: number, window = 10_000): (ListedCheckin & { holder: string | null })[] {
    if (limit <= 0) return [];
    const through = this.sentThrough();
    return this.stmts.recentRejects
      .all(this.maxCheckinSeq() - window, limit)
      .map((r) => ({ ...r, unsynced_ticket: r.unsynced_ticket === 1, sent: r.seq <= through }));
  }

  /**
   * Check-ins recorded. Rows are never deleted and seq is a plain rowid (the next is always max + 1, and a
   * refused insert takes none), so this is max(seq): a lookup at the end of the rowid tree, where count(*)
   * walked every row (tens of milliseconds on the event loop for a million check-ins, every heartbeat).
   */
  checkinCount(): number {
    return this.maxCheckinSeq();
  }

  close(): void {
    if (this.sentTimer !== undefined) this.writeSentThrough();
    if (this.db.open) this.db.close();
  }
}
