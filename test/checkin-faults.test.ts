import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  agentEnv,
  httpJson,
  SCANNER_TOKEN,
  type ScanAnswer,
  spawnAgent,
  startHubEnv,
  startTestAgent,
  ticketBody,
} from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';
import { hubCheckins } from './harness/venue.ts';

function assertExactlyOnce(told: string[], atHub: { id: string }[]): void {
  const counts = new Map<string, number>();
  for (const c of atHub) counts.set(c.id, (counts.get(c.id) ?? 0) + 1);
  const missing = told.filter((id) => !counts.has(id)).length;
  const doubled = [...counts.values()].filter((n) => n > 1).length;
  assert.deepEqual({ missing, doubled }, { missing: 0, doubled: 0 });
}

test('kill -9 of nats-server (file storage) in the middle of a burst, then restart: nothing lost, nothing doubled', async (t) => {
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-natskill-' });
  const agent = await startTestAgent({
    natsUrl: nats.url,
    venue: 'v1',
    agentId: 'north',
    dbPath: join(dir, 'north.db'),
    trusted: keys.trusted,
  });
  defer(() => agent.stop());
  const batch = await hub.api<{ results: { ticket: { qr: string } }[] }>('/v1/venues/v1/tickets:batch', {
    body: { tickets: Array.from({ length: 800 }, (_, i) => ticketBody({ id: `N${i}` })) },
  });
  await waitFor(() => agent.store.ticketCount() === 800, { timeoutMs: 30_000 });
  const qrs = batch.body.results.map((r) => r.ticket.qr);

  const told: string[] = [];
  for (let i = 0; i < 800; i++) {
    if (i === 300) await nats.kill9();
    if (i === 550) await nats.restart();
    const a: ScanAnswer = await agent.scan(qrs[i] as string);
    told.push(a.checkin_id);
  }
  await waitFor(() => agent.store.outboxStats().depth === 0, {
    timeoutMs: 60_000,
    message: 'outbox drained after the server returned',
  });
  await waitFor(() => hub.checkins.processed >= 800, {
    timeoutMs: 60_000,
    message: 'hub judged every check-in',
  });
  assertExactlyOnce(told, await hubCheckins(hub));
});

test('kill -9 of an agent in the middle of a burst: every scan that got an answer reaches the hub after restart', async (t) => {
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-agentkill-' });
  const batch = await hub.api<{ results: { ticket: { qr: string } }[] }>('/v1/venues/v1/tickets:batch', {
    body: { tickets: Array.from({ length: 2000 }, (_, i) => ticketBody({ id: `K${i}` })) },
  });
  const qrs = batch.body.results.map((r) => r.ticket.qr);
  const env = agentEnv({
    natsUrl: nats.url,
    venue: 'v1',
    agentId: 'north',
    dbPath: join(dir, 'north.db'),
    trusted: keys.trusted,
  });
  let agent = await spawnAgent(env);
  defer(() => agent.kill9());
  const held = async () =>
    (await httpJson<{ tickets_held: number }>(`${agent.url}/v1/status`, { token: SCANNER_TOKEN })).body
      .tickets_held;
  await waitFor(async () => (await held()) === 2000, { timeoutMs: 30_000 });

  // Eight scanners hammer the gate; the agent is killed while requests are in flight.
  const told: string[] = [];
  let next = 0;
  let killed = false;
  const scanner = async () => {
    while (next < qrs.length) {
      const qr = qrs[next++] as string;
      try {
        const r = await httpJson<ScanAnswer>(`${agent.url}/v1/scans`, {
          token: SCANNER_TOKEN,
          body: { code: qr },
        });
        if (r.status === 200) told.push(r.body.checkin_id);
      } catch {
        // The agent died under this request: no answer, so no promise was made to the scanner.
        return;
      }
    }
  };
  const scanners = Array.from({ length: 8 }, scanner);
  await waitFor(() => told.length >= 700, { timeoutMs: 30_000 });
  killed = (await agent.kill9()) === 'SIGKILL';
  await Promise.all(scanners);
  assert.ok(killed);
  assert.ok(told.length >= 700 && told.length < 2000, `answered ${told.length}`);

  agent = await spawnAgent(env);
  await waitFor(
    async () =>
      (await httpJson<{ checkins_unsent: number }>(`${agent.url}/v1/status`, { token: SCANNER_TOKEN })).body
        .checkins_unsent === 0,
    {
      timeoutMs: 60_000,
      message: 'restarted agent drained its outbox',
    },
  );
  assertExactlyOnce(told, await hubCheckins(hub));
});
