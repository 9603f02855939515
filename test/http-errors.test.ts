import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { STREAMS } from '../shared/subjects.ts';
import {
  ADMIN_KEY,
  httpJson,
  SCANNER_TOKEN,
  startHubEnv,
  startTestAgent,
  ticketBody,
} from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';

interface ErrorBody {
  error: { code: string; message: string; details?: Record<string, unknown> };
}

function assertError(
  res: { status: number; body: unknown },
  status: number,
  code: string,
  label: string,
): void {
  assert.equal(res.status, status, `${label}: status (${JSON.stringify(res.body)})`);
  const body = res.body as ErrorBody;
  assert.equal(typeof body?.error?.message, 'string', `${label}: has a message`);
  assert.ok(body.error.message.length > 0, `${label}: message is not empty`);
  assert.equal(body.error.code, code, `${label}: code`);
  assert.deepEqual(Object.keys(body).sort(), ['error'], `${label}: only the envelope`);
}

test('bad input on every endpoint gets a structured 4xx error, is counted, and changes nothing', async (t) => {
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-http-' });
  const agent = await startTestAgent({
    natsUrl: nats.url,
    venue: 'v1',
    agentId: 'a1',
    dbPath: join(dir, 'a1.db'),
    trusted: keys.trusted,
  });
  defer(() => agent.stop());
  const seed = await hub.api<{ qr: string }>('/v1/venues/v1/tickets', { body: ticketBody({ id: 'SEED' }) });
  await waitFor(() => agent.store.getTicket('SEED'));

  const nc = await connect({ servers: nats.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const ticketMessages = async () => (await jsm.streams.info(STREAMS.tickets)).state.messages;
  const before = await ticketMessages();
  const checkinsBefore = agent.store.checkinCount();

  const H = hub.url;
  const good = ticketBody({ id: 'NEVER' });
  const hubCases: [string, Parameters<typeof httpJson>[1] & { path: string }, number, string][] = [
    ['no token', { path: '/v1/venues/v1/tickets', body: good }, 401, 'unauthorized'],
    [
      'wrong token',
      { path: '/v1/venues/v1/tickets', body: good, token: 'nope-nope-nope-nope-nope-nope' },
      401,
      'unauthorized',
    ],
    [
      'malformed JSON',
      { path: '/v1/venues/v1/tickets', rawBody: '{"holder": ', token: ADMIN_KEY },
      400,
      'invalid_json',
    ],
    [
      'empty JSON body',
      {
        path: '/v1/venues/v1/tickets',
        rawBody: '',
        token: ADMIN_KEY,
        headers: { 'content-type': 'application/json' },
      },
      400,
      'invalid_json',
    ],
    [
      'not JSON',
      {
        path: '/v1/venues/v1/tickets',
        rawBody: 'holder=x',
        token: ADMIN_KEY,
        headers: { 'content-type': 'text/plain' },
      },
      415,
      'unsupported_media_type',
    ],
    [
      'huge body',
      { path: '/v1/venues/v1/tickets', body: { ...good, holder: 'x'.repeat(200_000) }, token: ADMIN_KEY },
      413,
      'payload_too_large',
    ],
    [
      'wrong type',
      { path: '/v1/venues/v1/tickets', body: { ...good, holder: 42 }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'missing field',
      { path: '/v1/venues/v1/tickets', body: { holder: 'x' }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'unknown field',
      { path: '/v1/venues/v1/tickets', body: { ...good, price: 10 }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'bad date',
      { path: '/v1/venues/v1/tickets', body: { ...good, valid_from: 'tomorrow' }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'window backwards',
      {
        path: '/v1/venues/v1/tickets',
        body: { ...good, valid_until: '2000-01-01T00:00:00Z' },
        token: ADMIN_KEY,
      },
      400,
      'validation_failed',
    ],
    [
      'bad ticket id',
      { path: '/v1/venues/v1/tickets', body: { ...good, id: 'a.b' }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'bad venue id',
      { path: '/v1/venues/v.1/tickets', body: good, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'bad gate id',
      { path: '/v1/venues/v1/tickets', body: { ...good, gates: ['north gate'] }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'batch too large',
      {
        path: '/v1/venues/v1/tickets:batch',
        body: { tickets: Array.from({ length: 10_001 }, () => good) },
        token: ADMIN_KEY,
      },
      400,
      'validation_failed',
    ],
    [
      'batch empty',
      { path: '/v1/venues/v1/tickets:batch', body: { tickets: [] }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'batch wrong type',
      { path: '/v1/venues/v1/tickets:batch', body: { tickets: 'all' }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'revoke without reason',
      { path: '/v1/venues/v1/tickets/SEED/revoke', body: {}, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
    [
      'revoke unknown ticket',
      { path: '/v1/venues/v1/tickets/NOPE/revoke', body: { reason: 'x' }, token: ADMIN_KEY },
      404,
      'not_found',
    ],
    ['get bad id', { path: '/v1/venues/v1/tickets/a*b', token: ADMIN_KEY }, 400, 'validation_failed'],
    ['get unknown ticket', { path: '/v1/venues/v1/tickets/NOPE', token: ADMIN_KEY }, 404, 'not_found'],
    ['unknown route', { path: '/v1/nothing', token: ADMIN_KEY }, 404, 'not_found'],
    ['metrics without token', { path: '/metrics' }, 401, 'unauthorized'],
    [
      'api key bad body',
      { path: '/v1/api-keys', body: { name: '' }, token: ADMIN_KEY },
      400,
      'validation_failed',
    ],
  ];
  for (const [label, { path, ...init }, status, code] of hubCases) {
    assertError(await httpJson(H + path, init), status, code, `hub ${label}`);
  }
  // Issue the same id twice: the second is a conflict, not a second ticket.
  assertError(
    await hub.api('/v1/venues/v1/tickets', { body: ticketBody({ id: 'SEED' }) }),
    409,
    'ticket_exists',
    'duplicate id',
  );
  assert.equal(await ticketMessages(), before, 'no hub input error published anything');
  assert.equal((await hub.api<{ status: string }>('/v1/venues/v1/tickets/SEED')).body.status, 'valid');
  const hubMetrics = (await hub.api<string>('/metrics')).body;
  assert.match(hubMetrics, /gatesync_hub_http_errors_total\{code="validation_failed"\} (1[0-9]|[2-9][0-9])/);
  assert.match(hubMetrics, /gatesync_hub_http_errors_total\{code="unauthorized"\} [3-9]/);

  const A = agent.url;
  const scan = { code: seed.body.qr, direction: 'in' };
  const agentCases: [string, Parameters<typeof httpJson>[1] & { path: string }, number, string][] = [
    ['no token', { path: '/v1/scans', body: scan }, 401, 'unauthorized'],
    ['wrong token', { path: '/v1/scans', body: scan, token: 'wrong-token-wrong-token' }, 401, 'unauthorized'],
    [
      'admin key is not a scanner token',
      { path: '/v1/scans', body: scan, token: ADMIN_KEY },
      401,
      'unauthorized',
    ],
    ['malformed JSON', { path: '/v1/scans', rawBody: '{"code":', token: SCANNER_TOKEN }, 400, 'invalid_json'],
    [
      'huge body',
      { path: '/v1/scans', body: { ...scan, code: 'x'.repeat(100_000) }, token: SCANNER_TOKEN },
      413,
      'payload_too_large',
    ],
    [
      'wrong type',
      { path: '/v1/scans', body: { code: 12345 }, token: SCANNER_TOKEN },
      400,
      'validation_failed',
    ],
    [
      'bad direction',
      { path: '/v1/scans', body: { ...scan, direction: 'sideways' }, token: SCANNER_TOKEN },
      400,
      'validation_failed',
    ],
    ['empty code', { path: '/v1/scans', body: { code: '' }, token: SCANNER_TOKEN }, 400, 'validation_failed'],
    [
      'unknown field',
      { path: '/v1/scans', body: { ...scan, force: true }, token: SCANNER_TOKEN },
      400,
      'validation_failed',
    ],
    [
      'bad scanner id',
      { path: '/v1/scans', body: { ...scan, scanner: 'a b' }, token: SCANNER_TOKEN },
      400,
      'validation_failed',
    ],
    [
      "someone else's scanner id",
      { path: '/v1/scans', body: { ...scan, scanner: 's2' }, token: SCANNER_TOKEN },
      403,
      'forbidden',
    ],
    [
      'preview without token',
      { path: `/v1/tickets/${encodeURIComponent(seed.body.qr)}` },
      401,
      'unauthorized',
    ],
    [
      'preview bad direction',
      { path: '/v1/tickets/SEED?direction=up', token: SCANNER_TOKEN },
      400,
      'validation_failed',
    ],
    ['status without token', { path: '/v1/status' }, 401, 'unauthorized'],
    ['metrics without token', { path: '/metrics' }, 401, 'unauthorized'],
    ['unknown route', { path: '/v1/nothing', token: SCANNER_TOKEN }, 404, 'not_found'],
  ];
  for (const [label, { path, ...init }, status, code] of agentCases) {
    assertError(await httpJson(A + path, init), status, code, `agent ${label}`);
  }
  assert.equal(agent.store.checkinCount(), checkinsBefore, 'no agent input error recorded a check-in');
  // The ticket is still admissible: nothing was redeemed by the bad requests.
  assert.equal((await agent.scan(seed.body.qr)).decision, 'admit');
  const agentMetrics = (await agent.api<string>('/metrics')).body;
  assert.match(agentMetrics, /gatesync_agent_http_errors_total\{code="validation_failed"\} [6-9]/);
});
