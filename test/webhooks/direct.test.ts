/**
 * Direct first attempts (hub/webhooks/worker.ts `offer`): an event's first attempt is made by the
 * endpoint's worker in memory, without a GS_WEBHOOKS round trip, while its source event stays unacked.
 * These tests check what that must not cost: nothing lost when the hub dies with attempts in flight, and
 * a stuck endpoint beside a fast one holds neither the fast one nor the source.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { type HubProcess, spawnHub } from '../../bench/support/hub-process.ts';
import { admission, publishWindowed } from '../../bench/support/webhook-setup.ts';
import { derivedMessageId } from '../../hub/webhooks/dispatcher.ts';
import { STREAMS } from '../../shared/subjects.ts';
import { makeKeys } from '../harness/gatesync.ts';
import { startNats, tmpDir, waitFor } from '../harness/index.ts';
import { FAST_WEBHOOKS, startReceiver } from '../harness/receiver.ts';

async function rig(t: { after(fn: () => Promise<void>): void }, env: Record<string, string> = {}) {
  const dir = await tmpDir('gs-whdirect-');
  const nats = await startNats();
  const keys = makeKeys(dir);
  const nc = await connect({ servers: [nats.url], maxReconnectAttempts: 0 });
  const state = { hub: undefined as HubProcess | undefined };
  const closers: (() => Promise<unknown>)[] = [];
  t.after(async () => {
    await state.hub?.stop();
    for (const c of closers) await c();
    await nc.close();
    await nats.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const start = async () => {
    state.hub = await spawnHub({
      natsUrl: nats.url,
      dataDir: join(dir, 'hub'),
      signingKeyFile: keys.file,
      env: { ...FAST_WEBHOOKS, ...env },
    });
    return state.hub;
  };
  const jsm = await jetstreamManager(nc);
  /** Messages ever stored in GS_WEBHOOKS (its last sequence: the work queue removes acked ones). */
  const queuedEver = async () => (await jsm.streams.info(STREAMS.webhooks)).state.last_seq;
  const checkins = (n: number, tag: string) =>
    Array.from({ length: n }, (_, i) => admission('v1', 'gate1', i + 1, `${tag}${i}`));
  const publish = (list: ReturnType<typeof checkins>) => publishWindowed(jetstream(nc), list, 64);
  return { state, start, closers, queuedEver, checkins, publish };
}

const expectedIds = (list: { id: string }[]) => list.map((c) => derivedMessageId('checkin.created', c.id));

test('hub killed with -9 while direct first attempts are in flight: after restart every check-in is delivered', async (t) => {
  const r = await rig(t);
  // Slow answers, so that direct attempts are in flight (and their check-ins unacked) when the hub dies.
  const rx = await startReceiver(() => ({ status: 200, delayMs: 150 }));
  r.closers.push(() => rx.close());
  let hub = await r.start();
  const ep = await hub.api<{ id: string; secret: string }>('/v1/webhooks/endpoints', {
    url: `${rx.url}/hook`,
    event_types: ['checkin.created'],
    max_concurrency: 4,
  });
  assert.equal(ep.status, 201, JSON.stringify(ep.body));
  const queuedBefore = await r.queuedEver();
  const list = r.checkins(60, 'K');
  const expected = new Set(expectedIds(list));
  await r.publish(list);
  await waitFor(() => rx.received.length >= 8, { message: 'some delivered before the crash' });
  // The first attempts went straight to the receiver: nothing was queued in GS_WEBHOOKS for them.
  assert.equal(await r.queuedEver(), queuedBefore, 'no delivery queued: the attempts were direct');
  await hub.kill9();
  const before = new Set(rx.received.map((x) => x.id)).size;
  assert.ok(before < expected.size, 'the crash came before the end');

  hub = await r.start();
  // The check-ins that were in flight come back after the source's ack wait (30 s).
  await waitFor(() => [...expected].every((id) => rx.received.some((x) => x.id === id)), {
    timeoutMs: 90_000,
    message: 'every check-in delivered after the restart',
  });
  const ids = new Set(rx.received.map((x) => x.id));
  assert.deepEqual(
    [...expected].filter((id) => !ids.has(id)),
    [],
    'nothing lost',
  );
  assert.equal([...ids].filter((id) => !expected.has(id)).length, 0, 'nothing unknown');
  assert.equal(rx.verified(ep.body.secret).length, rx.received.length, 'every request verifies');
  // The message's copy (a plain publish before the check-in's ack) is stored and served with its attempts.
  const first = list[0];
  assert.ok(first);
  const id = derivedMessageId('checkin.created', first.id);
  const got = await waitFor(async () => {
    const res = await hub.api<{ type: string; data: { checkin_id: string }; attempts: unknown[] }>(
      `/v1/webhooks/messages/${id}`,
    );
    return res.status === 200 && res.body.attempts.length >= 1 ? res.body : undefined;
  });
  assert.equal(got.type, 'checkin.created');
  assert.equal(got.data.checkin_id, first.id);
});

test('a hanging endpoint beside a fast one: the fast one gets every check-in, the hanging one its queue', async (t) => {
  const r = await rig(t, { GATESYNC_WEBHOOK_HEADERS_TIMEOUT: '20s', GATESYNC_WEBHOOK_BODY_TIMEOUT: '20s' });
  const dead = await startReceiver(() => ({ hang: true }));
  const ok = await startReceiver();
  r.closers.push(
    () => dead.close(),
    () => ok.close(),
  );
  const hub = await r.start();
  const make = async (url: string, max_concurrency: number) => {
    const res = await hub.api<{ id: string }>('/v1/webhooks/endpoints', {
      url,
      event_types: ['checkin.created'],
      max_concurrency,
    });
    assert.equal(res.status, 201, JSON.stringify(res.body));
    return res.body.id;
  };
  const deadId = await make(`${dead.url}/dead`, 2);
  await make(`${ok.url}/ok`, 4);
  // More check-ins than the source keeps in progress (256): held for the hanging endpoint, they would
  // stop the source taking more, and the fast endpoint would wait with it.
  const list = r.checkins(600, 'H');
  const expected = new Set(expectedIds(list));
  const started = Date.now();
  await r.publish(list);
  await waitFor(() => new Set(ok.received.map((x) => x.id)).size >= expected.size, {
    timeoutMs: 20_000,
    message: 'the fast endpoint got all 600 while the other hangs',
  });
  const took = Date.now() - started;
  assert.ok(dead.received.length <= 2, `the hanging endpoint has ${dead.received.length} requests open`);
  assert.equal([...new Set(ok.received.map((x) => x.id))].filter((id) => !expected.has(id)).length, 0);
  // The hanging endpoint's events wait in its own queue, the source is not holding them.
  const health = await hub.api<{ endpoints: { id: string; queued: number | null }[] }>('/v1/webhooks/health');
  const queued = health.body.endpoints.find((e) => e.id === deadId)?.queued ?? 0;
  assert.ok(queued >= expected.size - 2, `${queued} deliveries queued to the hanging endpoint (${took} ms)`);
});
