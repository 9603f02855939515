import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { GatesyncError } from '../shared/errors.ts';
import { PubAcks, PublishRefused } from '../shared/pub-acks.ts';
import { startNats, startTcpProxy } from './harness/index.ts';

const unanswered = (err: unknown, pattern: RegExp) =>
  err instanceof GatesyncError && err.code === 'nats_unavailable' && pattern.test(err.message);

async function setUp(t: import('node:test').TestContext, viaProxy = false) {
  const nats = await startNats();
  t.after(() => nats.cleanup());
  const proxy = viaProxy ? await startTcpProxy({ host: '127.0.0.1', port: nats.port }) : undefined;
  if (proxy !== undefined) t.after(() => proxy.close());
  const nc = await connect({
    servers: proxy?.url ?? nats.url,
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
  });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: 'PA_TEST', subjects: ['pa.>'], duplicate_window: 60_000_000_000 });
  return { nc, jsm, proxy };
}

test('acked publishes resolve with the stream position once stored; a repeated Nats-Msg-Id is a duplicate', async (t) => {
  const { nc, jsm } = await setUp(t);
  const acks = new PubAcks(nc, 2_000);
  t.after(() => acks.close());
  const all = await Promise.all(
    Array.from({ length: 200 }, (_, i) => acks.publishStored(`pa.${i % 7}`, `m${i}`, { msgID: `id${i}` })),
  );
  assert.deepEqual(
    all.map((a) => a.seq).sort((a, b) => a - b),
    Array.from({ length: 200 }, (_, i) => i + 1),
  );
  assert.ok(all.every((a) => a.stream === 'PA_TEST' && !a.duplicate));
  const again = await acks.publishStored('pa.0', 'm0', { msgID: 'id0' });
  assert.equal(again.duplicate, true);
  assert.equal((await jsm.streams.info('PA_TEST')).state.messages, 200);
  assert.equal(acks.outstanding, 0);
});

test('a refused publish rejects with JetStream error code; a subject no stream stores rejects as no responders', async (t) => {
  const { nc } = await setUp(t);
  const acks = new PubAcks(nc, 2_000);
  t.after(() => acks.close());
  await acks.publishStored('pa.x', 'first', { expectLastSubjectSequence: 0 });
  await assert.rejects(
    acks.publishStored('pa.x', 'second', { expectLastSubjectSequence: 0 }),
    (err: unknown) => err instanceof PublishRefused && err.errCode === 10071,
  );
  await assert.rejects(acks.publishStored('nowhere.x', 'lost'), (err: unknown) => unanswered(err, /503/));
  assert.equal(acks.outstanding, 0);
});

test('an unanswered publish times out; once the link is back, publishes are acknowledged again', async (t) => {
  const { nc, proxy } = await setUp(t, true);
  assert.ok(proxy !== undefined);
  const acks = new PubAcks(nc, 300);
  t.after(() => acks.close());
  await acks.publishStored('pa.before', 'x');
  proxy.cut();
  await assert.rejects(acks.publishStored('pa.during', 'y'), (err: unknown) =>
    unanswered(err, /within 300 ms/),
  );
  assert.equal(acks.outstanding, 0);
  proxy.restore();
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const ack = await acks.publishStored('pa.after', 'z', { msgID: 'after' });
      assert.equal(ack.stream, 'PA_TEST');
      break;
    } catch (err: unknown) {
      if (!unanswered(err, /./) || Date.now() > deadline) throw err;
    }
  }
});

test('close rejects what is outstanding and refuses later publishes', async (t) => {
  const { nc } = await setUp(t);
  const acks = new PubAcks(nc, 5_000);
  const pending = acks.publishStored('pa.closing', 'x');
  acks.close();
  await assert.rejects(pending, (err: unknown) => unanswered(err, /closed/));
  await assert.rejects(acks.publishStored('pa.closed', 'y'), (err: unknown) => unanswered(err, /closed/));
});
