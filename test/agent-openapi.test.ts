import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SCANNER_TOKEN } from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';
import { type Call, OpenApiChecker, type OpenApiDoc } from './harness/openapi.ts';
import { issueTickets, startVenue } from './harness/venue.ts';

test("every route in the agent's OpenAPI document answers as the document says", async (t) => {
  const v = await startVenue(t, { gates: ['north'] });
  const gate = v.gates[0];
  assert.ok(gate);
  const agent = gate.agent;
  const qrs = [...(await issueTickets(v, 3)).values()];
  const [qr0, qr1] = qrs as [string, string];

  const docRes = await fetch(`${agent.url}/openapi.json`);
  assert.equal(docRes.status, 200, 'the document needs no token');
  const doc = (await docRes.json()) as OpenApiDoc;
  assert.equal(doc.openapi, '3.1.0');

  const checker = new OpenApiChecker(doc, agent.url, SCANNER_TOKEN);
  const call = (c: Call) => checker.call(c);

  // Scans: admits, rejects of several kinds, and each documented error.
  await call({ method: 'POST', path: '/v1/scans', body: { code: qr0 }, expect: 200 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: qr0, direction: 'in' }, expect: 200 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: 'hello world' }, expect: 200 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: 'T404' }, expect: 200 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: qr0, direction: 'sideways' }, expect: 400 });
  await call({ method: 'POST', path: '/v1/scans', rawBody: '{"code":', expect: 400 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: qr0 }, token: null, expect: 401 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: qr0 }, token: 'nope', expect: 401 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: qr0, scanner: 'other' }, expect: 403 });
  await call({ method: 'POST', path: '/v1/scans', body: { code: 'x'.repeat(20_000) }, expect: 413 });
  await call({
    method: 'POST',
    path: '/v1/scans',
    rawBody: qr0,
    contentType: 'text/plain',
    expect: 415,
  });

  // Previews.
  await call({ method: 'GET', path: `/v1/tickets/${qr1}`, expect: 200 });
  await call({ method: 'GET', path: `/v1/tickets/${qr0}?direction=out`, expect: 200 });
  await call({ method: 'GET', path: '/v1/tickets/T404', expect: 200 });
  await call({ method: 'GET', path: `/v1/tickets/${qr1}?direction=up`, expect: 400 });
  await call({ method: 'GET', path: `/v1/tickets/${qr1}?extra=1`, expect: 400 });
  await call({ method: 'GET', path: `/v1/tickets/${qr1}`, token: null, expect: 401 });

  // Status, online, with the rejects above listed newest first.
  const online = await call({ method: 'GET', path: '/v1/status', expect: 200 });
  const s = online.body as {
    connected: boolean;
    scans_per_minute: number;
    last_sync_at: string | null;
    recent_rejects: { reason: string }[];
  };
  assert.equal(s.connected, true);
  assert.equal(s.scans_per_minute, 4);
  assert.ok(s.last_sync_at !== null);
  assert.deepEqual(
    s.recent_rejects.map((r) => r.reason),
    ['unknown', 'malformed', 'already_used'],
  );
  await call({ method: 'GET', path: '/v1/status', token: null, expect: 401 });

  // Status offline: nullable fields take their other branch (an unsent check-in, say).
  gate.proxy.cut();
  await waitFor(() => !agent.link.connected, { message: 'the agent noticed the cut' });
  await call({ method: 'POST', path: '/v1/scans', body: { code: qrs[2] }, expect: 200 });
  const offline = await call({ method: 'GET', path: '/v1/status', expect: 200 });
  const o = offline.body as { connected: boolean; checkins_unsent: number; oldest_unsent_age_ms: number };
  assert.equal(o.connected, false);
  await call({ method: 'GET', path: '/readyz', token: null, expect: 503 });
  assert.equal(o.checkins_unsent, 1);
  assert.equal(typeof o.oldest_unsent_age_ms, 'number');
  gate.proxy.restore();
  await waitFor(() => agent.link.connected, { message: 'the agent reconnected' });

  await call({ method: 'GET', path: '/metrics', expect: 200 });
  await call({ method: 'GET', path: '/metrics', token: null, expect: 401 });
  await call({ method: 'GET', path: '/healthz', token: null, expect: 200 });
  await call({ method: 'GET', path: '/readyz', token: null, expect: 200 });
  await call({ method: 'GET', path: '/status', token: null, expect: 200 });
  await call({ method: 'GET', path: '/openapi.json', token: null, expect: 200 });

  // Last: with the store closed, a scan cannot be recorded (500) and the agent is not ready (503).
  await waitFor(() => agent.store.outboxStats().depth === 0, { message: 'the outbox drained first' });
  agent.store.close();
  await call({ method: 'POST', path: '/v1/scans', body: { code: qrs[2] }, expect: 500 });
  await call({ method: 'GET', path: '/readyz', token: null, expect: 503 });

  assert.deepEqual(checker.unexercised(), [], 'every documented operation was called');
});

test("the agent's /metrics has the scan, decision, outbox, sync and forged-event metrics", async (t) => {
  const v = await startVenue(t, { gates: ['north'] });
  const agent = v.gates[0]?.agent;
  assert.ok(agent);
  const [qr] = [...(await issueTickets(v, 1)).values()];
  await agent.scan(qr as string);
  await agent.scan(qr as string);
  const text = (await agent.api<string>('/metrics')).body;
  for (const [name, type] of [
    ['gatesync_agent_scan_duration_seconds', 'histogram'],
    ['gatesync_agent_scan_decisions_total', 'counter'],
    ['gatesync_agent_outbox_depth', 'gauge'],
    ['gatesync_agent_outbox_oldest_unsent_age_seconds', 'gauge'],
    ['gatesync_agent_sync_lag_seconds', 'gauge'],
    ['gatesync_agent_ticket_events_rejected_total', 'counter'],
    ['gatesync_agent_nats_connected', 'gauge'],
    ['gatesync_agent_tickets_held', 'gauge'],
  ] as const) {
    assert.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), `${name} is a ${type}`);
  }
  assert.match(text, /^gatesync_agent_scan_decisions_total\{decision="admit",reason=""\} 1$/m);
  assert.match(text, /^gatesync_agent_scan_decisions_total\{decision="reject",reason="already_used"\} 1$/m);
  assert.match(text, /^gatesync_agent_scan_duration_seconds_count 2$/m);
  assert.match(text, /^gatesync_agent_tickets_held 1$/m);
  assert.match(text, /^gatesync_agent_nats_connected 1$/m);
});
