/**
 * What a benchmark runs on and what it runs in: the machine description every benchmark prints first,
 * its settings from the environment, child processes (the agent and the plain baseline each get an
 * event loop of their own, away from the load generator), their CPU time and peak memory read from
 * /proc, and one cleanup stack that undoes everything, in reverse, even on error.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (bench/lib/ is two levels down). */
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface MachineInfo {
  cpu: string;
  cores: number;
  node: string;
  os: string;
  memory_gb: number;
  /** 1, 5 and 15 minute load averages when the benchmark started: other work on the machine skews it. */
  load_avg: number[];
}

export function machineInfo(): MachineInfo {
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.availableParallelism(),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    memory_gb: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    load_avg: loadAverage(),
  };
}

export function loadAverage(): number[] {
  return os.loadavg().map((v) => Math.round(v * 100) / 100);
}

export function printMachine(info: MachineInfo): void {
  console.log(`machine: ${info.cpu}, ${info.cores} cores, ${info.memory_gb} GB RAM`);
  console.log(`node:    ${info.node} on ${info.os}`);
  console.log(`load:    ${info.load_avg.join(' ')} (1/5/15 min averages at start)`);
}

/** A positive number from the environment, or `fallback` when unset. */
export function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} must be a positive number, got "${raw}"`);
  return v;
}

/** A positive integer from the environment, or `fallback` when unset. */
export function envInt(name: string, fallback: number): number {
  const v = envNumber(name, fallback);
  if (!Number.isInteger(v)) throw new Error(`${name} must be a positive integer, got "${process.env[name]}"`);
  return v;
}

/** A comma-separated list of positive integers from the environment, or `fallback` when unset. */
export function envList(name: string, fallback: number[]): number[] {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const list = raw.split(',').map((s) => Number(s.trim()));
  if (list.some((v) => !Number.isInteger(v) || v < 1)) throw new Error(`${name} must be like 1,16,64`);
  return list;
}

/** Runs undo steps in reverse order of registration; every step runs even if an earlier one throws. */
export class Cleanup {
  private readonly steps: { name: string; fn: () => unknown }[] = [];

  add(name: string, fn: () => unknown): void {
    this.steps.push({ name, fn });
  }

  /** Runs the steps on SIGINT or SIGTERM too, then exits with 128 + the signal number. */
  onSignals(): void {
    for (const [sig, num] of [
      ['SIGINT', 2],
      ['SIGTERM', 15],
    ] as const) {
      process.once(sig, () => {
        console.error(`${sig}: cleaning up`);
        void this.run().finally(() => process.exit(128 + num));
      });
    }
  }

  async run(): Promise<void> {
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      if (step === undefined) break;
      try {
        await step.fn();
      } catch (err: unknown) {
        console.error(`cleanup: ${step.name} failed: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
}

/** Messages a bench child sends to its parent over the IPC channel. */
export type ChildMessage = { type: string } & Record<string, unknown>;

/** A node child running one of bench/lib/*-child.ts, talking JSON messages over IPC. */
export class BenchChild {
  private readonly waiters: { type: string; resolve: (m: ChildMessage) => void }[] = [];
  private readonly exited: Promise<void>;
  private exitInfo: string | undefined;

  private constructor(readonly proc: ChildProcess) {
    proc.on('message', (raw: unknown) => {
      const m = raw as ChildMessage;
      const i = this.waiters.findIndex((w) => w.type === m.type);
      if (i >= 0) this.waiters.splice(i, 1)[0]?.resolve(m);
    });
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exitInfo = `exited code=${code} signal=${signal}`;
        resolve();
      });
    });
  }

  /**
   * Spawns `node --import tsx <script>` from the repository root. BENCH_CHILD_NODE_ARGS adds node flags
   * (for example `--cpu-prof --cpu-prof-dir=bench-output`).
   */
  static spawn(script: string, env: Record<string, string>): BenchChild {
    const extra = (process.env.BENCH_CHILD_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    const proc = spawn(process.execPath, [...extra, '--import', 'tsx', join(REPO_ROOT, script)], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    // A parent that dies without cleaning up must not leave the child behind.
    const killOnExit = () => proc.kill('SIGKILL');
    process.once('exit', killOnExit);
    proc.once('exit', () => process.removeListener('exit', killOnExit));
    return new BenchChild(proc);
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** Resolves with the next message of `type`; rejects if the child exits first or after `timeoutMs`. */
  next(type: string, timeoutMs = 120_000): Promise<ChildMessage> {
    return new Promise<ChildMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`child ${this.pid}: no "${type}" message within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        type,
        resolve: (m: ChildMessage) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.waiters.push(waiter);
      void this.exited.then(() => {
        clearTimeout(timer);
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          reject(new Error(`child ${this.pid} ${this.exitInfo ?? 'exited'} before sending "${type}"`));
        }
      });
    });
  }

  /** Sends a message and waits for the answer of type `replyType`. */
  async ask(message: ChildMessage, replyType: string, timeoutMs?: number): Promise<ChildMessage> {
    const answer = this.next(replyType, timeoutMs);
    this.proc.send(message);
    return answer;
  }

  /** Asks the child to stop cleanly; SIGKILL if it has not exited within `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    if (this.proc.connected) this.proc.send({ type: 'stop' });
    else this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

/** Peak resident set size of a live process in bytes (VmHWM), or undefined if it cannot be read. */
export function peakRssBytes(pid: number): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** Size of a file in bytes, 0 when it does not exist. */
export function fileBytes(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** Clock ticks per second of /proc CPU times (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** CPU seconds (user + system) of each live thread of a process, by thread id; the main thread's id is the pid. */
export function threadCpuSeconds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      // Fields after the parenthesised name: state is field 3, utime 14 and stime 15 (1-based).
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), (Number(fields[11]) + Number(fields[12])) / USER_HZ);
    } catch {
      // The thread ended between readdir and read.
    }
  }
  return out;
}

/** CPU seconds (user + system) a whole process has used so far, its ended threads included. */
export function processCpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
  } catch {
    return Number.NaN;
  }
}

/** Busy and total CPU seconds of the whole machine, all cores summed, from /proc/stat. */
export function machineCpuSeconds(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  return { busy: (total - idle) / USER_HZ, total: total / USER_HZ };
}

/**
 * Where a process's CPU went between two threadCpuSeconds() snapshots: its main thread, its busiest
 * other threads (worker threads first: they are the ones doing work), and the rest.
 */
export function cpuBetween(
  pid: number,
  before: Map<number, number>,
  after: Map<number, number>,
): { main: number; others: number[] } {
  const delta = (tid: number) => (after.get(tid) ?? 0) - (before.get(tid) ?? 0);
  const others = [...after.keys()]
    .filter((tid) => tid !== pid)
    .map(delta)
    .filter((s) => s > 0)
    .sort((a, b) => b - a);
  return { main: delta(pid), others };
}
