/**
 * The hub as a child process (`gatesync hub`), so its check-in consumer runs on its own event loop as it
 * would in the cloud, and not on the one the measured agent and the baseline share.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN_KEY, httpJson, type JsonResponse, ticketBody } from '../../test/harness/gatesync.ts';

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** Milliseconds the hub may take to start, and to stop before it is killed. */
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;

export interface HubProcess {
  url: string;
  pid: number;
  api<T = unknown>(path: string, body?: unknown): Promise<JsonResponse<T>>;
  stop(): Promise<void>;
  /** kill -9, for fault tests; resolves when the process is gone. */
  kill9(): Promise<void>;
}

export async function spawnHub(opts: {
  natsUrl: string;
  dataDir: string;
  signingKeyFile: string;
  /** More settings (GATESYNC_*), e.g. webhook timeouts for a test. */
  env?: Record<string, string>;
}): Promise<HubProcess> {
  const child: ChildProcess = spawn(
    process.execPath,
    [
      // BENCH_HUB_NODE_ARGS: node flags for the hub child, e.g. --cpu-prof --cpu-prof-dir=bench-output
      ...(process.env.BENCH_HUB_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
      '--import',
      'tsx',
      join(REPO_ROOT, 'cli/gatesync.ts'),
      'hub',
    ],
    {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        GATESYNC_LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'info',
        GATESYNC_NATS_URL: opts.natsUrl,
        GATESYNC_ADMIN_KEY: ADMIN_KEY,
        GATESYNC_SIGNING_KEY_FILE: opts.signingKeyFile,
        GATESYNC_HUB_PORT: '0',
        GATESYNC_DATA_DIR: opts.dataDir,
        ...opts.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  // A parent that dies without cleaning up must not leave the hub behind.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let out = '';
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => {
      process.removeListener('exit', killOnExit);
      resolve(signal ?? String(code));
    });
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hub did not start:\n${out}`)), START_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      out = (out + chunk.toString()).slice(-20_000);
      // BENCH_HUB_LOG=<file>: keep the hub's whole log, to read after a run (set BENCH_LOG_LEVEL too).
      if (process.env.BENCH_HUB_LOG !== undefined) appendFileSync(process.env.BENCH_HUB_LOG, chunk);
      const m = /"url":"(http:\/\/[^"]+)"[^\n]*"msg":"hub started"/.exec(out);
      if (m?.[1] !== undefined) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    void exited.then((how) => {
      clearTimeout(timer);
      reject(new Error(`hub exited (${how}) before serving:\n${out}`));
    });
  });
  return {
    url,
    pid: child.pid ?? -1,
    api: <T>(path: string, body?: unknown) => httpJson<T>(url + path, { token: ADMIN_KEY, body }),
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Issues tickets `<prefix>0 ... <prefix>(n-1)` through the batch API (up to 10,000 per call) and returns
 * their QR tokens in order.
 */
export async function issueTickets(
  hub: HubProcess,
  venue: string,
  n: number,
  prefix: string,
): Promise<string[]> {
  const qrs: string[] = [];
  for (let start = 0; start < n; start += 10_000) {
    const count = Math.min(10_000, n - start);
    const tickets = Array.from({ length: count }, (_, i) => ticketBody({ id: `${prefix}${start + i}` }));
    const res = await hub.api<{ results: { ticket?: { id: string; qr: string } }[] }>(
      `/v1/venues/${venue}/tickets:batch`,
      { tickets },
    );
    if (res.status !== 200) {
      throw new Error(`tickets:batch answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
    }
    for (const r of res.body.results) {
      if (r.ticket === undefined) throw new Error(`a ticket was not issued: ${JSON.stringify(r)}`);
      qrs.push(r.ticket.qr);
    }
  }
  return qrs;
}
