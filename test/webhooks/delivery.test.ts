import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import type { Resolver } from '../../hub/webhooks/ssrf.ts';
import { type HubEnv, startHubEnv, ticketBody } from '../harness/gatesync.ts';
import { waitFor } from '../harness/index.ts';
import { FAST_WEBHOOKS, startReceiver } from '../harness/receiver.ts';
import { hubCheckins, issueTickets, startVenue } from '../harness/venue.ts';

interface Created {
  id: string;
  secret: string;
}

test('a test message reaches the receiver signed with the endpoint secret', async (t) => {
  const env = await startHubEnv(t, { hubEnv: FAST_WEBHOOKS });
  const rx = await startReceiver();
  env.defer(() => rx.close());
  const ep = await env.hub.api<Created>('/v1/webhooks/endpoints', { body: { url: `${rx.url}/hook` } });
  assert.equal(ep.status, 201, JSON.stringify(ep.body));
  const sent = await env.hub.api<{ message_id: string }>(`/v1/webhooks/endpoints/${ep.body.id}/test`, {
    body: {},
  });
  assert.equal(sent.status, 202, JSON.stringify(sent.body));
  await waitFor(() => rx.received.length >= 1, { message: 'test message delivered' });
  assert.equal(rx.verified(ep.body.secret).length, 1);
  assert.equal(rx.received[0]?.id, sent.body.message_id);
  assert.equal(rx.received[0]?.json.type, 'webhook.test');
  const msg = await waitFor(async () => {
    const r = await env.hub.api<{ attempts: { outcome: string }[] }>(
      `/v1/webhooks/messages/${sent.body.message_id}`,
    );
    return r.body.attempts?.length === 1 ? r.body : undefined;
  });
  assert.equal(msg.attempts[0]?.outcome, 'succeeded');
});

test('an admission at a gate arrives as a signed checkin.created', async (t) => {
  const v = await startVenue(t, { gates: ['north'], hubEnv: FAST_WEBHOOKS });
  const rx = await startReceiver();
  v.defer(() => rx.close());
  const qrs = [...(await issueTickets(v, 3)).values()];
  const gate = v.gates[0];
  assert.ok(gate);
  // Before any endpoint exists: nobody subscribed, so this admission is never sent.
  const before = await gate.agent.scan(qrs[1] as string);
  await waitFor(async () => (await hubCheckins(v.hub)).some((c) => c.id === before.checkin_id));
  const ep = await v.hub.api<Created>('/v1/webhooks/endpoints', { body: { url: `${rx.url}/hook` } });
  assert.equal(ep.status, 201);
  const a = await gate.agent.scan(qrs[0] as string);
  await gate.agent.scan(qrs[0] as string); // already_used: a rejection, not subscribed by default
  await waitFor(() => rx.received.length >= 1, { timeoutMs: 15_000, message: 'check-in delivered' });
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(rx.received.length, 1);
  const got = rx.verified(ep.body.secret)[0];
  assert.ok(got);
  assert.equal(got.json.type, 'checkin.created');
  assert.equal(got.json.data.checkin_id, a.checkin_id);
});

interface Attempt {
  attempt: number;
  outcome: string;
  status_code: number | null;
  error: string | null;
  next: string;
  response_body: string;
  response_truncated: boolean;
  at: string;
}

async function attemptsOf(hub: HubEnv['hub'], endpoint: string, n: number): Promise<Attempt[]> {
  return waitFor(
    async () => {
      const r = await hub.api<{ attempts: Attempt[] }>(`/v1/webhooks/endpoints/${endpoint}/attempts`);
      return r.body.attempts.length >= n ? r.body.attempts : undefined;
    },
    { timeoutMs: 20_000, message: `${n} attempts logged` },
  );
}

async function webhookEnv(t: TestContext, env: Record<string, string> = {}, resolver?: Resolver) {
  const h = await startHubEnv(t, {
    hubEnv: { ...FAST_WEBHOOKS, ...env },
    ...(resolver === undefined ? {} : { resolver }),
  });
  const endpoint = async (url: string, extra: Record<string, unknown> = {}) => {
    const r = await h.hub.api<Created>('/v1/webhooks/endpoints', { body: { url, ...extra } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body;
  };
  const sendTest = async (id: string) => {
    const r = await h.hub.api<{ message_id: string }>(`/v1/webhooks/endpoints/${id}/test`, { body: {} });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    return r.body.message_id;
  };
  return { ...h, endpoint, sendTest };
}

test('500 twice then 200: three attempts with one webhook-id, each freshly signed, the last succeeds', async (t) => {
  const w = await webhookEnv(t);
  const rx = await startReceiver((_r, i) => ({ status: i < 2 ? 500 : 200 }));
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/hook`);
  const id = await w.sendTest(ep.id);
  await waitFor(() => rx.received.length >= 3, { message: 'three attempts' });
  assert.deepEqual(
    rx.received.map((r) => r.id),
    [id, id, id],
  );
  assert.equal(rx.verified(ep.secret).length, 3, 'every attempt verifies');
  const attempts = await attemptsOf(w.hub, ep.id, 3);
  assert.deepEqual(
    attempts.map((a) => [a.attempt, a.outcome, a.status_code, a.next]),
    [
      [1, 'failed', 500, 'retry'],
      [2, 'failed', 500, 'retry'],
      [3, 'succeeded', 200, 'delivered'],
    ],
  );
  await new Promise((r) => setTimeout(r, 1_000));
  assert.equal(rx.received.length, 3, 'nothing after the success');
});

test('a receiver that never answers times out; the retry waits at least the throttle floor', async (t) => {
  const w = await webhookEnv(t);
  const rx = await startReceiver((_r, i) => (i === 0 ? { hang: true } : { status: 204 }));
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/slow`);
  await w.sendTest(ep.id);
  await waitFor(() => rx.received.length >= 2, { timeoutMs: 15_000, message: 'retried after timeout' });
  const [first, second] = rx.received;
  assert.ok(first && second);
  // 1 s headers timeout, then at least the 1 s throttle floor (the schedule says 200 ms).
  assert.ok(second.at - first.at >= 1_900, `retry came after ${second.at - first.at} ms`);
  const attempts = await attemptsOf(w.hub, ep.id, 2);
  assert.match(attempts[0]?.error ?? '', /TIMEOUT|ETIMEDOUT/);
  assert.equal(attempts[1]?.outcome, 'succeeded');
});

test('410 Gone disables the endpoint at once, dead-letters the message and tells other endpoints', async (t) => {
  const w = await webhookEnv(t);
  const gone = await startReceiver(() => ({ status: 410 }));
  const ops = await startReceiver();
  w.defer(() => gone.close());
  w.defer(() => ops.close());
  const ep = await w.endpoint(`${gone.url}/gone`);
  const watcher = await w.endpoint(`${ops.url}/ops`, { event_types: ['endpoint.disabled'] });
  const msg = await w.sendTest(ep.id);
  await waitFor(async () => {
    const r = await w.hub.api<{ disabled: boolean; disabled_reason: string }>(
      `/v1/webhooks/endpoints/${ep.id}`,
    );
    return r.body.disabled && r.body.disabled_reason === 'gone';
  });
  assert.equal(gone.received.length, 1, 'no retry after 410');
  const dead = await waitFor(async () => {
    const r = await w.hub.api<{ dead_letters: { message_id: string; reason: string }[] }>(
      `/v1/webhooks/endpoints/${ep.id}/dead-letters`,
    );
    return r.body.dead_letters.length > 0 ? r.body.dead_letters : undefined;
  });
  assert.equal(dead[0]?.message_id, msg);
  await waitFor(() => ops.received.length >= 1, { message: 'endpoint.disabled delivered' });
  assert.equal(ops.verified(watcher.secret)[0]?.json.type, 'endpoint.disabled');
  assert.equal(ops.received[0]?.json.data.endpoint_id, ep.id);
});

test('429 with Retry-After waits at least the throttle floor; exhausted retries dead-letter and redrive works', async (t) => {
  const w = await webhookEnv(t);
  let healthy = false;
  const rx = await startReceiver(() =>
    healthy ? { status: 200 } : { status: 429, headers: { 'retry-after': '1' } },
  );
  const ops = await startReceiver();
  w.defer(() => rx.close());
  w.defer(() => ops.close());
  const ep = await w.endpoint(`${rx.url}/busy`);
  await w.endpoint(`${ops.url}/ops`, { event_types: ['message.attempt.exhausted'] });
  const msg = await w.sendTest(ep.id);
  // Four attempts (schedule of three delays), each at least a second after the last.
  await waitFor(() => rx.received.length >= 4, { timeoutMs: 20_000, message: 'four attempts' });
  for (let i = 1; i < 4; i++) {
    const gap = (rx.received[i]?.at ?? 0) - (rx.received[i - 1]?.at ?? 0);
    assert.ok(gap >= 950, `attempt ${i + 1} came ${gap} ms after the one before`);
  }
  await waitFor(() => ops.received.length >= 1, { message: 'message.attempt.exhausted delivered' });
  assert.equal(ops.received[0]?.json.type, 'message.attempt.exhausted');
  assert.equal(ops.received[0]?.json.data.message_id, msg);
  healthy = true;
  const job = await w.hub.api<{ job: { id: string } }>(
    `/v1/webhooks/endpoints/${ep.id}/dead-letters/redrive`,
    {
      method: 'POST',
    },
  );
  assert.equal(job.status, 202);
  await waitFor(() => rx.received.length >= 5, { message: 'redriven' });
  assert.equal(rx.received[4]?.id, msg, 'the same webhook-id');
  await waitFor(async () => {
    const r = await w.hub.api<{ dead_letters: unknown[] }>(`/v1/webhooks/endpoints/${ep.id}/dead-letters`);
    return r.body.dead_letters.length === 0;
  });
});

test('a 301 is a failure and is not followed; a huge response body is cut at the cap', async (t) => {
  const w = await webhookEnv(t, { GATESYNC_WEBHOOK_RETRY_SCHEDULE: '10s' });
  const target = await startReceiver();
  const redirect = await startReceiver(() => ({ status: 301, headers: { location: `${target.url}/moved` } }));
  const huge = await startReceiver(() => ({ hugeBodyBytes: 50 * 1024 * 1024 }));
  for (const r of [target, redirect, huge]) w.defer(() => r.close());
  const a = await w.endpoint(`${redirect.url}/old`);
  const b = await w.endpoint(`${huge.url}/big`);
  await w.sendTest(a.id);
  await w.sendTest(b.id);
  const [ra] = await attemptsOf(w.hub, a.id, 1);
  assert.equal(ra?.outcome, 'failed');
  assert.equal(ra?.status_code, 301);
  assert.match(ra?.error ?? '', /redirect/);
  assert.equal(target.received.length, 0, 'the redirect was not followed');
  const [rb] = await attemptsOf(w.hub, b.id, 1);
  assert.equal(rb?.outcome, 'succeeded');
  assert.equal(rb?.response_truncated, true);
  assert.equal(rb?.response_body.length, 4096);
});

test('secret rotation: both signatures are sent and each secret verifies', async (t) => {
  const w = await webhookEnv(t);
  const rx = await startReceiver();
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/hook`);
  const rot = await w.hub.api<{ secret: string }>(`/v1/webhooks/endpoints/${ep.id}/secret/rotate`, {
    body: {},
  });
  assert.equal(rot.status, 200, JSON.stringify(rot.body));
  await w.sendTest(ep.id);
  await waitFor(() => rx.received.length >= 1);
  assert.equal(rx.received[0]?.headers['webhook-signature']?.split(' ').length, 2);
  assert.equal(rx.verified(ep.secret).length, 1, 'the old secret verifies');
  assert.equal(rx.verified(rot.body.secret).length, 1, 'the new secret verifies');
});

test('DNS rebinding: a name public at registration and loopback at delivery is refused at connect time', async (t) => {
  let answer = '93.184.215.14';
  const resolver: Resolver = async () => [answer];
  const w = await webhookEnv(t, { GATESYNC_WEBHOOK_ALLOW_CIDRS: '' }, resolver);
  const rx = await startReceiver();
  w.defer(() => rx.close());
  const port = new URL(rx.url).port;
  const ep = await w.endpoint(`https://hooks.example.test:${port}/hook`);
  answer = '127.0.0.1';
  await w.sendTest(ep.id);
  const [a] = await attemptsOf(w.hub, ep.id, 1);
  assert.equal(a?.outcome, 'failed');
  assert.match(a?.error ?? '', /EGATESYNC_SSRF/);
  assert.match(a?.error ?? '', /loopback/);
  assert.equal(rx.received.length, 0);
});

test('the rate limit holds at the receiver: 5 per second', async (t) => {
  const w = await webhookEnv(t);
  const rx = await startReceiver();
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/hook`, { rate_limit: 5, max_concurrency: 10 });
  for (let i = 0; i < 25; i++) await w.sendTest(ep.id);
  await waitFor(() => rx.received.length >= 25, { timeoutMs: 20_000, message: 'all 25 delivered' });
  const times = rx.received.map((r) => r.at);
  let worst = 0;
  for (const t0 of times) worst = Math.max(worst, times.filter((x) => x >= t0 && x < t0 + 1_000).length);
  // A burst of 5, then 5 a second: never more than 10 in any second.
  assert.ok(worst <= 10, `${worst} requests in one second`);
  const span = (times[times.length - 1] ?? 0) - (times[0] ?? 0);
  assert.ok(span >= 3_500, `25 messages at 5/s took only ${span} ms`);
});

test('a dead endpoint beside a healthy one: the healthy one gets everything while the dead one hangs', async (t) => {
  const w = await webhookEnv(t, { GATESYNC_WEBHOOK_HEADERS_TIMEOUT: '5s' });
  const dead = await startReceiver(() => ({ hang: true }));
  const ok = await startReceiver();
  w.defer(() => dead.close());
  w.defer(() => ok.close());
  const d = await w.endpoint(`${dead.url}/dead`, { max_concurrency: 2 });
  const h = await w.endpoint(`${ok.url}/ok`, { max_concurrency: 2 });
  for (let i = 0; i < 20; i++) {
    await w.sendTest(d.id);
    await w.sendTest(h.id);
  }
  await waitFor(() => ok.received.length >= 20, { timeoutMs: 5_000, message: 'healthy endpoint got all 20' });
  assert.ok(dead.received.length <= 2, `dead endpoint has ${dead.received.length} requests open`);
});

test('an endpoint failing for longer than the disable-after setting is disabled', async (t) => {
  const w = await webhookEnv(t, {
    GATESYNC_WEBHOOK_DISABLE_AFTER: '1s',
    GATESYNC_WEBHOOK_RETRY_SCHEDULE: '500ms,500ms,500ms,500ms,500ms,500ms',
  });
  const rx = await startReceiver(() => ({ status: 503 }));
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/down`);
  await w.sendTest(ep.id);
  const e = await waitFor(
    async () => {
      const r = await w.hub.api<{ disabled: boolean; disabled_reason: string }>(
        `/v1/webhooks/endpoints/${ep.id}`,
      );
      return r.body.disabled ? r.body : undefined;
    },
    { timeoutMs: 20_000, message: 'disabled for failing' },
  );
  assert.equal(e.disabled_reason, 'failing');
});

test("one ticket's messages are attempted in order: issued before revoked, for every ticket", async (t) => {
  const w = await webhookEnv(t);
  const rx = await startReceiver((_r, i) => ({ status: 200, delayMs: i % 3 === 0 ? 30 : 0 }));
  w.defer(() => rx.close());
  await w.endpoint(`${rx.url}/tickets`, {
    event_types: ['ticket.issued', 'ticket.revoked'],
    max_concurrency: 8,
  });
  const ids = Array.from({ length: 20 }, (_, i) => `ORD${i}`);
  const batch = await w.hub.api('/v1/venues/v1/tickets:batch', {
    body: { tickets: ids.map((id) => ticketBody({ id })) },
  });
  assert.equal(batch.status, 200);
  for (const id of ids) {
    const r = await w.hub.api(`/v1/venues/v1/tickets/${id}/revoke`, { body: { reason: 'refund' } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  await waitFor(() => rx.received.length >= 40, { timeoutMs: 20_000, message: 'all 40 delivered' });
  for (const id of ids) {
    const types = rx.received.filter((r) => r.json.data.ticket_id === id).map((r) => r.json.type);
    assert.deepEqual(types, ['ticket.issued', 'ticket.revoked'], id);
  }
  assert.equal(
    rx.received.some((r) => 'qr' in r.json.data),
    false,
    'the QR token is never sent',
  );
});

test('recover re-queues only the dead letters since the given time', async (t) => {
  const w = await webhookEnv(t, { GATESYNC_WEBHOOK_RETRY_SCHEDULE: '100ms' });
  let up = false;
  const rx = await startReceiver(() => ({ status: up ? 200 : 500 }));
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/hook`);
  const old = await w.sendTest(ep.id);
  const deadCount = async () => {
    const r = await w.hub.api<{ dead_letters: unknown[] }>(`/v1/webhooks/endpoints/${ep.id}/dead-letters`);
    return r.body.dead_letters.length;
  };
  await waitFor(async () => (await deadCount()) === 1, { message: 'first dead letter' });
  await new Promise((r) => setTimeout(r, 50));
  const since = new Date().toISOString();
  const recent = await w.sendTest(ep.id);
  await waitFor(async () => (await deadCount()) === 2, { message: 'second dead letter' });
  up = true;
  const job = await w.hub.api<{ job: { id: string } }>(`/v1/webhooks/endpoints/${ep.id}/recover`, {
    body: { since },
  });
  assert.equal(job.status, 202, JSON.stringify(job.body));
  const done = await waitFor(async () => {
    const r = await w.hub.api<{ status: string; queued: number }>(`/v1/webhooks/jobs/${job.body.job.id}`);
    return r.body.status === 'done' ? r.body : undefined;
  });
  assert.equal(done.queued, 1);
  await waitFor(() => rx.received.some((r) => r.id === recent && r.at > Date.parse(since)));
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(rx.received.filter((r) => r.id === old).length, 2, 'the older one was not recovered');
  assert.equal(await deadCount(), 1);
});

test('a message over the size limit is refused when it is created, with a clear error', async (t) => {
  const w = await webhookEnv(t, { GATESYNC_WEBHOOK_MAX_PAYLOAD_BYTES: '2048' });
  const rx = await startReceiver();
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/hook`);
  const big = await w.hub.api<{ error: { code: string; message: string } }>(
    `/v1/webhooks/endpoints/${ep.id}/test`,
    { body: { data: { blob: 'x'.repeat(4000) } } },
  );
  assert.equal(big.status, 413);
  assert.equal(big.body.error.code, 'payload_too_large');
  assert.match(big.body.error.message, /limit is 2048/);
  const metrics = await w.hub.api<string>('/metrics');
  assert.match(
    String(metrics.body),
    /gatesync_hub_webhook_events_refused_total\{reason="payload_too_large"\} 1/,
  );
  await w.sendTest(ep.id);
  await waitFor(() => rx.received.length === 1, { message: 'a small one still goes' });
});

test('a gate that loses its link raises agent.offline, and agent.online when it is back', async (t) => {
  const v = await startVenue(t, {
    gates: ['north'],
    hubEnv: { ...FAST_WEBHOOKS, GATESYNC_AGENT_OFFLINE_AFTER: '7s' },
  });
  const rx = await startReceiver();
  v.defer(() => rx.close());
  const ep = await v.hub.api<Created>('/v1/webhooks/endpoints', {
    body: { url: `${rx.url}/presence`, event_types: ['agent.offline', 'agent.online'], venues: ['v1'] },
  });
  assert.equal(ep.status, 201);
  const gate = v.gates[0];
  assert.ok(gate);
  // The hub must have seen a heartbeat before the cut, so that it knows the agent as online.
  await waitFor(
    async () => {
      const r = await v.hub.api<{ agents: { online: boolean }[] }>('/v1/venues/v1/agents');
      return r.body.agents[0]?.online;
    },
    { timeoutMs: 15_000 },
  );
  gate.proxy.cut();
  const off = await waitFor(() => rx.received.find((r) => r.json.type === 'agent.offline'), {
    timeoutMs: 20_000,
    message: 'agent.offline',
  });
  assert.equal(off.json.data.agent, 'north');
  assert.equal(
    rx.received.some((r) => r.json.type === 'agent.online'),
    false,
  );
  gate.proxy.restore();
  await waitFor(() => rx.received.find((r) => r.json.type === 'agent.online'), {
    timeoutMs: 20_000,
    message: 'agent.online',
  });
  assert.equal(rx.verified(ep.body.secret).length, rx.received.length);
});

test('the circuit breaker stops sending to a failing endpoint, probes after the cool-down, and closes on success', async (t) => {
  const w = await webhookEnv(t, {
    GATESYNC_WEBHOOK_BREAKER_FAILURES: '3',
    GATESYNC_WEBHOOK_BREAKER_COOLDOWN: '2s',
    GATESYNC_WEBHOOK_RETRY_SCHEDULE: '1h',
  });
  let up = false;
  const rx = await startReceiver(() => ({ status: up ? 200 : 500 }));
  w.defer(() => rx.close());
  const ep = await w.endpoint(`${rx.url}/flaky`, { max_concurrency: 1 });
  for (let i = 0; i < 8; i++) await w.sendTest(ep.id);
  await waitFor(() => rx.received.length >= 3, { message: 'three failures' });
  const third = rx.received[2]?.at ?? 0;
  // Open: nothing is sent during the cool-down (a lower bound: a slow machine only lengthens it).
  await new Promise((r) => setTimeout(r, 1_500));
  assert.equal(rx.received.length, 3, 'no request while the breaker is open');
  const health = await w.hub.api<{ endpoints: { id: string; health: { breaker: string } | null }[] }>(
    '/v1/webhooks/health',
  );
  assert.equal(health.body.endpoints.find((e) => e.id === ep.id)?.health?.breaker, 'open');
  up = true;
  // One probe after the cool-down; it succeeds, the breaker closes and the rest go.
  await waitFor(() => rx.received.length >= 4, { message: 'the probe' });
  assert.ok((rx.received[3]?.at ?? 0) - third >= 1_900, 'the probe waited for the cool-down');
  await waitFor(() => rx.received.length >= 8, { timeoutMs: 15_000, message: 'the rest after the probe' });
  assert.equal(new Set(rx.received.slice(3).map((r) => r.id)).size, 5, 'each remaining message once');
});
