import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startHubEnv } from '../harness/gatesync.ts';
import { waitFor } from '../harness/index.ts';
import { startReceiver } from '../harness/receiver.ts';
import { issueTickets, startVenue } from '../harness/venue.ts';

/** Short delays so retry behaviour is tested in seconds, not hours. */
export const FAST_WEBHOOKS: Record<string, string> = {
  GATESYNC_WEBHOOK_ALLOW_CIDRS: '127.0.0.0/8',
  GATESYNC_WEBHOOK_RETRY_SCHEDULE: '200ms,400ms,600ms',
  GATESYNC_WEBHOOK_THROTTLE_FLOOR: '1s',
  GATESYNC_WEBHOOK_CONNECT_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_HEADERS_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_BODY_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_BREAKER_COOLDOWN: '500ms',
};

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
  const ep = await v.hub.api<Created>('/v1/webhooks/endpoints', { body: { url: `${rx.url}/hook` } });
  assert.equal(ep.status, 201);
  const qrs = [...(await issueTickets(v, 3)).values()];
  const gate = v.gates[0];
  assert.ok(gate);
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
