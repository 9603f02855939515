/**
 * The embedded default: with no NATS URL configured, the hub runs its own nats-server with JetStream on
 * loopback, on a port the OS picks (4222 may be taken), storing under the hub's data folder.
 *
 * The server is started through `sh`, which also waits on our stdin: if the hub dies, even by kill -9,
 * the pipe closes, `read` returns and the shell stops the server, so no orphan keeps the store locked.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GatesyncError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

export interface EmbeddedNats {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export function findNatsServer(): string | undefined {
  for (const candidate of [process.env.GATESYNC_NATS_SERVER_BIN, 'nats-server', '/usr/sbin/nats-server']) {
    if (candidate === undefined || candidate === '') continue;
    const r = spawnSync(candidate, ['--version'], { encoding: 'utf8' });
    if (r.status === 0) return candidate;
  }
  return undefined;
}

export async function startEmbeddedNats(dataDir: string, logger: Logger): Promise<EmbeddedNats> {
  const bin = findNatsServer();
  if (bin === undefined) {
    throw new GatesyncError(
      'nats_server_missing',
      'no nats-server found for the embedded NATS: install it with `apt-get install -y nats-server` ' +
        '(or set GATESYNC_NATS_URL to an existing server)',
    );
  }
  const storeDir = join(dataDir, 'nats');
  const portsDir = join(dataDir, 'nats-ports');
  mkdirSync(storeDir, { recursive: true });
  // A ports file left by an earlier run names a port that is gone.
  rmSync(portsDir, { recursive: true, force: true });
  mkdirSync(portsDir, { recursive: true });
  const args = ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', storeDir, '--ports_file_dir', portsDir];
  const script = `"$0" "$@" & pid=$!; read -r _ignored; kill "$pid" 2>/dev/null; wait "$pid"`;
  const child: ChildProcess = spawn('sh', ['-c', script, bin, ...args], {
    stdio: ['pipe', 'ignore', 'pipe'],
    // Its own process group: a terminal's Ctrl-C reaches the hub only, which then stops the server in order.
    detached: true,
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });

  // nats-server writes <exe>_<pid>.ports once it listens; the pid is the server's, not the shell's.
  const deadline = Date.now() + 15_000;
  let port: number | undefined;
  while (port === undefined) {
    if (exited) throw new GatesyncError('nats_unavailable', `embedded nats-server exited: ${stderr.trim()}`);
    if (Date.now() > deadline)
      throw new GatesyncError('nats_unavailable', 'embedded nats-server did not start');
    for (const f of readdirSync(portsDir)) {
      if (!f.endsWith('.ports')) continue;
      try {
        const info = JSON.parse(readFileSync(join(portsDir, f), 'utf8')) as { nats?: string[] };
        const u = info.nats?.[0];
        if (u !== undefined) port = Number(new URL(u).port);
      } catch {
        // Written but not complete yet: read again on the next turn.
      }
    }
    if (port === undefined) await sleep(50);
  }
  const url = `nats://127.0.0.1:${port}`;
  logger.info({ url, storeDir }, 'embedded nats-server started');

  return {
    url,
    port,
    async stop() {
      if (exited) return;
      const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.stdin?.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(timer);
      logger.info('embedded nats-server stopped');
    },
  };
}
