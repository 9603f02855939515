/**
 * The hub's check-in consumer and the PubAck matching under it, against a real nats-server: check-ins
 * are published to GS_CHECKINS as an agent publishes them, and GS_ENTRIES and GS_CONFLICTS are read back.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { spawnHub } from '../bench/support/hub-process.ts';
import { CheckinConsumer, type Verdict } from '../hub/checkin-consumer.ts';
import { ensureStreams } from '../hub/streams.ts';
import type { CheckinMessage, ConflictRecord, EntryState } from '../shared/checkins.ts';
import { decode, encode } from '../shared/codec.ts';
import { GatesyncError } from '../shared/errors.ts';
import { newId } from '../shared/ids.ts';
import { PubAcks, WRONG_LAST_SEQUENCE } from '../shared/pub-acks.ts';
import { STREAMS, subjects } from '../shared/subjects.ts';
import { makeKeys, testLogger } from './harness/gatesync.ts';
import { startNats, tmpDir, waitFor } from './harness/index.ts';

const VENUE = 'v1';

async function setUp(t: TestContext) {
  const nats = await startNats();
  t.after(() => nats.cleanup());
  const nc = await connect({ servers: [nats.url], noAsyncTraces: true });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm, { checkinRetentionDays: 1 });
  return { nats, nc, jsm, js: jetstream(nc) };
}

function checkin(agent: string, ticket: string | null, extra: Partial<CheckinMessage> = {}): CheckinMessage {
  return {
    v: 1,
    id: newId(),
    venue: VENUE,
    agent,
    gate: agent,
    seq: 1,
    ticket_id: ticket,
    direction: 'in',
    decision: 'admit',
    reason: null,
    scanner: 's1',
    method: 'qr',
    unsynced_ticket: false,
    scanned_at: Date.now(),
    ...extra,
  };
}

/** As the agent's outbox publishes: msgID = id and an expected last subject sequence of 0. */
async function publishCheckin(nc: NatsConnection, c: CheckinMessage): Promise<void> {
  await jetstream(nc).publish(subjects.checkin(c.venue, c.agent, c.id), encode(c), {
    msgID: c.id,
    expect: { lastSubjectSequence: 0 },
  });
}

async function entryOf(env: Awaited<ReturnType<typeof setUp>>, ticket: string) {
  const m = await env.jsm.streams.getMessage(STREAMS.entries, {
    last_by_subj: subjects.entry(VENUE, ticket),
  });
  return m === null ? undefined : (decode(m.data) as EntryState);
}

async function conflictsOf(env: Awaited<ReturnType<typeof setUp>>): Promise<ConflictRecord[]> {
  const info = await env.jsm.streams.info(STREAMS.conflicts);
  const out: ConflictRecord[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await env.jsm.streams.getMessage(STREAMS.conflicts, { seq });
    if (m !== null) out.push(decode(m.data) as ConflictRecord);
  }
  return out;
}

function startConsumer(t: TestContext, env: Awaited<ReturnType<typeof setUp>>) {
  const verdicts = new Map<string, Verdict>();
  const consumer = new CheckinConsumer({
    js: env.js,
    jsm: env.jsm,
    nc: env.nc,
    logger: testLogger('checkin-consumer'),
    onCheckin: (c, v) => verdicts.set(c.id, v),
  });
  t.after(() => consumer.stop());
  return { consumer, verdicts };
}

test('PubAcks: a stored publish resolves with its sequence, a re-sent Nats-Msg-Id as a duplicate', async (t) => {
  const env = await setUp(t);
  const pub = new PubAcks(env.nc);
  t.after(() => pub.close());
  const subject = subjects.entry(VENUE, 'T1');
  const first = await pub.publish(subject, encode({ a: 1 }), { msgID: 'm1' });
  assert.ok(first.ok);
  assert.deepEqual([first.stream, first.duplicate], [STREAMS.entries, false]);
  const again = await pub.publish(subject, encode({ a: 1 }), { msgID: 'm1' });
  assert.ok(again.ok);
  assert.deepEqual([again.seq, again.duplicate], [first.seq, true]);
  assert.equal(pub.outstanding, 0);
});

test('PubAcks: a refused expected-sequence write is an answer (10071), not an exception, and stores nothing', async (t) => {
  const env = await setUp(t);
  const pub = new PubAcks(env.nc);
  t.after(() => pub.close());
  const subject = subjects.entry(VENUE, 'T1');
  const stored = await pub.publish(subject, encode({ n: 1 }), { expectLastSubjectSequence: 0 });
  assert.ok(stored.ok);
  const refused = await pub.publish(subject, encode({ n: 2 }), { expectLastSubjectSequence: 0 });
  assert.equal(refused.ok, false);
  assert.equal(!refused.ok && refused.errCode, WRONG_LAST_SEQUENCE);
  const next = await pub.publish(subject, encode({ n: 3 }), { expectLastSubjectSequence: stored.seq });
  assert.ok(next.ok);
  const last = await env.jsm.streams.getMessage(STREAMS.entries, { last_by_subj: subject });
  assert.deepEqual(decode(last?.data ?? new Uint8Array()), { n: 3 });
});

test('PubAcks: no stream on the subject (503) and no answer in time both reject as nats_unavailable', async (t) => {
  const env = await setUp(t);
  const pub = new PubAcks(env.nc, 300);
  t.after(() => pub.close());
  await assert.rejects(pub.publish('nostream.x', encode(1)), (err: unknown) => {
    assert.ok(err instanceof GatesyncError);
    assert.equal(err.code, 'nats_unavailable');
    assert.match(err.message, /503/);
    return true;
  });
  // A plain subscriber that never answers: the server sees a responder, so only the timeout ends it.
  const silent = env.nc.subscribe('silent.x');
  t.after(() => silent.unsubscribe());
  await env.nc.flush();
  await assert.rejects(pub.publish('silent.x', encode(1)), /no answer within 300 ms/);
  assert.equal(pub.outstanding, 0);
  pub.close();
  await assert.rejects(pub.publish(subjects.entry(VENUE, 'T9'), encode(1)), /closed/);
});

test('PubAcks.lastBySubject reads the last message of a subject by a direct get, or null when there is none', async (t) => {
  const env = await setUp(t);
  const pub = new PubAcks(env.nc);
  t.after(() => pub.close());
  const subject = subjects.entry(VENUE, 'T1');
  assert.equal(await pub.lastBySubject(STREAMS.entries, subject), null);
  await pub.publish(subject, encode({ n: 1 }));
  const second = await pub.publish(subject, encode({ n: 2 }));
  assert.ok(second.ok);
  const last = await pub.lastBySubject(STREAMS.entries, subject);
  assert.equal(last?.seq, second.seq);
  assert.deepEqual(decode(last?.data ?? new Uint8Array()), { n: 2 });
});

test('the judge reads entry state through the API when GS_ENTRIES serves no direct gets', async (t) => {
  const env = await setUp(t);
  const info = await env.jsm.streams.info(STREAMS.entries);
  await env.jsm.streams.update(STREAMS.entries, { ...info.config, allow_direct: false });
  const { consumer } = startConsumer(t, env);
  const a = checkin('north', 'T1');
  assert.equal(await consumer.judge(a), 'first_entry');
  assert.equal(await consumer.judge(checkin('north', 'T1', { direction: 'out' })), 'exit');
  assert.equal(await consumer.judge(checkin('south', 'T1')), 'reentry');
  assert.equal(await consumer.judge(checkin('north', 'T1')), 'conflict');
  assert.equal((await conflictsOf(env)).length, 1);
});

test('the consumer records each first entry once, settles rejects with no entry, and judges exits and re-entries', async (t) => {
  const env = await setUp(t);
  const { consumer, verdicts } = startConsumer(t, env);
  await consumer.start();
  const inA = checkin('north', 'T1');
  const rejected = checkin('north', 'T2', { decision: 'reject', reason: 'revoked' });
  const unknown = checkin('north', null, { decision: 'reject', reason: 'unknown' });
  const out = checkin('north', 'T1', { direction: 'out' });
  const outOfNothing = checkin('north', 'T3', { direction: 'out' });
  const back = checkin('south', 'T1');
  await publishCheckin(env.nc, inA);
  // A message that is not a check-in is terminated and holds nothing up.
  await env.js.publish(subjects.checkin(VENUE, 'north', 'garbage1'), new Uint8Array([0xc1, 0x00]));
  for (const c of [rejected, unknown, out, outOfNothing, back]) await publishCheckin(env.nc, c);
  await waitFor(() => verdicts.size === 6, { message: 'six check-ins judged' });
  await waitFor(
    async () => (await env.jsm.consumers.info(STREAMS.checkins, 'gs_hub_checkins')).num_ack_pending === 0,
    { message: 'the malformed message was terminated' },
  );
  assert.deepEqual(
    [inA, rejected, unknown, out, outOfNothing, back].map((c) => verdicts.get(c.id)),
    ['first_entry', 'no_entry_change', 'no_entry_change', 'exit', 'no_entry_change', 'reentry'],
  );
  const state = await entryOf(env, 'T1');
  assert.deepEqual([state?.inside, state?.checkin_id, state?.agent], [true, back.id, 'south']);
  assert.equal(await entryOf(env, 'T2'), undefined);
  assert.equal(await entryOf(env, 'T3'), undefined);
  // A redelivery of a check-in already judged changes nothing.
  assert.equal(await consumer.judge(back), 'redelivery');
  assert.equal((await conflictsOf(env)).length, 0);
});

test('a double entry gives exactly one conflict whichever admission the hub judges first, and re-judging adds none', async (t) => {
  const env = await setUp(t);
  const { consumer } = startConsumer(t, env);
  const a = checkin('north', 'T1');
  const b = checkin('south', 'T1');
  const c = checkin('north', 'T2');
  const d = checkin('south', 'T2');
  // T1: north first; T2: south first. Judged directly, twice each, as redeliveries would.
  assert.equal(await consumer.judge(a), 'first_entry');
  assert.equal(await consumer.judge(b), 'conflict');
  assert.equal(await consumer.judge(d), 'first_entry');
  assert.equal(await consumer.judge(c), 'conflict');
  assert.equal(await consumer.judge(b), 'conflict');
  assert.equal(await consumer.judge(c), 'conflict');
  const conflicts = await conflictsOf(env);
  assert.equal(conflicts.length, 2);
  const byTicket = new Map(conflicts.map((x) => [x.ticket_id, x]));
  assert.deepEqual(
    [byTicket.get('T1')?.first.checkin_id, byTicket.get('T1')?.second.checkin_id],
    [a.id, b.id],
  );
  assert.deepEqual(
    [byTicket.get('T2')?.first.checkin_id, byTicket.get('T2')?.second.checkin_id],
    [d.id, c.id],
  );
});

test('a backlog of 1,500 check-ins over two gates is judged in chunks: one entry per ticket, one conflict per double entry', async (t) => {
  const env = await setUp(t);
  // Published before the consumer starts, so they arrive as a backlog in full fetches.
  const tickets = Array.from({ length: 500 }, (_, i) => `B${i}`);
  const all: CheckinMessage[] = [];
  for (const [i, ticket] of tickets.entries()) {
    all.push(checkin('north', ticket, { seq: i + 1 }));
    // Every fifth ticket is admitted at the south gate too; the rest are refused there.
    all.push(
      i % 5 === 0
        ? checkin('south', ticket, { seq: i + 1 })
        : checkin('south', ticket, { seq: i + 1, decision: 'reject', reason: 'already_used' }),
    );
    all.push(checkin('south', null, { seq: 1_000 + i, decision: 'reject', reason: 'malformed' }));
  }
  await Promise.all(all.map((c) => publishCheckin(env.nc, c)));
  const { consumer, verdicts } = startConsumer(t, env);
  await consumer.start();
  await waitFor(() => verdicts.size === all.length, { timeoutMs: 30_000, message: 'all judged' });
  const counts = new Map<Verdict, number>();
  for (const v of verdicts.values()) counts.set(v, (counts.get(v) ?? 0) + 1);
  assert.deepEqual(Object.fromEntries(counts), { first_entry: 500, conflict: 100, no_entry_change: 900 });
  const entries = await env.jsm.streams.info(STREAMS.entries);
  assert.equal(entries.state.messages, 500);
  assert.equal((await conflictsOf(env)).length, 100);
  const ci = await env.jsm.consumers.info(STREAMS.checkins, 'gs_hub_checkins');
  assert.deepEqual([ci.num_pending, ci.num_ack_pending], [0, 0]);
});

test('kill -9 of the hub in the middle of a backlog: after a restart every ticket has one entry and every double entry one conflict', {
  timeout: 180_000,
}, async (t) => {
  const env = await setUp(t);
  const dir = await tmpDir('gs-hubkill-');
  t.after(() => rm(dir, { recursive: true, force: true }));
  const keys = makeKeys(dir);
  // 5,000 tickets admitted at the north gate; every fifth also at the south gate, right after.
  const north = new Map<string, string>();
  const south = new Map<string, string>();
  const all: CheckinMessage[] = [];
  for (let i = 0; i < 5_000; i++) {
    const ticket = `K${i}`;
    const n = checkin('north', ticket, { seq: i + 1 });
    north.set(ticket, n.id);
    all.push(n);
    if (i % 5 === 0) {
      const s = checkin('south', ticket, { seq: i + 1 });
      south.set(ticket, s.id);
      all.push(s);
    }
  }
  for (let i = 0; i < all.length; i += 500) {
    await Promise.all(all.slice(i, i + 500).map((c) => publishCheckin(env.nc, c)));
  }
  const consumerInfo = () => env.jsm.consumers.info(STREAMS.checkins, 'gs_hub_checkins');
  const hubOpts = { natsUrl: env.nats.url, dataDir: join(dir, 'hub'), signingKeyFile: keys.file };
  const first = await spawnHub(hubOpts);
  t.after(() => first.kill9());
  await waitFor(async () => (await consumerInfo()).ack_floor.stream_seq >= 500, {
    timeoutMs: 60_000,
    intervalMs: 2,
    message: 'the hub has judged some of the backlog',
  });
  await first.kill9();
  const atKill = await consumerInfo();
  assert.ok(atKill.ack_floor.stream_seq < all.length, 'killed before it had judged everything');

  // Check-ins delivered to the killed hub and not acked come back after the consumer's ack wait (30 s).
  const second = await spawnHub(hubOpts);
  t.after(() => second.stop());
  await waitFor(
    async () => {
      const ci = await consumerInfo();
      return ci.num_pending === 0 && ci.num_ack_pending === 0;
    },
    { timeoutMs: 120_000, intervalMs: 200, message: 'the restarted hub has judged every check-in' },
  );

  const entries = await env.jsm.streams.info(STREAMS.entries);
  assert.equal(entries.state.messages, 5_000, 'one entry per ticket');
  for (const ticket of ['K0', 'K1', 'K2499', 'K4999']) {
    const state = await entryOf(env, ticket);
    assert.ok(state?.inside === true && [north.get(ticket), south.get(ticket)].includes(state.checkin_id));
  }
  const conflicts = await conflictsOf(env);
  assert.equal(conflicts.length, south.size, 'one conflict per double entry');
  for (const c of conflicts) {
    assert.deepEqual(
      new Set([c.first.checkin_id, c.second.checkin_id]),
      new Set([north.get(c.ticket_id), south.get(c.ticket_id)]),
    );
  }
});

test('a check-in consumer deleted while the hub runs is made again, and check-ins after it are judged', async (t) => {
  const env = await setUp(t);
  const { consumer, verdicts } = startConsumer(t, env);
  await consumer.start();
  const first = checkin('north', 'D1');
  await publishCheckin(env.nc, first);
  await waitFor(() => verdicts.get(first.id) === 'first_entry', { message: 'first judged' });
  await env.jsm.consumers.delete(STREAMS.checkins, 'gs_hub_checkins');
  const second = checkin('north', 'D2');
  await publishCheckin(env.nc, second);
  await waitFor(() => verdicts.get(second.id) === 'first_entry', {
    timeoutMs: 20_000,
    message: 'a check-in after the deletion is judged',
  });
  assert.equal((await entryOf(env, 'D2'))?.checkin_id, second.id);
  // The new consumer started from the stream's beginning: the first check-in was judged again, harmlessly.
  assert.equal((await entryOf(env, 'D1'))?.checkin_id, first.id);
  assert.equal((await conflictsOf(env)).length, 0);
});
