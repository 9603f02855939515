import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserSkipReason, startBrowser } from '../harness/browser.ts';
import { SCANNER_TOKEN } from '../harness/gatesync.ts';
import { waitFor } from '../harness/index.ts';
import { issueTickets, startVenue } from '../harness/venue.ts';

test('gate status page: asks for a token, shows ONLINE and the tickets, lists rejects, and turns OFFLINE while the link is cut', {
  skip: browserSkipReason() ?? false,
  timeout: 180_000,
}, async (t) => {
  const started = Date.now();
  const step = (what: string) => t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
  const v = await startVenue(t, { gates: ['north'] });
  const gate = v.gates[0];
  assert.ok(gate);
  const qrs = [...(await issueTickets(v, 5)).values()];
  const [qr0, qr1, qr2] = qrs as [string, string, string];
  const browser = await startBrowser(t);
  const { page, screenshot } = browser;
  const text = async (selector: string) => ((await page.textContent(selector)) ?? '').trim();
  // The page refreshes once a second: poll what it shows, with a deadline.
  const shows = (selector: string, want: string | RegExp, timeoutMs = 10_000) =>
    waitFor(
      async () => {
        const got = await text(selector);
        return typeof want === 'string' ? got === want : want.test(got);
      },
      { timeoutMs, intervalMs: 100, message: `${selector} shows ${String(want)}` },
    );
  const stored = () => page.evaluate('sessionStorage.getItem("gatesync.scannerToken")');

  try {
    // The page holds no data of its own: it asks for a token first.
    const res = await page.goto(`${gate.agent.url}/status`);
    assert.equal(res?.status(), 200);
    assert.match(res?.headers()['content-security-policy'] ?? '', /default-src 'none'/);
    await page.waitForSelector('#login:not([hidden])');
    assert.equal(await text('#tickets-held'), '–');

    // A wrong token is refused with a clear message, and the form comes back.
    await page.fill('#token', 'not-a-scanner-token');
    await page.click('#login button[type="submit"]');
    await shows('#login-error', /did not accept that token.*not a scanner token.*401/);
    assert.equal(await page.isVisible('#login'), true);
    assert.equal(await stored(), null, 'a refused token is not kept');
    await screenshot('agent-status-1-wrong-token');
    step('wrong token refused');

    await page.fill('#token', SCANNER_TOKEN);
    await page.click('#login button[type="submit"]');
    await page.waitForSelector('#banner[data-state="online"]', { timeout: 10_000 });
    assert.equal(await text('#banner-title'), 'ONLINE');
    assert.equal(await page.isVisible('#login'), false);
    await shows('#tickets-held', '5');
    assert.match(await text('#gate-name'), /gate north/);
    assert.equal(await stored(), SCANNER_TOKEN, 'the token is kept in the tab');
    await screenshot('agent-status-2-online');
    step('online, 5 tickets');

    // Scans, three of them rejected: the rejects appear newest first, with their reasons.
    const forged = qr1.slice(0, -4) + (qr1.endsWith('AAAA') ? 'BBBB' : 'AAAA');
    assert.equal((await gate.agent.scan(qr0)).decision, 'admit');
    assert.equal((await gate.agent.scan(qr0)).reason, 'already_used');
    assert.equal((await gate.agent.scan('hello world')).reason, 'malformed');
    assert.equal((await gate.agent.scan(forged)).reason, 'bad_signature');
    await waitFor(async () => (await page.locator('#rejects-body tr').count()) === 3, {
      message: 'three rejects listed',
    });
    const reasons = await page.locator('#rejects-body td.reason .code').allTextContents();
    assert.deepEqual(reasons, ['bad_signature', 'malformed', 'already_used']);
    assert.match(await text('#rejects-body tr:last-child'), /T0.*Ada Lovelace/);
    assert.equal(await page.isVisible('#no-rejects'), false);
    await shows('#scans-per-minute', '4');
    assert.match(await text('#scans-split'), /1 admitted, 3 rejected/);
    await screenshot('agent-status-3-rejects');
    step('rejects listed');

    // Cut the link: the banner turns OFFLINE (the agent notices through its NATS pings), and a scan
    // made meanwhile waits in the outbox.
    gate.proxy.cut();
    await page.waitForSelector('#banner[data-state="offline"]', { timeout: 20_000 });
    assert.equal(await text('#banner-title'), 'OFFLINE');
    assert.equal((await gate.agent.scan(qr2)).decision, 'admit');
    await shows('#checkins-unsent', '1');
    assert.match(await text('#oldest-unsent'), /Oldest waiting for \d+ s/);
    await screenshot('agent-status-4-offline');
    step('offline');

    // Restore: the banner clears and the outbox drains.
    gate.proxy.restore();
    await page.waitForSelector('#banner[data-state="online"]', { timeout: 30_000 });
    await shows('#checkins-unsent', '0', 20_000);
    assert.equal(gate.agent.store.outboxStats().depth, 0);
    await screenshot('agent-status-5-back-online');
    step('online again');

    // Forgetting the token locks the page again.
    await page.click('#forget');
    await page.waitForSelector('#login:not([hidden])');
    assert.equal(await stored(), null);
  } finally {
    await browser.close();
  }
});
