import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { CHECKIN_SCHEMA_VERSION, type CheckinMessage } from '../shared/checkins.ts';
import { encode } from '../shared/codec.ts';
import { newId } from '../shared/ids.ts';
import { subjects } from '../shared/subjects.ts';
import { ADMIN_KEY, ticketBody } from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';
import { type Call, OpenApiChecker, type OpenApiDoc } from './harness/openapi.ts';
import { startReceiver } from './harness/receiver.ts';
import { issueTickets, startVenue } from './harness/venue.ts';

const HUB_ENV = {
  GATESYNC_WEBHOOK_ALLOW_CIDRS: '127.0.0.0/8',
  GATESYNC_WEBHOOK_RETRY_SCHEDULE: '200ms,200ms',
  GATESYNC_WEBHOOK_CONNECT_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_HEADERS_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_BODY_TIMEOUT: '1s',
};

test("every route in the hub's OpenAPI document answers as the document says", {
  timeout: 180_000,
}, async (t) => {
  const v = await startVenue(t, { gates: ['north'], hubEnv: HUB_ENV });
  const hub = v.hub;
  const gate = v.gates[0];
  assert.ok(gate);
  let failing = true;
  const receiver = await startReceiver(() => (failing ? { status: 500, body: 'down' } : { status: 200 }));
  v.defer(() => receiver.close());

  const docRes = await fetch(`${hub.url}/openapi.json`);
  assert.equal(docRes.status, 200, 'the document needs no key');
  const doc = (await docRes.json()) as OpenApiDoc;
  assert.equal(doc.openapi, '3.1.0');
  const undocumented = Object.entries(doc.paths).flatMap(([p, ops]) =>
    Object.entries(ops)
      .filter(([, op]) => op['x-gatesync-undocumented'] === true)
      .map(([m]) => `${m} ${p}`),
  );
  assert.deepEqual(undocumented, [], 'every registered route is described');
  // Request schemas come from the routes themselves.
  const issue = doc.paths['/v1/venues/{venue}/tickets']?.post;
  assert.ok(issue?.requestBody, 'the issue route documents its body');
  assert.ok(doc.paths['/v1/venues/{venue}/tickets:batch']?.post, 'the batch path keeps its colon');

  const checker = new OpenApiChecker(doc, hub.url, ADMIN_KEY);
  const call = async <T = unknown>(c: Call): Promise<T> => (await checker.call<T>(c)).body;

  // Public routes.
  await call({ method: 'GET', path: '/openapi.json', token: null, expect: 200 });
  await call({ method: 'GET', path: '/healthz', token: null, expect: 200 });
  await call({ method: 'GET', path: '/readyz', token: null, expect: 200 });
  await call({ method: 'GET', path: '/.well-known/gatesync/keys.json', token: null, expect: 200 });
  await call({ method: 'GET', path: '/dashboard', token: null, expect: 200 });
  await call({ method: 'GET', path: '/metrics', expect: 200 });
  await call({ method: 'GET', path: '/metrics', token: null, expect: 401 });

  // Webhook endpoints first, so the check-ins below are delivered (and dead-lettered: the receiver fails).
  const ep = await call<{ id: string; secret: string }>({
    method: 'POST',
    path: '/v1/webhooks/endpoints',
    body: { url: `${receiver.url}/hook`, description: 'openapi test' },
    expect: 201,
  });
  await call({ method: 'POST', path: '/v1/webhooks/endpoints', body: { url: 'ftp://x' }, expect: 422 });
  await call({ method: 'POST', path: '/v1/webhooks/endpoints', body: {}, expect: 400 });
  await call({ method: 'GET', path: '/v1/webhooks/endpoints', expect: 200 });
  await call({ method: 'GET', path: '/v1/webhooks/endpoints?limit=0', expect: 400 });
  await call({ method: 'GET', path: `/v1/webhooks/endpoints/${ep.id}`, expect: 200 });
  await call({ method: 'GET', path: '/v1/webhooks/endpoints/ep_nope', expect: 404 });
  await call({
    method: 'PATCH',
    path: `/v1/webhooks/endpoints/${ep.id}`,
    body: { description: 'changed' },
    expect: 200,
  });
  await call({ method: 'GET', path: `/v1/webhooks/endpoints/${ep.id}/secret`, expect: 200 });
  await call({
    method: 'POST',
    path: `/v1/webhooks/endpoints/${ep.id}/secret/rotate`,
    body: { grace_seconds: 60 },
    expect: 200,
  });
  const other = await call<{ id: string }>({
    method: 'POST',
    path: '/v1/webhooks/endpoints',
    body: { url: `${receiver.url}/other`, event_types: ['webhook.test'], disabled: true },
    expect: 201,
  });
  await call({ method: 'POST', path: `/v1/webhooks/endpoints/${other.id}/enable`, expect: 200 });
  await call({ method: 'POST', path: `/v1/webhooks/endpoints/${other.id}/disable`, expect: 200 });
  await call({ method: 'DELETE', path: `/v1/webhooks/endpoints/${other.id}`, expect: 204 });

  // Tickets.
  const qrs = [...(await issueTickets(v, 3)).values()] as string[];
  await call({ method: 'POST', path: '/v1/venues/v1/tickets', body: ticketBody({ id: 'A1' }), expect: 201 });
  await call({ method: 'POST', path: '/v1/venues/v1/tickets', body: ticketBody({ id: 'A1' }), expect: 409 });
  await call({ method: 'POST', path: '/v1/venues/v1/tickets', body: { holder: 'x' }, expect: 400 });
  await call({ method: 'POST', path: '/v1/venues/v1/tickets', rawBody: '{"holder":', expect: 400 });
  await call({ method: 'POST', path: '/v1/venues/v1/tickets', body: ticketBody(), token: null, expect: 401 });
  await call({
    method: 'POST',
    path: '/v1/venues/v1/tickets',
    rawBody: 'x',
    contentType: 'text/plain',
    expect: 415,
  });
  await call({
    method: 'POST',
    path: '/v1/venues/v1/tickets',
    body: ticketBody({ holder: 'x'.repeat(70_000) }),
    expect: 413,
  });
  const idem = { 'idempotency-key': `k-${Date.now()}` };
  await call({
    method: 'POST',
    path: '/v1/venues/v1/tickets',
    body: ticketBody(),
    headers: idem,
    expect: 201,
  });
  await call({
    method: 'POST',
    path: '/v1/venues/v1/tickets',
    body: ticketBody({ tier: 'VIP' }),
    headers: idem,
    expect: 422,
  });
  await call({
    method: 'POST',
    path: '/v1/venues/v1/tickets:batch',
    body: { tickets: [ticketBody({ id: 'B1' }), ticketBody({ id: 'A1' })] },
    expect: 200,
  });
  await call({ method: 'GET', path: '/v1/venues/v1/tickets/A1', expect: 200 });
  await call({ method: 'GET', path: '/v1/venues/v1/tickets/NOPE', expect: 404 });
  await call({
    method: 'POST',
    path: '/v1/venues/v1/tickets/A1/revoke',
    body: { reason: 'refunded' },
    expect: 200,
  });
  await call({
    method: 'POST',
    path: '/v1/venues/v1/tickets/NOPE/revoke',
    body: { reason: 'x' },
    expect: 404,
  });

  // Check-ins: an admit at north, and the same ticket admitted by a second gate the hub hears of
  // directly (published as that gate would), which makes a double entry.
  assert.equal((await gate.agent.scan(qrs[0] as string)).decision, 'admit');
  assert.equal((await gate.agent.scan('hello world')).decision, 'reject');
  await waitFor(
    async () => (await hub.api<{ checkins: unknown[] }>('/v1/venues/v1/checkins')).body.checkins.length >= 2,
    {
      message: 'the hub holds both check-ins',
    },
  );
  const south: CheckinMessage = {
    v: CHECKIN_SCHEMA_VERSION,
    id: newId(),
    venue: 'v1',
    agent: 'south',
    gate: 'south',
    seq: 1,
    ticket_id: 'T0',
    direction: 'in',
    decision: 'admit',
    reason: null,
    scanner: 'scanner1',
    method: 'qr',
    unsynced_ticket: false,
    scanned_at: Date.now(),
  };
  await jetstream(hub.nc).publish(subjects.checkin('v1', 'south', south.id), encode(south), {
    msgID: south.id,
  });
  await waitFor(
    async () =>
      (await hub.api<{ conflicts: unknown[] }>('/v1/venues/v1/conflicts')).body.conflicts.length === 1,
    {
      message: 'the double entry is recorded',
    },
  );
  await call({ method: 'GET', path: '/v1/venues/v1/checkins?limit=1', expect: 200 });
  await call({ method: 'GET', path: '/v1/venues/v1/checkins?limit=0', expect: 400 });
  await call({ method: 'GET', path: '/v1/venues/v1/conflicts', expect: 200 });
  await call({ method: 'GET', path: '/v1/venues/v1/conflicts?after=x', expect: 400 });
  await call({ method: 'GET', path: '/v1/venues/v1/agents', expect: 200 });

  // API keys, and a venue key refused elsewhere.
  const key = await call<{ id: string; key: string }>({
    method: 'POST',
    path: '/v1/api-keys',
    body: { name: 'box office', venues: ['v1'] },
    expect: 201,
  });
  await call({
    method: 'POST',
    path: '/v1/api-keys',
    body: { name: 'x', admin: true, venues: ['v1'] },
    expect: 400,
  });
  await call({ method: 'GET', path: '/v1/api-keys', expect: 200 });
  await call({ method: 'GET', path: '/v1/api-keys', token: key.key, expect: 403 });
  await call({ method: 'GET', path: '/v1/venues/v2/agents', token: key.key, expect: 403 });
  await call({ method: 'GET', path: '/v1/venues/v1/agents', token: 'nope', expect: 401 });
  await call({ method: 'DELETE', path: `/v1/api-keys/${key.id}`, expect: 204 });
  await call({ method: 'DELETE', path: `/v1/api-keys/${key.id}`, expect: 404 });

  // Deliveries: the check-in's message fails three times and is dead-lettered.
  type DeadLetters = { dead_letters: { message_id: string }[] };
  await waitFor(
    async () =>
      (await hub.api<DeadLetters>(`/v1/webhooks/endpoints/${ep.id}/dead-letters`)).body.dead_letters.length >=
      1,
    { timeoutMs: 20_000, message: 'a dead letter' },
  );
  const dead = await call<DeadLetters>({
    method: 'GET',
    path: `/v1/webhooks/endpoints/${ep.id}/dead-letters`,
    expect: 200,
  });
  const msgId = dead.dead_letters[0]?.message_id as string;
  await call({ method: 'GET', path: `/v1/webhooks/endpoints/${ep.id}/dead-letters?limit=5000`, expect: 400 });
  await call({ method: 'GET', path: '/v1/webhooks/endpoints/ep_nope/dead-letters', expect: 404 });
  await call({ method: 'GET', path: `/v1/webhooks/endpoints/${ep.id}/attempts`, expect: 200 });
  await call({ method: 'GET', path: `/v1/webhooks/endpoints/${ep.id}/attempts?limit=x`, expect: 400 });
  await call({ method: 'GET', path: `/v1/webhooks/messages/${msgId}`, expect: 200 });
  await call({ method: 'GET', path: '/v1/webhooks/messages/nope', expect: 404 });
  await call({ method: 'GET', path: '/v1/webhooks/health', expect: 200 });
  // Dashboard with a failing endpoint, a dead letter and a conflict in it.
  await waitFor(
    async () => {
      const s = await hub.api<{ failed: { items: unknown[] }; conflicts: { items: unknown[] } }>(
        '/v1/dashboard/summary',
      );
      return s.body.failed.items.length >= 1 && s.body.conflicts.items.length === 1;
    },
    { message: 'the dashboard shows the dead letter and the conflict' },
  );
  await call({ method: 'GET', path: '/v1/dashboard/summary', expect: 200 });
  await call({
    method: 'GET',
    path: '/v1/dashboard/summary?filter=nor&problems=false&page=1&page_size=5',
    expect: 200,
  });
  await call({ method: 'GET', path: '/v1/dashboard/summary?page_size=0', expect: 400 });
  await call({ method: 'GET', path: '/v1/dashboard/summary?nope=1', expect: 400 });
  await call({ method: 'GET', path: '/v1/dashboard/summary', token: null, expect: 401 });
  await call({ method: 'GET', path: '/v1/dashboard/stream?page=x', expect: 400 });

  // The stream: read the first event and check it against the snapshot schema.
  {
    const ctrl = new AbortController();
    const res = await fetch(`${hub.url}/v1/dashboard/stream`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
      signal: ctrl.signal,
    });
    const label = `GET /v1/dashboard/stream -> ${res.status}`;
    assert.equal(res.status, 200);
    const mediaType = (res.headers.get('content-type') ?? '').split(';')[0] ?? '';
    checker.checkAnswer({
      label,
      template: '/v1/dashboard/stream',
      method: 'get',
      status: 200,
      mediaType,
      value: '',
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let snapshot: string | undefined;
    while (snapshot === undefined) {
      const { value, done } = await reader.read();
      assert.ok(!done, 'the stream stays open');
      buffer += decoder.decode(value, { stream: true });
      const block = buffer.split('\n\n').find((b) => b.includes('event: snapshot'));
      snapshot = block
        ?.split('\n')
        .find((l) => l.startsWith('data: '))
        ?.slice(6);
    }
    ctrl.abort();
    checker.validate(
      { $ref: '#/components/schemas/DashboardSnapshot' },
      JSON.parse(snapshot),
      'stream snapshot',
    );
  }

  failing = false;
  await call({
    method: 'POST',
    path: `/v1/webhooks/endpoints/${ep.id}/messages/${msgId}/resend`,
    expect: 202,
  });
  await call({ method: 'POST', path: '/v1/webhooks/endpoints/ep_nope/messages/x/resend', expect: 404 });
  await waitFor(() => receiver.received.filter((r) => r.id === msgId).length >= 4, {
    message: 'the resent message arrives',
  });
  await call({ method: 'POST', path: `/v1/webhooks/endpoints/${ep.id}/test`, body: {}, expect: 202 });
  const recover = await call<{ job: { id: string } }>({
    method: 'POST',
    path: `/v1/webhooks/endpoints/${ep.id}/recover`,
    body: { since: new Date(Date.now() - 3_600_000).toISOString() },
    expect: 202,
  });
  await call({ method: 'POST', path: `/v1/webhooks/endpoints/${ep.id}/recover`, body: {}, expect: 400 });
  await waitFor(
    async () =>
      (await hub.api<{ status: string }>(`/v1/webhooks/jobs/${recover.job.id}`)).body.status !== 'running',
    {
      message: 'the recover job ends',
    },
  );
  await call({ method: 'GET', path: `/v1/webhooks/jobs/${recover.job.id}`, expect: 200 });
  await call({ method: 'GET', path: '/v1/webhooks/jobs/job_nope', expect: 404 });
  await call({ method: 'POST', path: `/v1/webhooks/endpoints/${ep.id}/dead-letters/redrive`, expect: 202 });
  await call({ method: 'GET', path: '/v1/webhooks/health', expect: 200 });
  await call({ method: 'DELETE', path: `/v1/webhooks/endpoints/${ep.id}`, expect: 204 });

  assert.deepEqual(checker.unexercised(), [], 'every documented operation was called');
});
