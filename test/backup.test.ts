import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import {
  agentEnv,
  httpJson,
  SCANNER_TOKEN,
  type ScanAnswer,
  spawnAgent,
  startHubEnv,
  ticketBody,
} from './harness/gatesync.ts';
import { startTcpProxy, waitFor } from './harness/index.ts';
import { hubCheckins } from './harness/venue.ts';

const root = new URL('../', import.meta.url).pathname;

/** Runs `gatesync backup` as its own process, without blocking this one (the test keeps scanning). */
function runBackup(
  db: string,
  out: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [join(root, 'bin/gatesync.js'), 'backup', '--db', db, '--out', out],
      {
        cwd: root,
        env: { PATH: process.env.PATH ?? '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

interface Status {
  connected: boolean;
  tickets_held: number;
  checkins_unsent: number;
  checkins_total: number;
}

async function issue(
  hub: { api: <T>(p: string, i: { body: unknown }) => Promise<{ body: T }> },
  n: number,
  prefix: string,
): Promise<string[]> {
  const tickets = Array.from({ length: n }, (_, i) => ticketBody({ id: `${prefix}${i}` }));
  const res = await hub.api<{ results: { ticket?: { qr: string } }[] }>('/v1/venues/v1/tickets:batch', {
    body: { tickets },
  });
  const qrs = res.body.results.map((r) => r.ticket?.qr).filter((q): q is string => q !== undefined);
  assert.equal(qrs.length, n);
  return qrs;
}

async function scan(url: string, code: string): Promise<ScanAnswer> {
  const r = await httpJson<ScanAnswer>(`${url}/v1/scans`, {
    token: SCANNER_TOKEN,
    body: { code, direction: 'in' },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

interface CheckinRow {
  seq: number;
  id: string;
  ticket_id: string | null;
  decision: string;
  scanned_at: number;
}

function readCopy(path: string): {
  tickets: number;
  checkins: CheckinRow[];
  integrity: string;
  mode: string;
} {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return {
      tickets: (db.prepare('SELECT count(*) AS n FROM tickets').get() as { n: number }).n,
      checkins: db
        .prepare('SELECT seq, id, ticket_id, decision, scanned_at FROM checkins ORDER BY seq')
        .all() as CheckinRow[],
      integrity: db.pragma('integrity_check', { simple: true }) as string,
      mode: db.pragma('journal_mode', { simple: true }) as string,
    };
  } finally {
    db.close();
  }
}

test('backup of a running agent while it scans: a verified one-file copy with every ticket and every check-in answered before it', {
  timeout: 120_000,
}, async (t) => {
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-backup-' });
  const dbPath = join(dir, 'agent.db');
  const agent = await spawnAgent(
    agentEnv({ natsUrl: nats.url, venue: 'v1', agentId: 'north', dbPath, trusted: keys.trusted }),
  );
  defer(() => agent.kill9());
  const status = async () =>
    (await httpJson<Status>(`${agent.url}/v1/status`, { token: SCANNER_TOKEN })).body;

  const qrs = await issue(hub, 600, 'B');
  await waitFor(async () => (await status()).tickets_held === 600, {
    timeoutMs: 30_000,
    message: 'agent holds every ticket',
  });

  // Scans answered before the backup starts must all be in the copy.
  const before: string[] = [];
  for (let i = 0; i < 200; i += 10) {
    const answers = await Promise.all(qrs.slice(i, i + 10).map((q) => scan(agent.url, q)));
    for (const a of answers) {
      assert.equal(a.decision, 'admit');
      before.push(a.checkin_id);
    }
  }

  // The agent keeps committing scans (another process, writing to the same file) during the backup.
  let scanning = true;
  let during = 0;
  const background = (async () => {
    // Round and round the unused tickets: admits first, then already_used rejects, all recorded.
    for (let i = 200; scanning; i = i + 4 >= qrs.length ? 200 : i + 4) {
      await Promise.all(qrs.slice(i, i + 4).map((q) => scan(agent.url, q)));
      during += 4;
    }
  })();
  await waitFor(() => during >= 20, { message: 'scans running while the backup starts' });
  const out = join(dir, 'backups', 'north.db');
  const r = await runBackup(dbPath, out);
  scanning = false;
  await background;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, r.stdout);
  assert.match(
    lines[0] as string,
    /written and verified in [\d.]+ s: 600 tickets, (\d+) check-ins \((\d+) unsent\)/,
  );

  const copy = readCopy(out);
  assert.equal(copy.integrity, 'ok');
  assert.equal(copy.mode, 'delete', 'the copy is one self-contained file');
  assert.equal(existsSync(`${out}-wal`), false);
  assert.equal(existsSync(`${out}.partial`), false);
  assert.equal(statSync(out).mode & 0o777, 0o600, 'holder names are not world-readable');
  assert.equal(copy.tickets, 600);
  const ids = new Set(copy.checkins.map((c) => c.id));
  for (const id of before) assert.ok(ids.has(id), `check-in ${id} answered before the backup is in the copy`);
  const reported = /(\d+) check-ins/.exec(lines[0] as string)?.[1];
  assert.equal(Number(reported), copy.checkins.length, 'the summary counts what the copy holds');
  // A snapshot, not a torn copy: the check-ins are exactly the first N the agent recorded.
  copy.checkins.forEach((c, i) => {
    assert.equal(c.seq, i + 1, 'no hole in the copied outbox');
  });

  assert.equal(await agent.stop(), '0', 'the agent was unaffected by the backup and stops cleanly');
  const live = readCopy(dbPath);
  assert.ok(live.checkins.length > copy.checkins.length, 'the agent went on recording during the backup');
  assert.deepEqual(copy.checkins, live.checkins.slice(0, copy.checkins.length));
});

test("a dead kiosk's unsent check-ins: back up its disk's files, restore on a replacement with the same agent id, and the hub gets every check-in once", {
  timeout: 120_000,
}, async (t) => {
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-restore-' });
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: nats.port });
  defer(() => proxy.close());
  const dbPath = join(dir, 'kiosk', 'agent.db');
  const env = agentEnv({ natsUrl: proxy.url, venue: 'v1', agentId: 'north', dbPath, trusted: keys.trusted });
  const dead = await spawnAgent(env);
  defer(() => dead.kill9());
  const status = async (url: string) =>
    (await httpJson<Status>(`${url}/v1/status`, { token: SCANNER_TOKEN })).body;

  const qrs = await issue(hub, 100, 'R');
  await waitFor(async () => (await status(dead.url)).tickets_held === 100, {
    timeoutMs: 30_000,
    message: 'kiosk holds every ticket',
  });
  const online: string[] = [];
  for (const q of qrs.slice(0, 20)) online.push((await scan(dead.url, q)).checkin_id);
  await waitFor(async () => (await status(dead.url)).checkins_unsent === 0, { message: 'online scans sent' });

  // The venue's link goes down; the kiosk keeps admitting and its outbox grows; then the kiosk dies.
  proxy.cut();
  await waitFor(async () => !(await status(dead.url)).connected, { message: 'kiosk sees the link down' });
  const offline: string[] = [];
  for (const q of qrs.slice(20, 50)) offline.push((await scan(dead.url, q)).checkin_id);
  assert.equal((await status(dead.url)).checkins_unsent, 30);
  await dead.kill9();

  // Its disk is pulled: the main file and the WAL (recent commits) are copied off; no -shm.
  const rescue = join(dir, 'rescue');
  mkdirSync(rescue);
  copyFileSync(dbPath, join(rescue, 'agent.db'));
  if (existsSync(`${dbPath}-wal`)) copyFileSync(`${dbPath}-wal`, join(rescue, 'agent.db-wal'));
  const restored = join(dir, 'replacement', 'agent.db');
  const r = await runBackup(join(rescue, 'agent.db'), restored);
  assert.equal(r.code, 0, r.stderr);
  // At least the 30 made offline are unsent. The sent watermark is written at most every 250 ms, so a
  // kill within that of the last ack leaves some of the 20 sent ones above it: the replacement sends
  // them again, and the stream refuses them (still counted once at the hub, below).
  const unsent = Number(/100 tickets, 50 check-ins \((\d+) unsent\)/.exec(r.stdout)?.[1]);
  assert.ok(unsent >= 30 && unsent <= 50, r.stdout);

  // The replacement kiosk keeps the agent id (and so its NATS user) and starts from the restored file.
  const replacement = await spawnAgent({ ...env, GATESYNC_NATS_URL: nats.url, GATESYNC_DB_PATH: restored });
  defer(() => replacement.kill9());
  await waitFor(async () => (await status(replacement.url)).checkins_unsent === 0, {
    timeoutMs: 30_000,
    message: 'restored outbox drained',
  });
  const atHub = await waitFor(
    async () => {
      const all = await hubCheckins(hub);
      return all.length >= 50 ? all : undefined;
    },
    { timeoutMs: 20_000, message: 'hub holds every check-in' },
  );
  const hubIds = atHub.map((c) => c.id);
  assert.equal(new Set(hubIds).size, hubIds.length, 'nothing counted twice');
  assert.deepEqual(new Set(hubIds), new Set([...online, ...offline]));
  // And it still knows who is inside: a second entry is refused.
  assert.equal((await scan(replacement.url, qrs[25] as string)).reason, 'already_used');
  assert.equal((await status(replacement.url)).tickets_held, 100);
});
