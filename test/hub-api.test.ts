import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { STREAMS } from '../shared/subjects.ts';
import { httpJson, startHubEnv, type TestHub, ticketBody } from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';

interface Ticket {
  id: string;
  qr: string;
  status: string;
  rev: number;
}

async function setup(
  t: import('node:test').TestContext,
): Promise<{ hub: TestHub; count: () => Promise<number>; trusted: string }> {
  const { nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-hub-' });
  const nc = await connect({ servers: nats.url });
  defer(() => nc.close());
  const jsm = await jetstreamManager(nc);
  return {
    hub,
    count: async () => (await jsm.streams.info(STREAMS.tickets)).state.messages,
    trusted: keys.trusted,
  };
}

test('the same Idempotency-Key and body return the same ticket, never a second one; another body is 422', async (t) => {
  const { hub, count } = await setup(t);
  const body = ticketBody({ holder: 'Grace' });
  const headers = { 'idempotency-key': 'order-1234' };
  const first = await hub.api<Ticket>('/v1/venues/v1/tickets', { body, headers });
  assert.equal(first.status, 201);
  const results = await Promise.all(
    Array.from({ length: 5 }, () => hub.api<Ticket>('/v1/venues/v1/tickets', { body, headers })),
  );
  for (const r of results) {
    assert.equal(r.status, 201);
    assert.deepEqual(r.body, first.body);
    assert.equal(r.headers.get('idempotent-replayed'), 'true');
  }
  assert.equal(await count(), 1, 'one ticket event, however often the request came');
  // The same body with its fields in another order is the same request.
  const reordered = Object.fromEntries(Object.entries(body).reverse());
  const again = await hub.api<Ticket>('/v1/venues/v1/tickets', { body: reordered, headers });
  assert.equal(again.status, 201);
  assert.equal(again.body.id, first.body.id);
  const other = await hub.api('/v1/venues/v1/tickets', {
    body: { ...body, holder: 'Someone else' },
    headers,
  });
  assert.equal(other.status, 422);
  assert.equal((other.body as { error: { code: string } }).error.code, 'idempotency_key_reused');
  // Without the key, the same body is a new ticket.
  await hub.api('/v1/venues/v1/tickets', { body });
  assert.equal(await count(), 2);
});

test('concurrent idempotent twins: exactly one ticket, the other waits its turn with 409 or gets the replay', async (t) => {
  const { hub, count } = await setup(t);
  const body = ticketBody();
  const answers = await Promise.all(
    Array.from({ length: 8 }, () =>
      hub.api<Ticket>('/v1/venues/v1/tickets', { body, headers: { 'idempotency-key': 'twin' } }),
    ),
  );
  const ids = new Set(answers.filter((a) => a.status === 201).map((a) => a.body.id));
  assert.equal(ids.size, 1);
  for (const a of answers) assert.ok(a.status === 201 || a.status === 409, `status ${a.status}`);
  assert.equal(await count(), 1);
});

test('two concurrent revocations of one ticket: one wins, the other gets 409 and nothing is overwritten', async (t) => {
  const { hub } = await setup(t);
  await hub.api('/v1/venues/v1/tickets', { body: ticketBody({ id: 'RACE' }) });
  const [a, b] = await Promise.all([
    hub.api('/v1/venues/v1/tickets/RACE/revoke', { body: { reason: 'first' } }),
    hub.api('/v1/venues/v1/tickets/RACE/revoke', { body: { reason: 'second' } }),
  ]);
  const statuses = [a.status, b.status].sort();
  assert.deepEqual(statuses, [200, 409]);
  const loser = (a.status === 409 ? a : b).body as { error: { code: string } };
  assert.ok(['revision_conflict', 'already_revoked'].includes(loser.error.code));
  const winner = (a.status === 200 ? a : b).body as { revoked_reason: string };
  const now = await hub.api<{ revoked_reason: string; rev: number }>('/v1/venues/v1/tickets/RACE');
  assert.equal(now.body.revoked_reason, winner.revoked_reason);
  assert.equal(now.body.rev, 2);
});

test('a batch issues every valid ticket and reports each failure by index', async (t) => {
  const { hub, count } = await setup(t);
  await hub.api('/v1/venues/v1/tickets', { body: ticketBody({ id: 'TAKEN' }) });
  const tickets = [
    ticketBody({ id: 'N1' }),
    ticketBody({ id: 'TAKEN' }),
    ticketBody({ id: 'N2' }),
    ticketBody(),
  ];
  const res = await hub.api<{
    issued: number;
    failed: number;
    results: { index: number; ticket?: Ticket; error?: { code: string } }[];
  }>('/v1/venues/v1/tickets:batch', { body: { tickets } });
  assert.equal(res.status, 200);
  assert.equal(res.body.issued, 3);
  assert.equal(res.body.failed, 1);
  assert.equal(res.body.results[1]?.error?.code, 'ticket_exists');
  assert.equal(res.body.results[2]?.ticket?.id, 'N2');
  assert.equal(await count(), 4);
});

test('keys.json lists the signing key; scoped API keys act only on their venues; deleted keys stop working', async (t) => {
  const { hub, trusted } = await setup(t);
  const keys = await httpJson<{ keys: { kid: string; public_key: string; status: string }[] }>(
    `${hub.url}/.well-known/gatesync/keys.json`,
  );
  assert.equal(keys.status, 200);
  assert.equal(`${keys.body.keys[0]?.kid}:${keys.body.keys[0]?.public_key}`, trusted);

  const created = await hub.api<{ id: string; key: string; venues: string[] }>('/v1/api-keys', {
    body: { name: 'box office', venues: ['v1'] },
  });
  assert.equal(created.status, 201);
  assert.match(created.body.key, /^gsk_/);
  const listed = await hub.api<{ keys: Record<string, unknown>[] }>('/v1/api-keys');
  assert.equal(
    JSON.stringify(listed.body).includes(created.body.key),
    false,
    'the key is shown once, never listed',
  );
  assert.equal(JSON.stringify(listed.body).includes('hash'), false);

  const asKey = (path: string, body?: unknown) => httpJson(hub.url + path, { token: created.body.key, body });
  assert.equal((await asKey('/v1/venues/v1/tickets', ticketBody())).status, 201);
  assert.equal((await asKey('/v1/venues/v2/tickets', ticketBody())).status, 403);
  assert.equal((await asKey('/v1/api-keys', { name: 'escalate' })).status, 403);
  assert.equal((await hub.api(`/v1/api-keys/${created.body.id}`, { method: 'DELETE' })).status, 204);
  assert.equal((await asKey('/v1/venues/v1/tickets', ticketBody())).status, 401);
});

test('while NATS is down, an issue answers 503 nats_unavailable, and succeeds again once NATS is back', async (t) => {
  const { nats, hub } = await startHubEnv(t, { prefix: 'gs-hub-down-' });
  await nats.kill9();
  const down = await hub.api<{ error: { code: string } }>('/v1/venues/v1/tickets', {
    body: ticketBody({ id: 'DOWN' }),
  });
  assert.equal(down.status, 503);
  assert.equal(down.body.error.code, 'nats_unavailable');
  assert.equal((await httpJson(`${hub.url}/readyz`)).status, 503, 'not ready while the bus is gone');
  await nats.restart();
  await waitFor(async () => (await httpJson(`${hub.url}/readyz`)).status === 200, { timeoutMs: 20_000 });
  // The client may have buffered the failed publish and sent it on reconnect, so a retry of the same id
  // is either the first issue (201) or finds it (409); either way exactly one ticket exists.
  const up = await hub.api<{ id: string }>('/v1/venues/v1/tickets', { body: ticketBody({ id: 'DOWN' }) });
  assert.ok(up.status === 201 || up.status === 409, `retry answered ${up.status}`);
  assert.equal((await hub.api<{ rev: number }>('/v1/venues/v1/tickets/DOWN')).body.rev, 1);
});
