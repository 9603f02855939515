/**
 * The gate agent's outbox publisher against a real nats-server, a real store file and the hub's real
 * GS_CHECKINS stream: the paths a whole-venue test does not reach on its own (a gap in the hand-over,
 * an operator's requeue in the middle of a drain).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { OutboxPublisher } from '../gate-agent/outbox-publisher.ts';
import { type CheckinRecord, TicketStore } from '../gate-agent/ticket-store.ts';
import { ensureStreams } from '../hub/streams.ts';
import { connectNats, LinkState } from '../shared/nats.ts';
import { STREAMS } from '../shared/subjects.ts';
import { testLogger } from './harness/gatesync.ts';
import { startNats, tmpDir, waitFor } from './harness/index.ts';

async function setUp(t: TestContext) {
  const nats = await startNats();
  t.after(() => nats.cleanup());
  const link = new LinkState();
  const nc = await connectNats({ servers: [nats.url], name: 'outbox-test' }, testLogger('outbox'), link);
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm, { checkinRetentionDays: 1 });
  const store = new TicketStore(join(await tmpDir('gs-outbox-'), 'agent.db'));
  t.after(() => store.close());
  return { nc, jsm, link, store };
}

function record(store: TicketStore, i: number): CheckinRecord {
  const c = {
    id: `C${String(i).padStart(6, '0')}`,
    agent: 'north',
    venue: 'v1',
    gate: 'north',
    ticket_id: `T${i}`,
    direction: 'in' as const,
    decision: 'reject' as const,
    reason: 'unknown' as const,
    scanner: 's1',
    method: 'qr' as const,
    unsynced_ticket: false,
    scanned_at: 1_700_000_000_000 + i,
  };
  return { ...c, seq: store.recordCheckin(c) };
}

async function storedCount(jsm: Awaited<ReturnType<typeof jetstreamManager>>): Promise<number> {
  return (await jsm.streams.info(STREAMS.checkins)).state.messages;
}

test('a committed check-in missing from the hand-over (its group failed, a later one made it durable) is still sent', async (t) => {
  const { nc, jsm, link, store } = await setUp(t);
  let durable = 0;
  const outbox = new OutboxPublisher({
    nc,
    store,
    link,
    logger: testLogger('outbox'),
    durableSeq: () => durable,
  });
  outbox.start();
  t.after(() => outbox.stop());
  // One check-in read from the store: after it the hand-over is complete.
  const first = record(store, 1);
  durable = first.seq;
  outbox.offer([first]);
  await waitFor(() => store.sentThrough() === first.seq, { message: 'first check-in sent' });
  // Group A (seq 2) is committed but never handed over: its fsync failed. Group B (seq 3) is durable and
  // handed over; its fsync made seq 2 durable too.
  record(store, 2);
  const b = record(store, 3);
  durable = b.seq;
  outbox.offer([b]);
  await waitFor(() => store.sentThrough() === b.seq, { message: 'watermark reaches group B' });
  assert.equal(await storedCount(jsm), 3, 'seq 2 was sent, not skipped');
  assert.equal(store.outboxStats().depth, 0);
});

test("an operator's requeue in the middle of a drain is not undone by the drain's acknowledgements", async (t) => {
  const { nc, jsm, link, store } = await setUp(t);
  const n = 3_000;
  store.transaction(() => {
    for (let i = 1; i <= n; i++) record(store, i);
  });
  const outbox = new OutboxPublisher({
    nc,
    store,
    link,
    logger: testLogger('outbox'),
    durableSeq: () => n,
    window: 16,
  });
  outbox.start();
  t.after(() => outbox.stop());
  outbox.notify();
  await waitFor(() => outbox.sent >= 300, { intervalMs: 1, message: 'the drain is under way' });
  const requeued = store.requeueAll();
  assert.ok(requeued > 0 && requeued < n, `requeued ${requeued} while draining`);
  await waitFor(() => store.outboxStats().depth === 0 && store.sentThrough() === n, {
    timeoutMs: 30_000,
    message: 'outbox drained again',
  });
  assert.equal(await storedCount(jsm), n, 'the stream holds each check-in once');
  assert.ok(
    outbox.duplicates >= requeued,
    `every check-in sent before the requeue was sent again (${outbox.duplicates} duplicates, ${requeued} requeued)`,
  );
});
