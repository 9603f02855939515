import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { qrHashKey, TicketStore } from '../../gate-agent/ticket-store.ts';
import { EVENT_SCHEMA_VERSION, type TicketEvent } from '../../shared/events.ts';
import { tmpDir } from '../harness/index.ts';

function ev(id: string, rev: number, status: 'valid' | 'revoked' = 'valid'): TicketEvent {
  return {
    v: EVENT_SCHEMA_VERSION,
    type: status === 'valid' ? 'ticket.issued' : 'ticket.revoked',
    id: `E${id}${rev}`,
    at: 1000 + rev,
    rev,
    ticket: {
      id,
      venue: 'v1',
      holder: `h${rev}`,
      tier: 'GA',
      seat: null,
      gates: [],
      valid_from: 0,
      valid_until: 10,
      status,
      revoked_reason: null,
      issued_at: 1,
      updated_at: 1,
      qr: `GS1.${id}`,
    },
  };
}

test('ticket store: stale revisions never overwrite newer ones, and re-applied positions are skipped', async (t) => {
  const dir = await tmpDir('gs-store-');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 's.db');
  const store = new TicketStore(path);
  assert.equal(store.db.pragma('journal_mode', { simple: true }), 'wal');
  assert.equal(
    store.db.pragma('synchronous', { simple: true }),
    1,
    'synchronous=NORMAL: scans fsync the WAL off the event loop (wal-sync.ts)',
  );

  assert.deepEqual(
    store.applyTicketEvents(
      'S',
      [
        { seq: 1, event: ev('a', 1) },
        { seq: 2, event: ev('a', 3, 'revoked') },
      ],
      2,
    ),
    { applied: 2, stale: 0 },
  );
  // An older revision arriving later (another path, a replay) is kept out.
  assert.deepEqual(store.applyTicketEvents('S', [{ seq: 3, event: ev('a', 2) }], 3), {
    applied: 0,
    stale: 1,
  });
  assert.equal(store.getTicket('a')?.rev, 3);
  assert.equal(store.getTicket('a')?.status, 'revoked');
  // A redelivery at or below the stored position is not applied again.
  assert.deepEqual(store.applyTicketEvents('S', [{ seq: 2, event: ev('b', 1) }], 2), {
    applied: 0,
    stale: 0,
  });
  assert.equal(store.getTicket('b'), undefined);
  assert.equal(store.syncPosition('S').lastSeq, 3);
  // The position survives a reopen (a restart).
  store.close();
  const again = new TicketStore(path);
  t.after(() => again.close());
  assert.equal(again.syncPosition('S').lastSeq, 3);
  assert.deepEqual(
    [again.getTicket('a')?.rev, again.getTicket('a')?.status, again.getTicket('a')?.gates],
    [3, 'revoked', []],
    'the tickets are read back at open',
  );
  // The scan path trusts a token whose hash equals the stored one (no signature check): the same key
  // whether the ticket was cached as applied or read back from its BLOB at open.
  assert.equal(again.getTicket('a')?.qr_hash, qrHashKey('GS1.a'));
  assert.equal(store.getTicket('a')?.qr_hash, qrHashKey('GS1.a'));
  assert.notEqual(again.getTicket('a')?.qr_hash, qrHashKey('GS1.b'));
  // Tickets applied in a transaction that rolls back are neither stored nor answered from memory.
  assert.throws(() =>
    again.transaction(() => {
      again.applyTicketEvents('S', [{ seq: 4, event: ev('c', 1) }], 4);
      again.applyTicketEvents('S', [{ seq: 5, event: ev('a', 4) }], 5);
      throw new Error('rolled back');
    }),
  );
  assert.equal(again.getTicket('c'), undefined);
  assert.equal(again.getTicket('a')?.rev, 3);
  assert.equal(again.syncPosition('S').lastSeq, 3);
  assert.equal(again.ticketCount(), 1);
});

test('ticket store: a check-in id is recorded once, and presence follows admitted entries and exits', async (t) => {
  const dir = await tmpDir('gs-store-');
  const store = new TicketStore(join(dir, 's.db'));
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const base = {
    agent: 'a',
    venue: 'v',
    gate: 'g',
    ticket_id: 't',
    reason: null,
    scanner: 's',
    method: 'qr' as const,
    unsynced_ticket: false,
  };
  store.transaction(() => {
    store.recordCheckin({ ...base, id: 'c1', direction: 'in', decision: 'admit', scanned_at: 1 });
    store.recordCheckin({ ...base, id: 'c1', direction: 'in', decision: 'admit', scanned_at: 1 });
  });
  assert.equal(store.checkinCount(), 1);
  assert.equal(store.getPresence('t')?.inside, true);
  store.recordCheckin({ ...base, id: 'c2', direction: 'out', decision: 'admit', scanned_at: 2 });
  assert.equal(store.getPresence('t')?.inside, false);
  store.recordCheckin({
    ...base,
    id: 'c3',
    direction: 'in',
    decision: 'reject',
    reason: 'already_used',
    scanned_at: 3,
  });
  assert.equal(store.getPresence('t')?.inside, false, "a rejected scan changes nobody's presence");
  assert.equal(store.outboxStats().depth, 3);
  const unsent = store.checkinsAfter(store.sentThrough(), 10);
  assert.deepEqual(
    unsent.map((c) => c.id),
    ['c1', 'c2', 'c3'],
  );
  store.markSentThrough(unsent[0]?.seq ?? 0);
  assert.equal(store.outboxStats().depth, 2);
  assert.equal(store.outboxStats().oldestScannedAt, 2);
  store.markSentThrough(0);
  assert.equal(store.sentThrough(), unsent[0]?.seq, 'the watermark never moves down');
  assert.deepEqual(
    store.recentCheckins(3).map((c) => [c.id, c.sent]),
    [
      ['c3', false],
      ['c2', false],
      ['c1', true],
    ],
  );
  assert.equal(store.requeueAll(), 1);
  assert.equal(store.outboxStats().depth, 3);
});

test('migration 3 puts the watermark just below the first unsent check-in of an older store', async () => {
  const dir = await tmpDir('gs-store-mig-');
  const path = join(dir, 'old.db');
  // A store as schema 2 left it: made by today's code, then taken back to version 2's outbox.
  new TicketStore(path).close();
  const old = new Database(path);
  old.exec(`DROP TABLE outbox_state;
    CREATE INDEX checkins_unsent ON checkins (seq) WHERE sent_at IS NULL;
    PRAGMA user_version = 2;`);
  const insert = old.prepare(
    `INSERT INTO checkins (id, agent, venue, gate, direction, decision, scanner, method, scanned_at, sent_at)
     VALUES (?, 'a', 'v', 'g', 'in', 'admit', 's', 'qr', ?, ?)`,
  );
  // Sent, sent, sent, unsent, sent (acked out of order), unsent: the watermark goes below the first unsent.
  for (let i = 1; i <= 6; i++) insert.run(`c${i}`, i, i <= 3 || i === 5 ? 100 : null);
  old.close();
  const store = new TicketStore(path);
  try {
    assert.equal(store.sentThrough(), 3);
    assert.equal(store.outboxStats().depth, 3, 'c5 is re-sent: harmless, the stream holds it already');
    assert.equal(store.outboxStats().oldestScannedAt, 4);
    const indexes = store.db.prepare("SELECT name FROM sqlite_master WHERE type = 'index'").all();
    assert.ok(!JSON.stringify(indexes).includes('checkins_unsent'));
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('recent rejects: newest first, kept as scans commit, a rolled-back group lists nothing', async () => {
  const dir = await tmpDir('gs-store-rej-');
  const store = new TicketStore(join(dir, 'agent.db'));
  try {
    store.applyTicketEvents('GS_TICKETS', [{ seq: 1, event: ev('t1', 1) }], 1);
    const base = {
      agent: 'a',
      venue: 'v1',
      gate: 'g',
      direction: 'in' as const,
      scanner: 's',
      method: 'qr' as const,
      unsynced_ticket: false,
    };
    const reject = (id: string, at: number, ticket: string | null) =>
      store.recordCheckin({
        ...base,
        id,
        ticket_id: ticket,
        decision: 'reject',
        reason: 'already_used',
        scanned_at: at,
      });
    reject('r1', 1, 't1');
    assert.deepEqual(
      store.recentRejects(10).map((r) => [r.id, r.holder]),
      [['r1', 'h1']],
      'first read loads from the table',
    );
    store.transaction(() => {
      reject('r2', 2, null);
      store.recordCheckin({
        ...base,
        id: 'a1',
        ticket_id: 't1',
        decision: 'admit',
        reason: null,
        scanned_at: 3,
      });
    });
    assert.throws(() =>
      store.transaction(() => {
        reject('r3', 4, 't1');
        throw new Error('the group failed');
      }),
    );
    reject('r4', 5, 'unknown-ticket');
    assert.deepEqual(
      store.recentRejects(10).map((r) => [r.id, r.holder, r.sent]),
      [
        ['r4', null, false],
        ['r2', null, false],
        ['r1', 'h1', false],
      ],
    );
    store.transaction(() => {
      store.transaction(() => reject('r5', 6, null));
      assert.throws(() =>
        store.transaction(() => {
          reject('r6', 7, null);
          throw new Error('an inner group failed');
        }),
      );
    });
    assert.deepEqual(
      store.recentRejects(2).map((r) => r.id),
      ['r5', 'r4'],
      'a nested commit lists with its outer one; a failed nested one lists nothing',
    );
    assert.deepEqual(store.recentRejects(0), []);
    store.markSentThrough(store.maxCheckinSeq());
    assert.equal(store.recentRejects(1)[0]?.sent, true);
    assert.deepEqual(
      store.recentRejects(50).map((r) => r.id),
      ['r5', 'r4', 'r2', 'r1'],
      'a longer list comes from the table, and agrees',
    );
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('ticket store: who is inside is rebuilt at open from own check-ins and other gates, and a rolled-back group leaves it as it was', async (t) => {
  const dir = await tmpDir('gs-store-');
  const path = join(dir, 's.db');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const base = {
    agent: 'a',
    venue: 'v',
    gate: 'g',
    reason: null,
    scanner: 's',
    method: 'qr' as const,
    unsynced_ticket: false,
    decision: 'admit' as const,
  };
  const first = new TicketStore(path);
  first.transaction(() => {
    first.recordCheckin({ ...base, id: 'c1', ticket_id: 'own-in', direction: 'in', scanned_at: 10 });
    first.recordCheckin({ ...base, id: 'c2', ticket_id: 'own-out', direction: 'in', scanned_at: 10 });
    first.recordCheckin({ ...base, id: 'c3', ticket_id: 'own-out', direction: 'out', scanned_at: 11 });
    // This gate let `both` in at 20; another gate saw it leave at 30 (below).
    first.recordCheckin({ ...base, id: 'c4', ticket_id: 'both', direction: 'in', scanned_at: 20 });
  });
  const peer = (id: string, ticket_id: string, direction: 'in' | 'out', scanned_at: number) => ({
    id,
    ticket_id,
    direction,
    decision: 'admit' as const,
    scanned_at,
  });
  assert.equal(
    first.applyVenueCheckins(
      'GS_CHECKINS',
      [peer('p1', 'peer-in', 'in', 5), peer('p2', 'both', 'out', 30)],
      2,
    ),
    2,
  );
  // A group that fails half-way changes neither the file nor who is inside.
  assert.throws(() =>
    first.transaction(() => {
      first.recordCheckin({ ...base, id: 'c5', ticket_id: 'own-out', direction: 'in', scanned_at: 40 });
      first.recordCheckin({ ...base, id: 'c6', ticket_id: 'fresh', direction: 'in', scanned_at: 40 });
      throw new Error('disk full');
    }),
  );
  // `inside` follows the newest admission whatever order they arrive in; `entries` counts the
  // admissions applied as newest, so it is only exact when they arrive in order (not compared here).
  const expected = { 'own-in': true, 'own-out': false, both: false, 'peer-in': true, fresh: undefined };
  const view = (s: TicketStore) =>
    Object.fromEntries(Object.keys(expected).map((id) => [id, s.getPresence(id)?.inside]));
  assert.deepEqual(view(first), expected);
  assert.equal(first.getPresence('own-out')?.entries, 1);
  assert.equal(first.checkinCount(), 4);
  first.close();

  const reopened = new TicketStore(path);
  t.after(() => reopened.close());
  assert.deepEqual(view(reopened), expected, 'the same after a restart');
  // The presence table holds only what other gates told this one: own admissions are not written there.
  const rows = reopened.db.prepare('SELECT ticket_id FROM presence ORDER BY ticket_id').all();
  assert.deepEqual(rows, [{ ticket_id: 'both' }, { ticket_id: 'peer-in' }]);
});
