import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { type HubProcess, spawnHub } from '../../bench/support/hub-process.ts';
import { makeKeys } from '../harness/gatesync.ts';
import { startNats, tmpDir, waitFor } from '../harness/index.ts';
import { FAST_WEBHOOKS, startReceiver } from '../harness/receiver.ts';

test('hub killed with -9 mid-delivery: after restart every message is delivered, repeats keep their webhook-id', async (t) => {
  const dir = await tmpDir('gs-whcrash-');
  const nats = await startNats();
  const keys = makeKeys(dir);
  // Slow answers, so that deliveries are in flight when the hub dies.
  const rx = await startReceiver(() => ({ status: 200, delayMs: 150 }));
  let hub: HubProcess | undefined;
  t.after(async () => {
    await hub?.stop();
    await rx.close();
    await nats.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  const start = () =>
    spawnHub({
      natsUrl: nats.url,
      dataDir: join(dir, 'hub'),
      signingKeyFile: keys.file,
      env: FAST_WEBHOOKS,
    });
  hub = await start();
  const ep = await hub.api<{ id: string; secret: string }>('/v1/webhooks/endpoints', {
    url: `${rx.url}/hook`,
    max_concurrency: 4,
  });
  assert.equal(ep.status, 201, JSON.stringify(ep.body));
  const sent = new Set<string>();
  for (let i = 0; i < 60; i++) {
    const r: { status: number; body: { message_id: string } } = await hub.api<{ message_id: string }>(
      `/v1/webhooks/endpoints/${ep.body.id}/test`,
      {},
    );
    assert.equal(r.status, 202);
    sent.add(r.body.message_id);
  }
  await waitFor(() => rx.received.length >= 8, { message: 'some delivered before the crash' });
  await hub.kill9();
  const before = new Set(rx.received.map((r) => r.id)).size;
  assert.ok(before < sent.size, 'the crash came before the end');

  hub = await start();
  await waitFor(() => new Set(rx.received.map((r) => r.id)).size >= sent.size, {
    timeoutMs: 60_000,
    message: 'every message delivered after the restart',
  });
  const ids = new Set(rx.received.map((r) => r.id));
  assert.deepEqual(
    [...sent].filter((id) => !ids.has(id)),
    [],
    'nothing lost',
  );
  assert.equal([...ids].filter((id) => !sent.has(id)).length, 0, 'nothing unknown');
  assert.equal(rx.verified(ep.body.secret).length, rx.received.length, 'every request verifies');
});
