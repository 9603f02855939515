/**
 * From a review of the gate agent's scan path (in-memory presence and tickets, throttled sent watermark,
 * fdatasync, the HTTP front thread). The Connection: close, HEAD, restarted-thread and same-millisecond
 * tests each failed on the code they were written against (4163d32) and pass since the fixes; the others
 * check behaviour the review found sound.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { type TestContext, test } from 'node:test';
import type { Worker } from 'node:worker_threads';
import { request } from 'undici';
import { buildAgentHttp, scanAnswerOf } from '../gate-agent/http-api.ts';
import { HttpFront } from '../gate-agent/http-front.ts';
import { createAgentMetrics } from '../gate-agent/metrics.ts';
import { ScanService } from '../gate-agent/scan-service.ts';
import { TicketStore } from '../gate-agent/ticket-store.ts';
import { WalSync } from '../gate-agent/wal-sync.ts';
import { EVENT_SCHEMA_VERSION, type TicketEvent } from '../shared/events.ts';
import { hashToken } from '../shared/http.ts';
import { makeKeys, SCANNER_TOKEN, startTestAgent, testLogger } from './harness/gatesync.ts';
import { startNats, tmpDir, waitFor } from './harness/index.ts';

const json = { 'content-type': 'application/json', authorization: `Bearer ${SCANNER_TOKEN}` };

/** Two agents of one venue, with and without the HTTP front thread, stopped when the test ends. */
async function frontAndPlain(t: TestContext, prefix: string) {
  const dir = await tmpDir(prefix);
  const nats = await startNats();
  const trusted = makeKeys(dir).trusted;
  const start = (agentId: string, httpThread: boolean) =>
    startTestAgent({
      natsUrl: nats.url,
      venue: 'v1',
      agentId,
      dbPath: join(dir, `${agentId}.db`),
      trusted,
      env: { GATESYNC_AGENT_HTTP_THREAD: String(httpThread) },
    });
  const front = await start('front', true);
  const plain = await start('plain', false);
  t.after(async () => {
    await front.stop();
    await plain.stop();
    await nats.cleanup();
    rmSync(dir, { recursive: true, force: true });
  });
  return { front, plain };
}

/** One raw HTTP exchange on a fresh connection: status, headers (lower-cased) and body as sent. */
async function raw(
  port: number,
  head: string,
  body = '',
  opts: { waitContinue?: boolean; closeWithinMs?: number } = {},
): Promise<{
  status: number;
  headers: Record<string, string>;
  body: string;
  closedByServer: boolean;
}> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    let continued = false;
    let closedByServer = true;
    socket.setEncoding('latin1');
    socket.on('connect', () => {
      socket.write(`${head}\r\n`);
      if (!opts.waitContinue) socket.write(body);
    });
    socket.on('data', (chunk: string) => {
      data += chunk;
      if (opts.waitContinue && !continued && data.startsWith('HTTP/1.1 100')) {
        continued = true;
        data = data.slice(data.indexOf('\r\n\r\n') + 4);
        socket.write(body);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => {
      const end = data.indexOf('\r\n\r\n');
      const lines = data.slice(0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines.slice(1)) {
        const i = line.indexOf(':');
        headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({
        status: Number(lines[0]?.split(' ')[1]),
        headers,
        body: data.slice(end + 4),
        closedByServer,
      });
    });
    setTimeout(() => {
      closedByServer = false;
      socket.destroy();
    }, opts.closeWithinMs ?? 5_000).unref();
  });
}

/** What must match between the front and the app alone: status, type, length, and the body's gist. */
function gist(r: Awaited<ReturnType<typeof raw>>) {
  let body: unknown = r.body.length;
  if ((r.headers['content-type'] ?? '').startsWith('application/json') && r.body.length > 0) {
    const v = JSON.parse(r.body) as { error?: { code: string }; decision?: string; reason?: string };
    body = v.error?.code ?? `${v.decision}/${v.reason ?? ''}`;
  }
  return {
    status: r.status,
    type: r.headers['content-type'],
    length: r.headers['content-length'],
    body,
  };
}

test('behind the HTTP front, edge requests (query string, chunked, 100-continue, other methods, charsets) answer as the app alone does', async (t) => {
  const { front, plain } = await frontAndPlain(t, 'gs-review-front-');
  const auth = `Authorization: Bearer ${SCANNER_TOKEN}`;
  const scan = '{"code":"NOPE"}';
  const post = (path: string, extra: string, body: string) =>
    `POST ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}\r\n${extra}Content-Length: ${Buffer.byteLength(body)}\r\n`;
  const cases: [string, string, string, { waitContinue?: boolean }?][] = [
    ['query string', post('/v1/scans?x=1', 'Content-Type: application/json\r\n', scan), scan],
    [
      'chunked',
      `POST /v1/scans HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n`,
      `${scan.length.toString(16)}\r\n${scan}\r\n0\r\n\r\n`,
    ],
    [
      '100-continue',
      post('/v1/scans', 'Content-Type: application/json\r\nExpect: 100-continue\r\n', scan),
      scan,
      { waitContinue: true },
    ],
    ['charset utf-16', post('/v1/scans', 'Content-Type: application/json; charset=utf-16\r\n', scan), scan],
    ['upper-case type', post('/v1/scans', 'Content-Type: APPLICATION/JSON; charset=utf-8\r\n', scan), scan],
    ['BOM', post('/v1/scans', 'Content-Type: application/json\r\n', `\uFEFF${scan}`), `\uFEFF${scan}`],
    [
      'lone surrogate',
      post('/v1/scans', 'Content-Type: application/json\r\n', '{"code":"\\ud800"}'),
      '{"code":"\\ud800"}',
    ],
    ['GET of the scan route', `GET /v1/scans HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}\r\n`, ''],
    ['PURGE', `PURGE /v1/scans HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${auth}\r\n`, ''],
    ['healthz', 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n', ''],
    [
      'too large, chunked',
      `POST /v1/scans HTTP/1.1\r\nHost: x\r\n${auth}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n`,
      `5000\r\n${'x'.repeat(0x5000)}\r\n0\r\n\r\n`,
    ],
  ];
  for (const [label, head, body, opts] of cases) {
    const a = gist(await raw(plain.port, head, body, opts));
    const b = gist(await raw(front.port, head, body, opts));
    assert.deepEqual(b, a, label);
  }
});

test('behind the HTTP front, a forwarded request whose client asks Connection: close (or speaks HTTP/1.0) is closed after its answer', {}, async (t) => {
  const { front, plain } = await frontAndPlain(t, 'gs-review-conn-');
  for (const head of [
    'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n',
    'GET /healthz HTTP/1.0\r\n',
  ]) {
    const a = await raw(plain.port, head, '', { closeWithinMs: 1_000 });
    const b = await raw(front.port, head, '', { closeWithinMs: 1_000 });
    assert.equal(a.headers.connection?.toLowerCase(), 'close', `app alone: ${head}`);
    assert.ok(a.closedByServer, `the app alone closes: ${head}`);
    assert.equal(b.headers.connection?.toLowerCase(), 'close', `front: ${head}`);
    assert.ok(b.closedByServer, `the front closes: ${head}`);
  }
});

test('behind the HTTP front, HEAD answers carry the Content-Length the app gives', {}, async (t) => {
  const { front, plain } = await frontAndPlain(t, 'gs-review-head-');
  for (const path of ['/healthz', '/openapi.json', '/']) {
    const head = `HEAD ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n`;
    const a = gist(await raw(plain.port, head));
    const b = gist(await raw(front.port, head));
    assert.deepEqual(b, a, `HEAD ${path}`);
  }
});

test('a restarted HTTP front thread never gets answers meant for the requests of the one that died', {}, async (t) => {
  const dir = await tmpDir('gs-review-restart-');
  const path = join(dir, 'a.db');
  const store = new TicketStore(path);
  const walSync = new WalSync(path);
  await walSync.sync();
  const scans = new ScanService({
    store,
    walSync,
    venue: 'v1',
    agent: 'a1',
    gate: 'a1',
    reentry: false,
    trustedKeys: new Map(),
  });
  const logger = testLogger('review-restart');
  const metrics = createAgentMetrics();
  const scannerTokens = new Map([[hashToken(SCANNER_TOKEN), 's1']]);
  const app = buildAgentHttp({
    logger,
    metrics,
    scans,
    scannerTokens,
    status: () => {
      throw new Error('not used');
    },
    notReadyReason: () => undefined,
  });
  // The real scan answer, held for codes starting HOLD until the test lets it go.
  const real = scanAnswerOf(app);
  const held = new Map<string, () => void>();
  const answered = new Map<string, string>();
  const front = new HttpFront({
    app,
    answerScan: async (body, scanner) => {
      if (body.code.startsWith('HOLD')) await new Promise<void>((go) => held.set(body.code, go));
      const answer = await real(body, scanner);
      answered.set(body.code, answer.checkin_id);
      return answer;
    },
    answerError: () => ({ status: 500, body: { error: { code: 'internal', message: 'x' } } }),
    logger,
    host: '127.0.0.1',
    port: 0,
    bodyLimit: 16 * 1024,
    scannerTokens,
  });
  const port = await front.start();
  t.after(async () => {
    for (const go of held.values()) go();
    await front.stop();
    await app.close();
    walSync.close();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const scan = (code: string) =>
    request(`http://127.0.0.1:${port}/v1/scans`, {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ code }),
    }).then(
      async (res) => ({ status: res.statusCode, body: (await res.body.json()) as { checkin_id: string } }),
      (err: unknown) => ({ status: 0, body: { checkin_id: String(err) } }),
    );

  // A's scan is taken by the first thread (its request 1) and held; the thread dies.
  const a = scan('HOLD-A');
  await waitFor(() => held.has('HOLD-A'), { message: 'A reached the main thread' });
  const worker = (front as unknown as { worker: Worker }).worker;
  await worker.terminate();
  assert.equal((await a).status, 0, "A's connection died with its thread");
  // The thread is started again on the same port (a TCP connect opens no request).
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect(port, '127.0.0.1');
        s.on('connect', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      }),
    { message: 'the front listens again' },
  );
  // B is request 1 of the new thread. A's answer arrives first.
  const b = scan('HOLD-B');
  await waitFor(() => held.has('HOLD-B'), { message: 'B reached the main thread' });
  held.get('HOLD-A')?.();
  await waitFor(() => answered.has('HOLD-A'), { message: 'A answered by the main thread' });
  await new Promise((resolve) => setTimeout(resolve, 100));
  held.get('HOLD-B')?.();
  const got = await b;
  await waitFor(() => answered.has('HOLD-B'), { message: 'B answered by the main thread' });
  assert.equal(got.status, 200);
  assert.notEqual(got.body.checkin_id, answered.get('HOLD-A'), "B's client was given A's answer");
  assert.equal(got.body.checkin_id, answered.get('HOLD-B'), "B gets B's answer, not A's");
});

const admission = {
  agent: 'a',
  venue: 'v',
  gate: 'g',
  reason: null,
  scanner: 's',
  method: 'qr' as const,
  unsynced_ticket: false,
  decision: 'admit' as const,
};

function ticketEvent(id: string, rev: number): TicketEvent {
  return {
    v: EVENT_SCHEMA_VERSION,
    type: 'ticket.issued',
    id: `E${id}${rev}`,
    at: 1000 + rev,
    rev,
    ticket: {
      id,
      venue: 'v',
      holder: `h${rev}`,
      tier: 'GA',
      seat: null,
      gates: [],
      valid_from: 0,
      valid_until: 10,
      status: 'valid',
      revoked_reason: null,
      issued_at: 1,
      updated_at: 1,
      qr: `GS1.${id}.${rev}`,
    },
  };
}

test('the store: nested transactions keep who is inside and the tickets equal to what a re-open reads from disk', async (t) => {
  const dir = await tmpDir('gs-review-nested-');
  const path = join(dir, 's.db');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = new TicketStore(path);
  const ids = ['t1', 't2', 't3', 't4'];
  const view = (s: TicketStore) =>
    ids.map((id) => [
      id,
      s.getPresence(id)?.inside,
      s.getPresence(id)?.last_checkin_id,
      s.getTicket(id)?.rev,
    ]);
  store.applyTicketEvents('S', [{ seq: 1, event: ticketEvent('t1', 1) }], 1);
  // Inner rolled back, outer committed: only the outer's changes stay.
  store.transaction(() => {
    store.recordCheckin({ ...admission, id: 'c1', ticket_id: 't1', direction: 'in', scanned_at: 10 });
    assert.throws(() =>
      store.transaction(() => {
        store.recordCheckin({ ...admission, id: 'c2', ticket_id: 't1', direction: 'out', scanned_at: 11 });
        store.recordCheckin({ ...admission, id: 'c3', ticket_id: 't2', direction: 'in', scanned_at: 11 });
        store.applyTicketEvents('S', [{ seq: 2, event: ticketEvent('t2', 1) }], 2);
        throw new Error('inner fails');
      }),
    );
    store.applyVenueCheckins(
      'GS_CHECKINS',
      [{ id: 'p1', ticket_id: 't3', direction: 'in', decision: 'admit', scanned_at: 12 }],
      1,
    );
  });
  // Inner committed, outer rolled back: both undone.
  assert.throws(() =>
    store.transaction(() => {
      store.transaction(() => {
        store.recordCheckin({ ...admission, id: 'c4', ticket_id: 't1', direction: 'out', scanned_at: 20 });
        store.recordCheckin({ ...admission, id: 'c5', ticket_id: 't4', direction: 'in', scanned_at: 20 });
        store.applyTicketEvents('S', [{ seq: 3, event: ticketEvent('t1', 2) }], 3);
        store.applyVenueCheckins(
          'GS_CHECKINS',
          [{ id: 'p2', ticket_id: 't3', direction: 'out', decision: 'admit', scanned_at: 21 }],
          2,
        );
      });
      throw new Error('outer fails');
    }),
  );
  const live = view(store);
  assert.deepEqual(live, [
    ['t1', true, 'c1', 1],
    ['t2', undefined, undefined, undefined],
    ['t3', true, 'p1', undefined],
    ['t4', undefined, undefined, undefined],
  ]);
  // A second connection reads the same file while this one stays open (the maps are never re-read).
  const other = new TicketStore(path);
  t.after(() => other.close());
  assert.deepEqual(view(other), live, 'what the file says');
  store.close();
});

test("the store: an own admission and another gate's at the same millisecond give the same presence before and after a restart", {}, async (t) => {
  const dir = await tmpDir('gs-review-tie-');
  const path = join(dir, 's.db');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const store = new TicketStore(path);
  store.recordCheckin({ ...admission, id: 'own', ticket_id: 'T', direction: 'in', scanned_at: 100 });
  store.applyVenueCheckins(
    'GS_CHECKINS',
    [{ id: 'peer', ticket_id: 'T', direction: 'out', decision: 'admit', scanned_at: 100 }],
    1,
  );
  const before = store.getPresence('T')?.inside;
  store.close();
  const again = new TicketStore(path);
  t.after(() => again.close());
  assert.equal(again.getPresence('T')?.inside, before);
});
