export { Cleanup } from '../lib/machine.ts';
export { fmt, printJsonLine, printTable, progress, round } from '../lib/report.ts';

/**
 * What bench:catchup and bench:crossgate share: the machine line printed first, one cleanup stack that
 * undoes everything in reverse (on error and on SIGINT/SIGTERM too), percentiles, a plain-text table, and
 * the JSON line that ends the output. Progress goes to stderr, so stdout holds only the report.
 */
import os from 'node:os';
import { Cleanup } from '../lib/machine.ts';

export interface Machine {
  cpu: string;
  cores: number;
  node: string;
  os: string;
  /** 1-minute load average at start: anything else running on the machine skews every figure. */
  load1: number;
}

export function machine(): Machine {
  return {
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    cores: os.availableParallelism(),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    load1: Math.round((os.loadavg()[0] ?? 0) * 100) / 100,
  };
}

export function printMachine(m: Machine): void {
  console.log(`machine: ${m.cpu}, ${m.cores} cores; node ${m.node} on ${m.os}; load average ${m.load1}`);
  if (m.load1 > m.cores / 2) {
    console.log(`warning: load average ${m.load1} on ${m.cores} cores; other work will skew these figures`);
  }
}

/**
 * Runs `body` with a cleanup stack and a hard deadline (milliseconds): whatever happens, the stack is
 * unwound before the process exits, with code 1 on error or timeout.
 */
export async function runBench(
  name: string,
  deadlineMs: number,
  body: (cleanup: Cleanup) => Promise<void>,
): Promise<void> {
  const cleanup = new Cleanup();
  cleanup.onSignals();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${name}: gave up after ${deadlineMs} ms`)), deadlineMs);
  });
  let code = 0;
  try {
    await Promise.race([body(cleanup), deadline]);
  } catch (err: unknown) {
    code = 1;
    process.stderr.write(
      `${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
  } finally {
    clearTimeout(timer);
    await cleanup.run();
  }
  // Pending client timers (reconnect loops, ordered consumers) must not keep the process alive.
  process.exit(code);
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export interface Summary {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length === 0 ? Number.NaN : sum / sorted.length,
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `fn` over `items` with at most `concurrency` calls in flight; results in input order. */
export async function mapConcurrent<T, R>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i] as T, i);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return out;
}
