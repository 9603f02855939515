import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserSkipReason, startBrowser } from '../harness/browser.ts';
import { ADMIN_KEY } from '../harness/gatesync.ts';
import { waitFor } from '../harness/index.ts';
import { startReceiver } from '../harness/receiver.ts';
import { issueTickets, startVenue } from '../harness/venue.ts';

const HUB_ENV = {
  GATESYNC_WEBHOOK_ALLOW_CIDRS: '127.0.0.0/8',
  GATESYNC_WEBHOOK_RETRY_SCHEDULE: '200ms,200ms',
  GATESYNC_WEBHOOK_CONNECT_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_HEADERS_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_BODY_TIMEOUT: '1s',
  GATESYNC_AGENT_OFFLINE_AFTER: '6s',
};

test('hub dashboard: live agent state, offline after a link cut and back, a dead-lettered message replayed from the page', {
  skip: browserSkipReason() ?? false,
  timeout: 240_000,
}, async (t) => {
  const v = await startVenue(t, { gates: ['north'], hubEnv: HUB_ENV });
  const gate = v.gates[0];
  assert.ok(gate);
  let answer = 500;
  const receiver = await startReceiver(() => ({ status: answer, body: answer === 200 ? 'ok' : 'down' }));
  v.defer(() => receiver.close());
  const ep = await v.hub.api<{ id: string }>('/v1/webhooks/endpoints', {
    body: { url: `${receiver.url}/hook`, description: 'dashboard test' },
  });
  assert.equal(ep.status, 201);
  const qrs = [...(await issueTickets(v, 3)).values()] as string[];

  const { page, screenshot } = await startBrowser(t);
  const text = async (selector: string) => ((await page.textContent(selector)) ?? '').trim();
  const north = 'tr[data-venue="v1"][data-agent="north"]';
  const shows = (selector: string, want: RegExp, timeoutMs = 15_000) =>
    waitFor(async () => want.test(await text(selector).catch(() => '')), {
      timeoutMs,
      intervalMs: 200,
      message: `${selector} shows ${String(want)}`,
    });

  // The page holds no data of its own: it asks for a key first, and refuses a wrong one.
  const res = await page.goto(`${v.hub.url}/dashboard`);
  assert.equal(res?.status(), 200);
  assert.match(res?.headers()['content-security-policy'] ?? '', /default-src 'none'/);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#key', 'not-a-key');
  await page.click('#login button[type="submit"]');
  await shows('#login-error', /did not accept that key.*401/);
  await page.fill('#key', ADMIN_KEY);
  await page.click('#login button[type="submit"]');
  await page.waitForSelector('#live[data-state="live"]', { timeout: 15_000 });
  assert.equal(await page.evaluate('sessionStorage.getItem("gatesync.hubKey")'), ADMIN_KEY);

  // Live state: the agent online, in sync, with its tickets; the endpoint listed.
  await shows(`${north} .status`, /^ONLINE/);
  await shows(`${north} .sync`, /in sync/);
  await shows(`${north} td:nth-child(8)`, /^3$/);
  await shows(`#endpoints-body tr[data-endpoint-id="${ep.body.id}"]`, /dashboard test/);

  // A scan: its check-in's message fails three times at the receiver and is dead-lettered; the scan
  // count follows the next heartbeat.
  assert.equal((await gate.agent.scan(qrs[0] as string)).decision, 'admit');
  const failedRow = '#failed-body tr';
  await waitFor(async () => (await page.locator(failedRow).count()) >= 1, {
    timeoutMs: 20_000,
    message: 'the failed message is listed',
  });
  const messageId = (await page.getAttribute(failedRow, 'data-message-id')) as string;
  assert.ok(messageId);
  assert.equal(
    receiver.received.filter((r) => r.id === messageId).length,
    3,
    'three attempts before it died',
  );
  await shows(`${failedRow}[data-message-id="${messageId}"] .replay-state`, /not replayed/);
  await shows(`#endpoints-body tr[data-endpoint-id="${ep.body.id}"] .state`, /^FAILING/);
  await shows(`#endpoints-body tr[data-endpoint-id="${ep.body.id}"] .err`, /500/);
  await shows(`${north} .scans`, /^1$/, 15_000);
  await shows('#t-failed', /^1$/);
  await screenshot('hub-dashboard-1-online-failed');

  // Cut the agent's link: no heartbeats reach the hub, and after 6 s the agent shows offline.
  gate.proxy.cut();
  await shows(`${north} .status`, /^OFFLINE/, 30_000);
  await shows('#t-offline', /^1$/);
  await screenshot('hub-dashboard-2-offline');
  // The filter and "problems only" find it; a filter that matches nothing empties the table.
  await page.check('#problems');
  await shows(`${north} .status`, /^OFFLINE/);
  await page.fill('#filter', 'no-such-venue');
  await page.waitForSelector('#no-venues:not([hidden])', { timeout: 10_000 });
  await page.fill('#filter', 'nor');
  await shows(`${north} .status`, /^OFFLINE/);
  await page.uncheck('#problems');
  await page.fill('#filter', '');

  // Restore: back online with the next heartbeat.
  gate.proxy.restore();
  await shows(`${north} .status`, /^ONLINE/, 30_000);
  await shows('#t-offline', /^0$/);
  await screenshot('hub-dashboard-3-back-online');

  // Replay from the page: the receiver now answers 200 and gets the same webhook-id again.
  answer = 200;
  await page.click(`${failedRow}[data-message-id="${messageId}"] button.replay`);
  await waitFor(
    () => receiver.received.some((r) => r.id === messageId && r.at > 0 && receiver.received.indexOf(r) >= 3),
    {
      timeoutMs: 15_000,
      message: 'the receiver gets the replayed message',
    },
  );
  const replayed = receiver.received.filter((r) => r.id === messageId);
  assert.equal(replayed.length, 4, 'three failed attempts and the replay');
  assert.equal(replayed[3]?.json.type, 'checkin.created');
  await shows(`${failedRow}[data-message-id="${messageId}"] .replay-state`, /replay delivered/);
  await shows(`#endpoints-body tr[data-endpoint-id="${ep.body.id}"] .rate`, /%/);
  // Delivering again, with failures among its recent attempts: degraded, no longer failing.
  await shows(`#endpoints-body tr[data-endpoint-id="${ep.body.id}"] .state`, /^DEGRADED/);
  await screenshot('hub-dashboard-4-replayed');

  // Forgetting the key locks the page again.
  await page.click('#forget');
  await page.waitForSelector('#login:not([hidden])');
});
