import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { type ScanAnswer, startTestAgent } from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';
import { hubCheckins, issueTickets, outboxEmpty, startVenue } from './harness/venue.ts';

function assertExactlyOnce(answers: ScanAnswer[], atHub: { id: string }[]): void {
  const told = new Set(answers.map((a) => a.checkin_id));
  assert.equal(told.size, answers.length, 'every answer has its own check-in id');
  const counts = new Map<string, number>();
  for (const c of atHub) counts.set(c.id, (counts.get(c.id) ?? 0) + 1);
  const doubled = [...counts.values()].filter((n) => n > 1).length;
  const missing = [...told].filter((id) => !counts.has(id)).length;
  const extra = [...counts.keys()].filter((id) => !told.has(id)).length;
  assert.deepEqual({ missing, doubled, extra }, { missing: 0, doubled: 0, extra: 0 });
}

test('link cut for a burst of 1,000 scans over two gates: after restore the hub holds exactly those check-ins, each once', async (t) => {
  const v = await startVenue(t, { gates: ['north', 'south'] });
  const qrs = [...(await issueTickets(v, 600)).values()];
  for (const g of v.gates) g.proxy.cut();
  for (const g of v.gates) await waitFor(() => !g.agent.link.connected, { message: 'link down' });

  const answers: ScanAnswer[] = [];
  for (let i = 0; i < 1000; i++) {
    const gate = v.gates[i % 2];
    // Some tickets twice (already_used), all recorded as check-ins.
    answers.push(await (gate?.agent.scan(qrs[i % qrs.length] as string) as Promise<ScanAnswer>));
  }
  assert.equal(answers.filter((a) => a.decision === 'admit').length >= 500, true);
  assert.equal(v.gates[0]?.agent.store.outboxStats().depth, 500, 'buffered while cut');

  for (const g of v.gates) g.proxy.restore();
  for (const g of v.gates)
    await waitFor(() => outboxEmpty(g.agent), { timeoutMs: 30_000, message: 'outbox drained' });
  assertExactlyOnce(answers, await hubCheckins(v.hub));
});

test('re-sending the whole outbox 20 times (lost acks) still counts each check-in once at the hub', async (t) => {
  const v = await startVenue(t, { gates: ['north'] });
  const gate = v.gates[0];
  assert.ok(gate);
  const qrs = [...(await issueTickets(v, 100)).values()];
  const answers: ScanAnswer[] = [];
  for (const qr of qrs) answers.push(await gate.agent.scan(qr));
  await waitFor(() => outboxEmpty(gate.agent), { message: 'first send' });
  for (let round = 0; round < 20; round++) {
    assert.equal(gate.agent.store.requeueAll(), 100);
    gate.agent.outbox()?.notify();
    await waitFor(() => outboxEmpty(gate.agent), { message: `re-send ${round}` });
  }
  assertExactlyOnce(answers, await hubCheckins(v.hub));
  assert.ok((gate.agent.outbox()?.duplicates ?? 0) >= 2000, 'every re-send was recognised as already stored');
  // The hub judged each admission once: re-sends never look like a second entry.
  const conflicts = await v.hub.api<{ conflicts: unknown[] }>('/v1/venues/v1/conflicts');
  assert.equal(conflicts.body.conflicts.length, 0);
});

test('the same ticket admitted at two gates while both are cut off gives exactly one conflict, whichever arrives first', async (t) => {
  const v = await startVenue(t, { gates: ['north', 'south'] });
  const [north, south] = v.gates;
  assert.ok(north && south);
  const qrs = [...(await issueTickets(v, 5)).values()];
  north.proxy.cut();
  south.proxy.cut();
  await waitFor(() => !north.agent.link.connected && !south.agent.link.connected);
  const a = await north.agent.scan(qrs[0] as string);
  const b = await south.agent.scan(qrs[0] as string);
  assert.deepEqual([a.decision, b.decision], ['admit', 'admit'], 'neither gate could know');
  // South reconnects first this time.
  south.proxy.restore();
  await waitFor(() => outboxEmpty(south.agent), { timeoutMs: 20_000 });
  north.proxy.restore();
  await waitFor(() => outboxEmpty(north.agent), { timeoutMs: 20_000 });
  const conflicts = await waitFor(
    async () => {
      const r = await v.hub.api<{
        conflicts: { ticket_id: string; first: { checkin_id: string }; second: { checkin_id: string } }[];
      }>('/v1/venues/v1/conflicts');
      return r.body.conflicts.length > 0 ? r.body.conflicts : undefined;
    },
    { message: 'conflict recorded' },
  );
  assert.equal(conflicts.length, 1);
  const c = conflicts[0];
  assert.deepEqual(
    new Set([c?.first.checkin_id, c?.second.checkin_id]),
    new Set([a.checkin_id, b.checkin_id]),
  );
  // Redeliveries and re-sends do not add a second one.
  north.agent.store.requeueAll();
  south.agent.store.requeueAll();
  north.agent.outbox()?.notify();
  south.agent.outbox()?.notify();
  await waitFor(async () => (await outboxEmpty(north.agent)) && outboxEmpty(south.agent));
  await waitFor(() => v.hub.checkins.processed >= 2);
  const again = await v.hub.api<{ conflicts: unknown[] }>('/v1/venues/v1/conflicts');
  assert.equal(again.body.conflicts.length, 1);
});

test('while both are online, gate B refuses a ticket admitted at gate A within one second', async (t) => {
  const v = await startVenue(t, { gates: ['north', 'south'] });
  const [north, south] = v.gates;
  assert.ok(north && south);
  const qrs = [...(await issueTickets(v, 20)).values()];
  for (const qr of qrs.slice(0, 10)) {
    assert.equal((await north.agent.scan(qr)).decision, 'admit');
    // Poll the preview (it redeems nothing) until B sees the admission; the deadline is the requirement.
    await waitFor(
      async () =>
        (await south.agent.api<{ reason?: string }>(`/v1/tickets/${encodeURIComponent(qr)}`)).body.reason ===
        'already_used',
      {
        timeoutMs: 1_000,
        intervalMs: 10,
        message: 'gate B refuses within a second',
      },
    );
    const b: ScanAnswer = await south.agent.scan(qr);
    assert.deepEqual([b.decision, b.reason], ['reject', 'already_used']);
  }
});

test('the hub lists each agent with its last heartbeat, online state and outbox depth', async (t) => {
  const v = await startVenue(t, { gates: ['north', 'south'] });
  const agents = await waitFor(async () => {
    const r = await v.hub.api<{
      agents: { agent: string; online: boolean; outbox_depth: number; sync_pending: number | null }[];
    }>('/v1/venues/v1/agents');
    // An agent's first heartbeat can beat the creation of its ticket consumer (sync_pending null then).
    return r.body.agents.length === 2 && r.body.agents.every((a) => a.sync_pending !== null)
      ? r.body.agents
      : undefined;
  });
  assert.deepEqual(
    agents.map((a) => [a.agent, a.online, a.outbox_depth]),
    [
      ['north', true, 0],
      ['south', true, 0],
    ],
  );
  assert.equal(agents[0]?.sync_pending, 0);
});

test("a gate whose store was replaced learns its own earlier admissions back from the venue's check-ins", async (t) => {
  const v = await startVenue(t, { gates: ['north'] });
  const gate = v.gates[0];
  assert.ok(gate);
  const qrs = [...(await issueTickets(v, 20)).values()];
  for (const qr of qrs.slice(0, 10)) assert.equal((await gate.agent.scan(qr)).decision, 'admit');
  await waitFor(() => outboxEmpty(gate.agent), { message: 'admissions sent' });
  await gate.agent.stop();

  // The kiosk comes back with an empty database (a replaced disk): same agent id, new store file.
  const replaced = await startTestAgent({
    natsUrl: gate.proxy.url,
    venue: 'v1',
    agentId: 'north',
    gate: 'north',
    dbPath: join(v.dir, 'north-replaced.db'),
    trusted: v.keys.trusted,
  });
  t.after(() => replaced.stop());
  await replaced.networkReady;
  await waitFor(() => replaced.store.ticketCount() >= 20, {
    timeoutMs: 30_000,
    message: 'tickets re-synced',
  });
  // Its own check-ins come back on its own subject; the new store holds none of them, so they are applied.
  await waitFor(
    () => qrs.slice(0, 10).every((_, i) => replaced.store.getPresence(`T${i}`)?.inside === true),
    {
      timeoutMs: 10_000,
      message: 'own admissions replayed into the new store',
    },
  );
  const again = await replaced.scan(qrs[0] as string);
  assert.deepEqual([again.decision, again.reason], ['reject', 'already_used']);
  assert.equal(
    (await replaced.scan(qrs[10] as string)).decision,
    'admit',
    'a ticket never admitted still is',
  );
});
