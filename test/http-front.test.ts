import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { request } from 'undici';
import { plainScan } from '../gate-agent/http-front.ts';
import { hashToken } from '../shared/http.ts';
import { SCANNER_TOKEN, startHubEnv, startTestAgent, ticketBody } from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';

const tokens = new Map([[hashToken(SCANNER_TOKEN), 's1']]);
const json = { 'content-type': 'application/json', authorization: `Bearer ${SCANNER_TOKEN}` };

test('the HTTP front takes exactly the scans the route schema accepts, from a known scanner, and forwards the rest', () => {
  const take = (headers: Record<string, string>, body: string) =>
    plainScan(tokens, headers, Buffer.from(body));
  assert.deepEqual(take(json, '{"code":"T1"}'), { code: 'T1', direction: '', scanner: 's1' });
  assert.deepEqual(take(json, '{"code":"T1","direction":"out","scanner":"s1"}'), {
    code: 'T1',
    direction: 'out',
    scanner: 's1',
  });
  assert.deepEqual(
    take({ ...json, 'content-type': 'application/json; charset=utf-8' }, '{"code":"T1"}')?.code,
    'T1',
  );
  const forwarded: [string, Record<string, string>, string][] = [
    ['no token', { 'content-type': 'application/json' }, '{"code":"T1"}'],
    ['unknown token', { ...json, authorization: 'Bearer not-a-scanner-token-at-all' }, '{"code":"T1"}'],
    ['basic auth', { ...json, authorization: 'Basic czE6eA==' }, '{"code":"T1"}'],
    ['text body', { ...json, 'content-type': 'text/plain' }, '{"code":"T1"}'],
    ['json-like type', { ...json, 'content-type': 'application/json-patch+json' }, '{"code":"T1"}'],
    ['bad json', json, '{"code":'],
    ['array', json, '[{"code":"T1"}]'],
    ['null', json, 'null'],
    ['extra field', json, '{"code":"T1","gate":"g"}'],
    ['prototype key', json, '{"code":"T1","__proto__":{"x":1}}'],
    ['empty code', json, '{"code":""}'],
    ['long code', json, JSON.stringify({ code: 'x'.repeat(1025) })],
    ['number code', json, '{"code":5}'],
    ['no code', json, '{"direction":"in"}'],
    ['bad direction', json, '{"code":"T1","direction":"sideways"}'],
    ['another scanner', json, '{"code":"T1","scanner":"s2"}'],
  ];
  for (const [label, headers, body] of forwarded) assert.equal(take(headers, body), undefined, label);
});

test('behind the HTTP front, scans answer as the app does, the app answers the rest, and a stop answers every scan in flight', async (t) => {
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-front-' });
  const tickets = await hub.api<{ results: { ticket: { qr: string } }[] }>('/v1/venues/v1/tickets:batch', {
    body: { tickets: Array.from({ length: 300 }, (_, i) => ticketBody({ id: `F${i}` })) },
  });
  assert.equal(tickets.status, 200, JSON.stringify(tickets.body));
  const qrs = tickets.body.results.map((x) => x.ticket.qr);
  const start = (agentId: string, httpThread: boolean) =>
    startTestAgent({
      natsUrl: nats.url,
      venue: 'v1',
      agentId,
      dbPath: join(dir, `${agentId}.db`),
      trusted: keys.trusted,
      env: { GATESYNC_AGENT_HTTP_THREAD: String(httpThread) },
    });
  const front = await start('front', true);
  const plain = await start('plain', false);
  defer(() => plain.stop());
  await waitFor(() => front.store.ticketCount() === 300 && plain.store.ticketCount() === 300, {
    message: 'both agents hold the tickets',
  });

  // The same requests to both: the same statuses, the same answers (ids and times aside).
  const shape = (body: unknown) => {
    const { checkin_id, scanned_at, seq, ticket, ...rest } = body as Record<string, unknown>;
    return {
      ...rest,
      checkin_id: typeof checkin_id,
      scanned_at: typeof scanned_at,
      seq: typeof seq,
      ticket: ticket === undefined ? undefined : Object.keys(ticket as object),
    };
  };
  // Each agent scans its own tickets (k = 0 or 100): they share a venue, so one's admission reaches the other.
  const cases = (k: number): [string, string, Record<string, string>, string | undefined][] => [
    ['admit', '/v1/scans', json, JSON.stringify({ code: qrs[k + 0], direction: 'in' })],
    ['already used', '/v1/scans', json, JSON.stringify({ code: qrs[k + 0] })],
    ['unknown code', '/v1/scans', json, JSON.stringify({ code: 'NOPE' })],
    ['malformed json', '/v1/scans', json, '{"code":'],
    ['extra field', '/v1/scans', json, JSON.stringify({ code: qrs[k + 1], extra: 1 })],
    ['wrong scanner', '/v1/scans', json, JSON.stringify({ code: qrs[k + 1], scanner: 's9' })],
    ['no token', '/v1/scans', { 'content-type': 'application/json' }, JSON.stringify({ code: qrs[k + 1] })],
    ['too large', '/v1/scans', json, JSON.stringify({ code: 'x'.repeat(20_000) })],
    ['preview', `/v1/tickets/${encodeURIComponent(qrs[k + 2] as string)}`, json, undefined],
    ['status page', '/', {}, undefined],
    ['not found', '/nowhere', json, undefined],
  ];
  const [plainCases, frontCases] = [cases(0), cases(100)];
  for (let c = 0; c < plainCases.length; c++) {
    const answers = [];
    for (const [agent, list] of [
      [plain, plainCases],
      [front, frontCases],
    ] as const) {
      const [, path, headers, body] = list[c] as [string, string, Record<string, string>, string | undefined];
      const res = await request(agent.url + path, {
        method: body === undefined ? 'GET' : 'POST',
        headers,
        ...(body === undefined ? {} : { body }),
      });
      const text = await res.body.text();
      const type = String(res.headers['content-type']);
      answers.push({
        status: res.statusCode,
        type,
        body: type.startsWith('application/json') ? shape(JSON.parse(text)) : text.length > 0,
      });
    }
    assert.deepEqual(answers[1], answers[0], plainCases[c]?.[0]);
  }
  assert.equal(front.store.checkinCount(), plain.store.checkinCount(), 'the same check-ins recorded');

  // A stop while 64 scans are in flight: every one gets its answer, and every admitted one is stored.
  const inFlight = qrs.slice(10, 74).map((code) =>
    request(`${front.url}/v1/scans`, { method: 'POST', headers: json, body: JSON.stringify({ code }) }).then(
      async (res) => ({ status: res.statusCode, body: (await res.body.json()) as { checkin_id?: string } }),
      (err: unknown) => ({ status: 0, body: { error: String(err) } as { checkin_id?: string } }),
    ),
  );
  await new Promise((resolve) => setImmediate(resolve));
  const stopped = front.stop();
  const answered = await Promise.all(inFlight);
  await stopped;
  const ok = answered.filter((a) => a.status === 200);
  assert.ok(ok.length > 0, 'some scans were taken before the stop');
  for (const a of answered) assert.ok(a.status === 200 || a.status === 0, `answered ${a.status}`);
  const { TicketStore } = await import('../gate-agent/ticket-store.ts');
  const store = new TicketStore(join(dir, 'front.db'));
  t.after(() => store.close());
  for (const a of ok) assert.ok(store.hasCheckin(a.body.checkin_id as string), 'an answered scan is stored');
});
