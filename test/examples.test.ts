/**
 * The sample receiver in examples/ against the hub's own signer: what integrators copy must accept what
 * the hub sends and nothing else.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type RefusalReason, startWebhookReceiver, type Webhook } from '../examples/webhook-receiver.ts';
import { generateSecret, webhookHeaders } from '../hub/webhooks/secrets.ts';

const nowSeconds = () => Math.floor(Date.now() / 1000);

function body(type: string, data: Record<string, unknown>): string {
  return JSON.stringify({ type, timestamp: new Date().toISOString(), data });
}

async function receiver(t: { after: (fn: () => Promise<void>) => void }, secret?: string) {
  const got: Webhook[] = [];
  const refused: RefusalReason[] = [];
  const rx = await startWebhookReceiver({
    secret,
    onWebhook: (w) => {
      got.push(w);
    },
    onRefused: (reason) => {
      refused.push(reason);
    },
  });
  t.after(() => rx.close());
  const post = (payload: string, headers: Record<string, string>) =>
    fetch(rx.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: payload,
    }).then(async (r) => ({ status: r.status, text: await r.text() }));
  return { rx, got, refused, post };
}

test('the sample receiver accepts a delivery signed by the hub, and refuses a tampered body', async (t) => {
  const secret = generateSecret();
  const { rx, got, refused, post } = await receiver(t, secret);
  const payload = body('checkin.created', { checkin_id: 'C1', gate: 'north', decision: 'admit' });
  const headers = {
    ...webhookHeaders({ id: 'msg_ok1', timestamp: nowSeconds(), body: payload, secrets: [secret] }),
  };

  assert.equal((await post(payload, headers)).status, 204);
  assert.equal(got.length, 1);
  assert.deepEqual(
    { id: got[0]?.id, type: got[0]?.type, data: got[0]?.data },
    { id: 'msg_ok1', type: 'checkin.created', data: { checkin_id: 'C1', gate: 'north', decision: 'admit' } },
  );

  const tampered = payload.replace('"admit"', '"reject"');
  const r = await post(tampered, { ...headers, 'webhook-id': 'msg_ok2' });
  assert.equal(r.status, 401);
  assert.equal((await post(tampered, headers)).status, 401, 'the original headers do not cover another body');
  assert.deepEqual(refused, ['bad_signature', 'bad_signature']);
  assert.equal(got.length, 1);
  assert.deepEqual(
    { received: rx.stats.received, verified: rx.stats.verified, refused: rx.stats.refused },
    { received: 3, verified: 1, refused: { bad_signature: 2 } },
  );
});

test('the sample receiver refuses a signature made with another secret, and accepts either during a rotation', async (t) => {
  const secret = generateSecret();
  const other = generateSecret();
  const { got, refused, post } = await receiver(t, secret);
  const payload = body('checkin.conflict', { conflict_id: 'X1', ticket_id: 'T1' });

  const wrong = webhookHeaders({ id: 'msg_w1', timestamp: nowSeconds(), body: payload, secrets: [other] });
  assert.equal((await post(payload, { ...wrong })).status, 401);
  assert.deepEqual(refused, ['bad_signature']);

  // The hub signs with the new and the old secret side by side while a rotation is in its grace period.
  const both = webhookHeaders({
    id: 'msg_w2',
    timestamp: nowSeconds(),
    body: payload,
    secrets: [other, secret],
  });
  assert.match(both['webhook-signature'], /^v1,\S+ v1,\S+$/);
  assert.equal((await post(payload, { ...both })).status, 204);
  assert.deepEqual(
    got.map((w) => w.id),
    ['msg_w2'],
  );
});

test('the sample receiver refuses a timestamp more than 5 minutes off, in either direction', async (t) => {
  const secret = generateSecret();
  const { got, refused, post } = await receiver(t, secret);
  const payload = body('agent.offline', { venue: 'v1', agent: 'north', gate: 'north' });
  const at = (offset: number, id: string) => ({
    ...webhookHeaders({ id, timestamp: nowSeconds() + offset, body: payload, secrets: [secret] }),
  });

  assert.equal((await post(payload, at(-301, 'msg_old'))).status, 401);
  assert.equal((await post(payload, at(301, 'msg_future'))).status, 401);
  assert.deepEqual(refused, ['stale_timestamp', 'stale_timestamp']);
  // Inside the window (a little clock skew) is fine.
  assert.equal((await post(payload, at(-240, 'msg_recent'))).status, 204);
  assert.deepEqual(
    got.map((w) => w.id),
    ['msg_recent'],
  );
  // A timestamp in milliseconds is a bug on the sender's side, and far outside the window.
  const ms = { ...at(0, 'msg_ms'), 'webhook-timestamp': String(Date.now()) };
  assert.equal((await post(payload, ms)).status, 401);
});

test('the sample receiver handles a repeated webhook-id once and acknowledges the repeats', async (t) => {
  const secret = generateSecret();
  const { rx, got, post } = await receiver(t, secret);
  const payload = body('checkin.created', { checkin_id: 'C2' });
  // Each attempt is stamped afresh by the hub; the id stays.
  for (let attempt = 0; attempt < 3; attempt++) {
    const h = webhookHeaders({
      id: 'msg_rep',
      timestamp: nowSeconds() - attempt,
      body: payload,
      secrets: [secret],
    });
    assert.equal((await post(payload, { ...h })).status, 204, `attempt ${attempt + 1}`);
  }
  const other = webhookHeaders({ id: 'msg_new', timestamp: nowSeconds(), body: payload, secrets: [secret] });
  assert.equal((await post(payload, { ...other })).status, 204);
  assert.deepEqual(
    got.map((w) => w.id),
    ['msg_rep', 'msg_new'],
  );
  assert.deepEqual(
    {
      received: rx.stats.received,
      verified: rx.stats.verified,
      distinct: rx.stats.distinct,
      duplicates: rx.stats.duplicates,
      byType: rx.stats.byType,
    },
    { received: 4, verified: 4, distinct: 2, duplicates: 2, byType: { 'checkin.created': 2 } },
  );
});

test('the sample receiver answers 503 until it has a secret, and 400 without the signature headers', async (t) => {
  const { rx, got, refused, post } = await receiver(t);
  const secret = generateSecret();
  const payload = body('webhook.test', { note: 'hello' });
  const h = () => ({
    ...webhookHeaders({ id: 'msg_t1', timestamp: nowSeconds(), body: payload, secrets: [secret] }),
  });
  assert.equal((await post(payload, h())).status, 503);
  rx.setSecret(secret);
  assert.equal((await post(payload, {})).status, 400);
  assert.equal((await post(payload, h())).status, 204);
  assert.deepEqual(refused, ['no_secret', 'missing_headers']);
  assert.equal(got.length, 1);
  assert.throws(() => rx.setSecret('not-a-secret'), /whsec_/);
});
