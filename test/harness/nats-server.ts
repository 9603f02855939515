/**
 * Test harness: runs a real `nats-server` child process (JetStream on, loopback only).
 *
 * Every server started here is tracked in a module-level set and SIGKILLed from a
 * synchronous `process.on('exit')` handler, so a crashed or forgetful test never
 * leaves a server running after the test process is gone.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface StartNatsOptions {
  /** Client port. Default: a random free port chosen by the server (`-p -1`). */
  port?: number;
  /** JetStream store directory. Default: a fresh mkdtemp folder, removed by cleanup(). */
  storeDir?: string;
  /** Extra nats-server config text, written to a file and passed with `-c`. */
  config?: string;
}

export interface NatsServerHandle {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly storeDir: string;
  /** PID of the current process; changes after restart(). */
  readonly pid: number;
  /** True while the current child process has not exited. */
  readonly running: boolean;
  /** Graceful stop: SIGTERM, wait for exit, SIGKILL if still alive after 5 s. */
  stop(): Promise<void>;
  /** Crash simulation: SIGKILL and wait for the exit. */
  kill9(): Promise<void>;
  /** Start again on the same port and store dir (stops the current process first if needed). */
  restart(): Promise<void>;
  /** Stop if running and remove the temp dirs this harness created (never a caller-given storeDir). */
  cleanup(): Promise<void>;
  /** Last ~200 lines of the server's stdout+stderr, across restarts. */
  logs(): string;
}

const NATS_BIN = 'nats-server';
const NOT_FOUND_MSG = 'nats-server not found on PATH; install it with: apt-get install -y nats-server';
/** How long a start may take before we give up (ms): ports file + accepting connections. */
const START_TIMEOUT_MS = 10_000;
/** Grace period between SIGTERM and SIGKILL in stop() (ms). */
const STOP_GRACE_MS = 5_000;
/** Upper bound for the process to disappear after SIGKILL (ms); only a safety net. */
const KILL_WAIT_MS = 5_000;
const POLL_MS = 25;
const LOG_LINES = 200;

/** Every live child we started; killed synchronously when the test process exits. */
const liveChildren = new Set<ChildProcess>();
/** Temp dirs of servers not yet cleaned up; removed best-effort at exit too. */
const ownedTempDirs = new Set<string>();
let exitHookInstalled = false;

function killAllSync(): void {
  for (const child of liveChildren) {
    try {
      child.kill('SIGKILL');
    } catch {
      // Already gone; nothing else we can do from a synchronous exit hook.
    }
  }
  liveChildren.clear();
  for (const dir of ownedTempDirs) {
    try {
      // Retries (10 ms apart) cover a just-killed server still finishing a write.
      rmSync(dir, { recursive: true, force: true, maxRetries: 3, retryDelay: 10 });
    } catch {
      // Best effort: a leftover dir in os.tmpdir() is harmless.
    }
  }
  ownedTempDirs.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killAllSync);
  // 'exit' does not fire when the process dies from a signal with default handling.
  // Kill our children, then re-raise the signal so the default behaviour is kept,
  // unless someone else also listens (then they own the decision to exit).
  for (const sig of ['SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      killAllSync();
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, onSignal);
  }
}

let binChecked = false;
function assertBinaryOnPath(): void {
  if (binChecked) return;
  const res = spawnSync(NATS_BIN, ['--version'], { stdio: 'ignore' });
  if (res.error !== undefined) {
    const code = (res.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new Error(NOT_FOUND_MSG);
    throw new Error(`failed to run ${NATS_BIN} --version: ${res.error.message}`);
  }
  binChecked = true;
}

class RingBuffer {
  private readonly lines: string[] = [];
  private partial = '';
  constructor(private readonly max: number) {}

  /** Feed raw output; split into lines, keeping an unterminated tail for the next chunk. */
  write(chunk: string): void {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) this.push(line);
  }

  push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
  }

  /** Flush the unterminated tail (used when a process exits). */
  flush(): void {
    if (this.partial !== '') {
      this.push(this.partial);
      this.partial = '';
    }
  }

  toString(): string {
    const all = this.partial === '' ? this.lines : [...this.lines, this.partial];
    return all.join('\n');
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with the exit code/signal once the child has exited (immediately if it already has). */
function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Waits for exit, but at most `ms`; returns true if the child exited. */
async function waitExitWithin(child: ChildProcess, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  // This ref'd timer also keeps the event loop alive while we wait on an unref'd child.
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([waitExit(child).then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Opens a TCP connection and waits for the server's first bytes: a NATS server greets
 * every client with `INFO {...}`, so seeing it proves the listener belongs to a ready server.
 */
function probeNats(port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => finish(false));
    sock.once('data', (buf: Buffer) => finish(buf.toString('latin1').startsWith('INFO ')));
    sock.once('error', () => finish(false));
    sock.once('close', () => finish(false));
  });
}

function unrefStream(stream: unknown): void {
  // Pipes are net.Sockets; unref them so a forgotten server does not keep the test
  // process alive (the exit hook then kills it).
  if (stream instanceof net.Socket) stream.unref();
}

/** Parses `{"nats":["nats://127.0.0.1:PORT"], ...}` written by `--ports_file_dir`. */
function parsePortsFile(text: string): number | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined; // Partially written file; poll again.
  }
  if (typeof parsed !== 'object' || parsed === null) return undefined;
  const urls = (parsed as { nats?: unknown }).nats;
  if (!Array.isArray(urls)) return undefined;
  for (const u of urls) {
    if (typeof u !== 'string') continue;
    const m = /:(\d+)\/?$/.exec(u);
    if (m?.[1] !== undefined) return Number(m[1]);
  }
  return undefined;
}

export async function startNats(opts: StartNatsOptions = {}): Promise<NatsServerHandle> {
  assertBinaryOnPath();
  installExitHook();

  const tmpRoot = await mkdtemp(path.join(os.tmpdir(), 'gatesync-nats-'));
  ownedTempDirs.add(tmpRoot);
  let storeDir: string;
  if (opts.storeDir !== undefined) {
    storeDir = opts.storeDir;
    await mkdir(storeDir, { recursive: true });
  } else {
    storeDir = path.join(tmpRoot, 'store');
    await mkdir(storeDir);
  }
  const configFile = opts.config !== undefined ? path.join(tmpRoot, 'nats.conf') : undefined;
  if (configFile !== undefined && opts.config !== undefined) await writeFile(configFile, opts.config);

  const log = new RingBuffer(LOG_LINES);
  let child: ChildProcess | undefined;
  let port = opts.port ?? -1;
  let cleanedUp = false;

  const isRunning = (c: ChildProcess | undefined): c is ChildProcess =>
    c !== undefined && c.exitCode === null && c.signalCode === null;

  const fail = (msg: string): Error => new Error(`${msg}\n--- nats-server logs ---\n${log.toString()}`);

  /** Spawns one server process and resolves once it answers with INFO on its port. */
  const launch = async (): Promise<void> => {
    // Command-line flags override the config file in nats-server, so these always win:
    // loopback only, JetStream in our store dir, no monitoring port (off by default).
    const args: string[] = [];
    if (configFile !== undefined) args.push('-c', configFile);
    args.push('-a', '127.0.0.1', '-p', String(port), '-js', '-sd', storeDir, '--ports_file_dir', tmpRoot);

    const proc = spawn(NATS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const spawnError = new Promise<Error>((resolve) => proc.once('error', resolve));
    liveChildren.add(proc);
    log.push(`--- harness: spawn ${NATS_BIN} ${args.join(' ')} ---`);
    proc.stdout?.setEncoding('utf8');
    proc.stderr?.setEncoding('utf8');
    proc.stdout?.on('data', (s: string) => log.write(s));
    proc.stderr?.on('data', (s: string) => log.write(s));
    proc.once('exit', (code, signal) => {
      liveChildren.delete(proc);
      log.flush();
      log.push(`--- harness: pid ${proc.pid ?? '?'} exited code=${code} signal=${signal} ---`);
    });
    proc.unref();
    unrefStream(proc.stdout);
    unrefStream(proc.stderr);
    child = proc;

    if (proc.pid === undefined) {
      const err = await spawnError;
      liveChildren.delete(proc);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(NOT_FOUND_MSG);
      throw fail(`failed to spawn ${NATS_BIN}: ${err.message}`);
    }

    const deadline = Date.now() + START_TIMEOUT_MS;
    const portsFile = path.join(tmpRoot, `${NATS_BIN}_${proc.pid}.ports`);
    try {
      // 1. Learn the port (only needed for -p -1; a fixed port is already known).
      while (port <= 0) {
        if (!isRunning(proc)) throw fail('nats-server exited during startup');
        if (Date.now() > deadline)
          throw fail(`timed out after ${START_TIMEOUT_MS} ms waiting for ${portsFile}`);
        const text = await readFile(portsFile, 'utf8').catch((): string => '');
        const p = parsePortsFile(text);
        if (p !== undefined) port = p;
        else await sleep(POLL_MS);
      }
      // 2. Wait until this process (not some stranger on the port) accepts clients.
      for (;;) {
        if (!isRunning(proc)) throw fail('nats-server exited during startup');
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          throw fail(`timed out after ${START_TIMEOUT_MS} ms waiting for nats-server on port ${port}`);
        }
        if (await probeNats(port, Math.min(remaining, 1_000))) break;
        await sleep(POLL_MS);
      }
      // The probe may have hit a stale listener if our child died at the same moment.
      if (!isRunning(proc)) throw fail('nats-server exited during startup');
    } catch (err: unknown) {
      proc.kill('SIGKILL');
      await waitExitWithin(proc, KILL_WAIT_MS);
      throw err;
    }
  };

  const stop = async (): Promise<void> => {
    const c = child;
    if (!isRunning(c)) return;
    c.kill('SIGTERM');
    if (!(await waitExitWithin(c, STOP_GRACE_MS))) {
      log.push(`--- harness: no exit ${STOP_GRACE_MS} ms after SIGTERM, sending SIGKILL ---`);
      c.kill('SIGKILL');
      await waitExitWithin(c, KILL_WAIT_MS);
    }
  };

  const kill9 = async (): Promise<void> => {
    const c = child;
    if (!isRunning(c)) return;
    c.kill('SIGKILL');
    if (!(await waitExitWithin(c, KILL_WAIT_MS)))
      throw fail(`pid ${c.pid} still alive ${KILL_WAIT_MS} ms after SIGKILL`);
  };

  await launch().catch(async (err: unknown) => {
    ownedTempDirs.delete(tmpRoot);
    await rm(tmpRoot, { recursive: true, force: true });
    throw err;
  });

  const handle: NatsServerHandle = {
    get url() {
      return `nats://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    storeDir,
    get pid() {
      return child?.pid ?? -1;
    },
    get running() {
      return isRunning(child);
    },
    stop,
    kill9,
    async restart() {
      if (cleanedUp) throw new Error('restart() after cleanup()');
      await stop();
      // The directory must survive (the store lives there); recreate in case a test removed it.
      await access(tmpRoot).catch(() => mkdir(tmpRoot, { recursive: true }));
      await launch();
    },
    async cleanup() {
      cleanedUp = true;
      await stop();
      ownedTempDirs.delete(tmpRoot);
      await rm(tmpRoot, { recursive: true, force: true });
    },
    logs() {
      return log.toString();
    },
  };
  return handle;
}
