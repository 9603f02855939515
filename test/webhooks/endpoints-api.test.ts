import assert from 'node:assert/strict';
import { type TestContext, test } from 'node:test';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { Webhook } from 'standardwebhooks';
import { EndpointStore } from '../../hub/webhooks/endpoints.ts';
import type { EndpointRecord } from '../../hub/webhooks/model.ts';
import { activeSecrets, parseSecret, webhookHeaders } from '../../hub/webhooks/secrets.ts';
import type { Resolver } from '../../hub/webhooks/ssrf.ts';
import { KV_BUCKETS } from '../../shared/subjects.ts';
import { type HubEnv, startHubEnv, type TestHub, testLogger } from '../harness/gatesync.ts';
import { waitFor } from '../harness/index.ts';

interface Endpoint {
  id: string;
  url: string;
  description: string;
  event_types: string[];
  venues: string[] | null;
  rate_limit: number | null;
  max_concurrency: number;
  disabled: boolean;
  disabled_reason: string | null;
  disabled_at: string | null;
  failing_since: string | null;
  created_at: string;
  updated_at: string;
  previous_secret_expires_at: string | null;
  secret?: string;
}
interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

const PUBLIC_ADDRESS = '93.184.215.14';
/** DNS for these tests: never the network. */
const fakeDns: Resolver = async (hostname) => {
  switch (hostname) {
    case 'receiver.example.com':
    case 'other.example.com':
      return [PUBLIC_ADDRESS];
    case 'rebind.example.com':
      return ['127.0.0.1'];
    case 'mixed.example.com':
      return [PUBLIC_ADDRESS, '10.1.2.3'];
    default: {
      const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
      err.code = 'ENOTFOUND';
      throw err;
    }
  }
};

const SECRET_FORM = /^whsec_([A-Za-z0-9+/]+={0,2})$/;

function assertSecretForm(secret: unknown): void {
  assert.equal(typeof secret, 'string');
  const m = SECRET_FORM.exec(secret as string);
  assert.ok(m !== null, 'whsec_ + base64');
  const bytes = Buffer.from(m[1] as string, 'base64');
  assert.ok(bytes.length >= 24 && bytes.length <= 64, `${bytes.length} bytes`);
  assert.equal(bytes.toString('base64'), m[1], 'canonical base64');
}

async function hubWith(t: TestContext, allowCidrs?: string): Promise<HubEnv> {
  return startHubEnv(t, {
    prefix: 'gs-whep-',
    resolver: fakeDns,
    ...(allowCidrs === undefined ? {} : { hubEnv: { GATESYNC_WEBHOOK_ALLOW_CIDRS: allowCidrs } }),
  });
}

async function create(hub: TestHub, body: Record<string, unknown>): Promise<Endpoint> {
  const r = await hub.api<Endpoint>('/v1/webhooks/endpoints', { body });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return r.body;
}

async function refusal(hub: TestHub, url: string): Promise<ErrorBody['error']> {
  const r = await hub.api<ErrorBody>('/v1/webhooks/endpoints', { body: { url } });
  assert.equal(r.status, 422, `${url}: ${JSON.stringify(r.body)}`);
  assert.equal(r.body.error.code, 'webhook_url_refused');
  assert.equal(r.body.error.details?.field, 'body/url');
  return r.body.error;
}

test('endpoints are created, listed, read, changed, disabled, enabled and deleted; secrets stay out of views', async (t) => {
  const { hub } = await hubWith(t);

  const a = await create(hub, { url: 'https://receiver.example.com/hooks?tenant=1' });
  assert.match(a.id, /^ep_[0-9A-Z]{26}$/);
  assert.equal(a.url, 'https://receiver.example.com/hooks?tenant=1');
  assert.deepEqual(a.event_types, ['checkin.created', 'checkin.conflict']);
  assert.equal(a.venues, null);
  assert.equal(a.rate_limit, null);
  assert.equal(a.max_concurrency, 10);
  assert.equal(a.disabled, false);
  assert.equal(a.description, '');
  assert.equal(a.previous_secret_expires_at, null);
  assertSecretForm(a.secret);
  assert.equal(hub.webhooks.store.get(a.id)?.secrets.current, a.secret);

  const b = await create(hub, {
    url: 'https://other.example.com/in',
    event_types: ['checkin.created', 'ticket.revoked', 'agent.offline'],
    venues: ['v1', 'v2'],
    description: 'CRM',
    rate_limit: 2.5,
    max_concurrency: 3,
    disabled: true,
  });
  assert.deepEqual(b.venues, ['v1', 'v2']);
  assert.equal(b.rate_limit, 2.5);
  assert.equal(b.max_concurrency, 3);
  assert.equal(b.disabled, true);
  assert.equal(b.disabled_reason, 'manual');
  assert.ok(b.disabled_at !== null);

  const { secret: aSecret, ...aView } = a;
  const got = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${a.id}`);
  assert.equal(got.status, 200);
  assert.deepEqual(got.body, aView);

  const list = await hub.api<{ endpoints: Endpoint[]; next_after: string | null }>('/v1/webhooks/endpoints');
  assert.equal(list.status, 200);
  assert.deepEqual(
    list.body.endpoints.map((e) => e.id),
    [a.id, b.id],
  );
  assert.equal(list.body.next_after, null);
  const listed = JSON.stringify(list.body) + JSON.stringify(got.body);
  assert.ok(!listed.includes('whsec_'), 'no secret in list or get');
  assert.ok(!listed.includes('secrets'), 'no secret ring in list or get');

  // Filters and paging.
  const disabledOnly = await hub.api<{ endpoints: Endpoint[] }>('/v1/webhooks/endpoints?disabled=true');
  assert.deepEqual(
    disabledOnly.body.endpoints.map((e) => e.id),
    [b.id],
  );
  const enabledOnly = await hub.api<{ endpoints: Endpoint[] }>('/v1/webhooks/endpoints?disabled=false');
  assert.deepEqual(
    enabledOnly.body.endpoints.map((e) => e.id),
    [a.id],
  );
  const first = await hub.api<{ endpoints: Endpoint[]; next_after: string | null }>(
    '/v1/webhooks/endpoints?limit=1',
  );
  assert.deepEqual(
    first.body.endpoints.map((e) => e.id),
    [a.id],
  );
  assert.equal(first.body.next_after, a.id);
  const second = await hub.api<{ endpoints: Endpoint[]; next_after: string | null }>(
    `/v1/webhooks/endpoints?limit=1&after=${first.body.next_after}`,
  );
  assert.deepEqual(
    second.body.endpoints.map((e) => e.id),
    [b.id],
  );
  assert.equal(second.body.next_after, null);
  assert.equal((await hub.api('/v1/webhooks/endpoints?limit=0')).status, 400);
  assert.equal((await hub.api('/v1/webhooks/endpoints?disabled=yes')).status, 400);

  // Change: every field but the secret; the URL is checked again.
  const patched = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${a.id}`, {
    method: 'PATCH',
    body: {
      url: 'https://other.example.com/v2',
      event_types: ['checkin.rejected'],
      venues: ['v3'],
      description: 'dashboard',
      rate_limit: 10,
      max_concurrency: 50,
    },
  });
  assert.equal(patched.status, 200, JSON.stringify(patched.body));
  assert.equal(patched.body.url, 'https://other.example.com/v2');
  assert.deepEqual(patched.body.event_types, ['checkin.rejected']);
  assert.deepEqual(patched.body.venues, ['v3']);
  assert.equal(patched.body.description, 'dashboard');
  assert.equal(patched.body.rate_limit, 10);
  assert.equal(patched.body.max_concurrency, 50);
  assert.equal(patched.body.created_at, a.created_at);
  assert.ok(patched.body.updated_at >= a.updated_at);
  assert.equal('secret' in patched.body, false);
  const back = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${a.id}`, {
    method: 'PATCH',
    body: { venues: null, rate_limit: null },
  });
  assert.equal(back.body.venues, null);
  assert.equal(back.body.rate_limit, null);
  assert.equal(hub.webhooks.store.get(a.id)?.secrets.current, aSecret, 'a change keeps the secret');
  const noSecret = await hub.api<ErrorBody>(`/v1/webhooks/endpoints/${a.id}`, {
    method: 'PATCH',
    body: { secret: aSecret },
  });
  assert.equal(noSecret.status, 400);
  assert.equal(noSecret.body.error.code, 'validation_failed');
  assert.ok(!noSecret.body.error.message.includes(aSecret as string), 'an error never repeats a secret');
  const refusedPatch = await hub.api<ErrorBody>(`/v1/webhooks/endpoints/${a.id}`, {
    method: 'PATCH',
    body: { url: 'https://rebind.example.com/' },
  });
  assert.equal(refusedPatch.status, 422);
  assert.equal(
    hub.webhooks.store.get(a.id)?.url,
    'https://other.example.com/v2',
    'a refused change changes nothing',
  );

  // Disable and enable.
  const disabled = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${a.id}/disable`, { method: 'POST' });
  assert.equal(disabled.status, 200);
  assert.equal(disabled.body.disabled, true);
  assert.equal(disabled.body.disabled_reason, 'manual');
  assert.ok(disabled.body.disabled_at !== null);
  // An endpoint disabled by the delivery side (410 Gone) carries its failing streak; enable clears it all.
  await hub.webhooks.store.update(a.id, (e) => ({
    ...e,
    disabled_reason: 'gone',
    failing_since: new Date().toISOString(),
  }));
  const again = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${a.id}/disable`, { method: 'POST' });
  assert.equal(again.body.disabled_reason, 'gone', 'disabling a disabled endpoint keeps its first reason');
  const enabled = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${a.id}/enable`, { method: 'POST' });
  assert.equal(enabled.status, 200);
  assert.equal(enabled.body.disabled, false);
  assert.equal(enabled.body.disabled_reason, null);
  assert.equal(enabled.body.disabled_at, null);
  assert.equal(enabled.body.failing_since, null);
  const viaPatch = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${b.id}`, {
    method: 'PATCH',
    body: { disabled: false },
  });
  assert.equal(viaPatch.body.disabled, false);
  assert.equal(viaPatch.body.disabled_reason, null);

  // Delete.
  const del = await hub.api(`/v1/webhooks/endpoints/${a.id}`, { method: 'DELETE' });
  assert.equal(del.status, 204);
  assert.equal(hub.webhooks.store.get(a.id), undefined);
  for (const [method, path] of [
    ['GET', ''],
    ['DELETE', ''],
    ['POST', '/disable'],
    ['POST', '/enable'],
    ['GET', '/secret'],
    ['POST', '/secret/rotate'],
    ['POST', '/test'],
  ] as const) {
    const r = await hub.api<ErrorBody>(`/v1/webhooks/endpoints/${a.id}${path}`, { method });
    assert.equal(r.status, 404, `${method} ${path}`);
    assert.equal(r.body.error.code, 'not_found');
  }
  const patchGone = await hub.api<ErrorBody>(`/v1/webhooks/endpoints/${a.id}`, {
    method: 'PATCH',
    body: { description: 'x' },
  });
  assert.equal(patchGone.status, 404);
  const left = await hub.api<{ endpoints: Endpoint[] }>('/v1/webhooks/endpoints');
  assert.deepEqual(
    left.body.endpoints.map((e) => e.id),
    [b.id],
  );
});

test('bad endpoint bodies are refused with the field named; unknown event types are listed', async (t) => {
  const { hub } = await hubWith(t);
  const unknown = await hub.api<ErrorBody>('/v1/webhooks/endpoints', {
    body: {
      url: 'https://receiver.example.com/',
      event_types: ['checkin.created', 'checkin.deleted', 'foo'],
    },
  });
  assert.equal(unknown.status, 400);
  assert.equal(unknown.body.error.code, 'validation_failed');
  assert.equal(unknown.body.error.details?.field, 'body/event_types');
  assert.deepEqual(unknown.body.error.details?.unknown, ['checkin.deleted', 'foo']);
  assert.match(unknown.body.error.message, /"checkin\.deleted", "foo"/);

  const cases: [Record<string, unknown>, string][] = [
    [{}, 'body'],
    [{ url: 'https://receiver.example.com/', max_concurrency: 0 }, 'body/max_concurrency'],
    [{ url: 'https://receiver.example.com/', max_concurrency: 101 }, 'body/max_concurrency'],
    [{ url: 'https://receiver.example.com/', max_concurrency: 1.5 }, 'body/max_concurrency'],
    [{ url: 'https://receiver.example.com/', rate_limit: 0 }, 'body/rate_limit'],
    [{ url: 'https://receiver.example.com/', rate_limit: -1 }, 'body/rate_limit'],
    [{ url: 'https://receiver.example.com/', venues: [] }, 'body/venues'],
    [{ url: 'https://receiver.example.com/', venues: ['a.b'] }, 'body/venues/0'],
    [{ url: 'https://receiver.example.com/', event_types: [] }, 'body/event_types'],
    [{ url: 'https://receiver.example.com/', colour: 'red' }, 'body'],
    [{ url: 'https://receiver.example.com/', secret: 'whsec_c2hvcnQ=' }, 'body/secret'],
    [{ url: 'https://receiver.example.com/', secret: 'not-a-secret' }, 'body/secret'],
  ];
  for (const [body, field] of cases) {
    const r = await hub.api<ErrorBody>('/v1/webhooks/endpoints', { body });
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.error.code, 'validation_failed', JSON.stringify(body));
    assert.equal(r.body.error.details?.field, field, JSON.stringify(body));
  }
  const badId = await hub.api<ErrorBody>('/v1/webhooks/endpoints/not.an.id');
  assert.equal(badId.status, 400);
  assert.equal((await hub.api<{ endpoints: unknown[] }>('/v1/webhooks/endpoints')).body.endpoints.length, 0);

  // A caller's own secret is kept as given.
  const own = `whsec_${Buffer.alloc(40, 7).toString('base64')}`;
  const e = await create(hub, { url: 'https://receiver.example.com/', secret: own });
  assert.equal(e.secret, own);
  assert.deepEqual((await hub.api(`/v1/webhooks/endpoints/${e.id}/secret`)).body, { secret: own });
});

test('a rotated secret keeps the old one signing beside it for the grace period', async (t) => {
  const { hub } = await hubWith(t);
  const e = await create(hub, { url: 'https://receiver.example.com/' });
  const old = e.secret as string;
  assert.deepEqual((await hub.api(`/v1/webhooks/endpoints/${e.id}/secret`)).body, { secret: old });

  const before = Date.now();
  const rotated = await hub.api<{ secret: string; previous_secret_expires_at: string }>(
    `/v1/webhooks/endpoints/${e.id}/secret/rotate`,
    { method: 'POST' },
  );
  assert.equal(rotated.status, 200, JSON.stringify(rotated.body));
  assertSecretForm(rotated.body.secret);
  assert.notEqual(rotated.body.secret, old);
  const expires = Date.parse(rotated.body.previous_secret_expires_at);
  const day = 24 * 3600 * 1000;
  assert.ok(expires >= before + day && expires <= Date.now() + day, 'default grace: 24 hours');
  const view = await hub.api<Endpoint>(`/v1/webhooks/endpoints/${e.id}`);
  assert.equal(view.body.previous_secret_expires_at, rotated.body.previous_secret_expires_at);
  assert.deepEqual((await hub.api(`/v1/webhooks/endpoints/${e.id}/secret`)).body, {
    secret: rotated.body.secret,
  });

  // Both secrets sign, and a receiver holding either one verifies the delivery.
  const record = hub.webhooks.store.get(e.id) as EndpointRecord;
  const signing = activeSecrets(record.secrets, Date.now());
  assert.deepEqual(signing, [rotated.body.secret, old]);
  const body = JSON.stringify({ type: 'webhook.test', timestamp: new Date().toISOString(), data: {} });
  const headers = webhookHeaders({
    id: 'msg_1',
    timestamp: Math.floor(Date.now() / 1000),
    body,
    secrets: signing,
  });
  assert.equal(headers['webhook-signature'].split(' ').length, 2);
  for (const secret of [old, rotated.body.secret]) {
    assert.deepEqual(new Webhook(secret).verify(body, { ...headers }), JSON.parse(body));
  }
  // Nothing after the grace period: only the current one signs then.
  assert.deepEqual(activeSecrets(record.secrets, expires), [rotated.body.secret]);

  // A chosen secret with a grace of 0 ends every older one at once (after a leak).
  const own = `whsec_${Buffer.alloc(32, 9).toString('base64')}`;
  const now = await hub.api<{ secret: string; previous_secret_expires_at: string | null }>(
    `/v1/webhooks/endpoints/${e.id}/secret/rotate`,
    { method: 'POST', body: { secret: own, grace_seconds: 0 } },
  );
  assert.equal(now.status, 200);
  assert.equal(now.body.secret, own);
  // The first rotation's old secret is still inside its own grace period.
  assert.equal(now.body.previous_secret_expires_at, rotated.body.previous_secret_expires_at);
  const ring = (hub.webhooks.store.get(e.id) as EndpointRecord).secrets;
  assert.deepEqual(activeSecrets(ring, Date.now()), [own, old]);

  const short = await hub.api<{ secret: string; previous_secret_expires_at: string }>(
    `/v1/webhooks/endpoints/${e.id}/secret/rotate`,
    { method: 'POST', body: { grace_seconds: 60 } },
  );
  const shortExpiry = Date.parse(short.body.previous_secret_expires_at);
  assert.ok(shortExpiry >= Date.now() + day - 60_000, 'the latest of the live previous secrets is shown');
  const live = (hub.webhooks.store.get(e.id) as EndpointRecord).secrets.previous.map((p) => p.secret);
  assert.ok(live.includes(own), 'the replaced secret signs for 60 s');
  assert.ok(
    (hub.webhooks.store.get(e.id) as EndpointRecord).secrets.previous.some(
      (p) => p.secret === own && p.expiresAt <= Date.now() + 60_000,
    ),
  );

  const reuse = await hub.api<ErrorBody>(`/v1/webhooks/endpoints/${e.id}/secret/rotate`, {
    method: 'POST',
    body: { secret: short.body.secret },
  });
  assert.equal(reuse.status, 400);
  assert.equal(reuse.body.error.details?.field, 'body/secret');
  assert.ok(!reuse.body.error.message.includes(short.body.secret));
  const bad = await hub.api<ErrorBody>(`/v1/webhooks/endpoints/${e.id}/secret/rotate`, {
    method: 'POST',
    body: { secret: 'whsec_!!!!' },
  });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.details?.field, 'body/secret');
  const negative = await hub.api<ErrorBody>(`/v1/webhooks/endpoints/${e.id}/secret/rotate`, {
    method: 'POST',
    body: { grace_seconds: -1 },
  });
  assert.equal(negative.status, 400);
  parseSecret((hub.webhooks.store.get(e.id) as EndpointRecord).secrets.current);
});

test('URLs that reach private, loopback, link-local, CGNAT or metadata addresses are refused, saying why', async (t) => {
  const { hub } = await hubWith(t);
  const cases: [string, RegExp][] = [
    ['https://127.0.0.1/', /127\.0\.0\.1 is a loopback address \(127\.0\.0\.0\/8/],
    [
      'https://169.254.169.254/latest/meta-data/',
      /169\.254\.169\.254.*cloud metadata.*169\.254\.169\.254\/32/,
    ],
    ['https://[::1]/', /::1 is .*loopback.*::1\/128/],
    ['https://10.0.0.5/', /10\.0\.0\.5 is a private address \(10\.0\.0\.0\/8/],
    ['https://100.64.1.1/', /100\.64\.1\.1 .*carrier-grade NAT.*100\.64\.0\.0\/10/i],
    ['https://localhost:8443/', /localhost is loopback by definition/],
    [
      'https://rebind.example.com/hook',
      /rebind\.example\.com resolves to 127\.0\.0\.1: 127\.0\.0\.1 is a loopback/,
    ],
    ['https://mixed.example.com/', /10\.1\.2\.3 is a private address/],
    ['https://nowhere.example.com/', /nowhere\.example\.com could not be resolved \(ENOTFOUND\)/],
    ['http://receiver.example.com/', /only https is accepted/],
    ['ftp://receiver.example.com/', /scheme is ftp/],
    ['https://user:pw@receiver.example.com/', /user name or password/],
  ];
  for (const [url, reason] of cases) {
    const err = await refusal(hub, url);
    assert.match(err.message, reason, url);
    assert.equal(err.details?.reason, err.message.replace(/^webhook URL refused: /, ''));
  }
  assert.equal((await hub.api<{ endpoints: unknown[] }>('/v1/webhooks/endpoints')).body.endpoints.length, 0);
  // A public https URL is fine.
  await create(hub, { url: 'https://receiver.example.com/' });
});

test('the configured allow-list lets loopback receivers through, http included, and nothing else', async (t) => {
  const { hub } = await hubWith(t, '127.0.0.0/8');
  const https = await create(hub, { url: 'https://127.0.0.1/' });
  assert.equal(https.url, 'https://127.0.0.1/');
  const http = await create(hub, { url: 'http://127.0.0.1:8080/hooks' });
  assert.equal(http.url, 'http://127.0.0.1:8080/hooks');
  const byName = await create(hub, { url: 'http://rebind.example.com:9000/' });
  assert.equal(byName.url, 'http://rebind.example.com:9000/');
  // Outside the allow-list, the rules hold: http only for allow-listed networks, private stays refused.
  assert.match((await refusal(hub, 'http://receiver.example.com/')).message, /only https is accepted/);
  assert.match((await refusal(hub, 'https://10.0.0.5/')).message, /private address/);
  assert.match((await refusal(hub, 'https://[::1]/')).message, /loopback/);
});

test('webhook endpoint management needs an admin key', async (t) => {
  const { hub } = await hubWith(t);
  const e = await create(hub, { url: 'https://receiver.example.com/' });
  const key = await hub.api<{ key: string }>('/v1/api-keys', {
    body: { name: 'box office', venues: ['v1'] },
  });
  assert.equal(key.status, 201);
  const token = key.body.key;
  const calls: [string, string, unknown][] = [
    ['POST', '/v1/webhooks/endpoints', { url: 'https://receiver.example.com/' }],
    ['GET', '/v1/webhooks/endpoints', undefined],
    ['GET', `/v1/webhooks/endpoints/${e.id}`, undefined],
    ['PATCH', `/v1/webhooks/endpoints/${e.id}`, { description: 'x' }],
    ['DELETE', `/v1/webhooks/endpoints/${e.id}`, undefined],
    ['POST', `/v1/webhooks/endpoints/${e.id}/disable`, undefined],
    ['POST', `/v1/webhooks/endpoints/${e.id}/enable`, undefined],
    ['GET', `/v1/webhooks/endpoints/${e.id}/secret`, undefined],
    ['POST', `/v1/webhooks/endpoints/${e.id}/secret/rotate`, undefined],
    ['POST', `/v1/webhooks/endpoints/${e.id}/test`, undefined],
  ];
  for (const [method, path, body] of calls) {
    const r = await hub.api<ErrorBody>(path, { method, token, ...(body === undefined ? {} : { body }) });
    assert.equal(r.status, 403, `${method} ${path}`);
    assert.equal(r.body.error.code, 'forbidden');
    const anon = await hub.api<ErrorBody>(path, { method, token: 'nope' });
    assert.equal(anon.status, 401, `${method} ${path}`);
  }
  assert.equal(hub.webhooks.store.get(e.id)?.description, '', 'nothing changed');
  assert.equal(hub.webhooks.store.list().length, 1);
});

test('a second hub process sees every change through the watch, and concurrent updates both land', async (t) => {
  const { hub, nats, defer } = await hubWith(t);
  const nc = await connect({ servers: nats.url });
  defer(() => nc.close());
  const kv = await new Kvm(nc).open(KV_BUCKETS.endpoints);

  const existing = await create(hub, { url: 'https://receiver.example.com/', description: 'before' });
  const other = new EndpointStore({ kv, logger: testLogger('store-2') });
  const seen: [string, string | undefined][] = [];
  other.onChange((id, record) => seen.push([id, record?.description]));
  await other.start();
  defer(() => other.stop());
  assert.equal(other.get(existing.id)?.description, 'before', 'loaded at start');

  const e = await create(hub, { url: 'https://receiver.example.com/', description: 'new' });
  await waitFor(() => other.get(e.id)?.description === 'new');
  await hub.api(`/v1/webhooks/endpoints/${e.id}`, { method: 'PATCH', body: { description: 'changed' } });
  await waitFor(() => other.get(e.id)?.description === 'changed');

  // Read-modify-write from both processes at once: no change is lost.
  await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      (i % 2 === 0 ? other : hub.webhooks.store).update(e.id, (r) => ({
        ...r,
        venues: [...(r.venues ?? []), `v${i}`],
      })),
    ),
  );
  const venues = (await waitFor(() => {
    const v = other.get(e.id)?.venues;
    return v !== undefined && v !== null && v.length === 10 ? v : undefined;
  })) as string[];
  assert.deepEqual([...venues].sort(), Array.from({ length: 10 }, (_, i) => `v${i}`).sort());
  await waitFor(() => hub.webhooks.store.get(e.id)?.venues?.length === 10);

  // A change made by the other process shows in this hub's API.
  await other.update(e.id, (r) => ({ ...r, description: 'from the other hub' }));
  await waitFor(
    async () =>
      (await hub.api<Endpoint>(`/v1/webhooks/endpoints/${e.id}`)).body.description === 'from the other hub',
  );

  assert.equal(await other.remove(e.id), true);
  assert.equal(await other.remove(e.id), false);
  await waitFor(async () => (await hub.api(`/v1/webhooks/endpoints/${e.id}`)).status === 404);
  assert.deepEqual(seen.at(-1), [e.id, undefined], 'listeners hear of the delete');
  assert.ok(seen.some(([id, d]) => id === e.id && d === 'changed'));
  // Each change is heard once: creation, 'changed', ten venue updates, the description, the delete.
  const heard = seen.filter(([id]) => id === e.id).length;
  assert.ok(heard <= 14, `${heard} notifications for 14 changes`);

  await assert.rejects(
    other.create({ ...(hub.webhooks.store.get(existing.id) as EndpointRecord) }),
    (err: unknown) => (err as { code?: string }).code === 'endpoint_exists',
  );
  assert.equal(await other.update('ep_missing', (r) => r), undefined);
});

test('a test message to an unknown endpoint is 404', async (t) => {
  const { hub } = await hubWith(t);
  const r = await hub.api<ErrorBody>('/v1/webhooks/endpoints/ep_00000000000000000000000000/test', {
    method: 'POST',
    body: { data: { hello: 'world' } },
  });
  assert.equal(r.status, 404);
  assert.equal(r.body.error.code, 'not_found');
});
