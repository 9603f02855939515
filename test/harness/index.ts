/** Test harness entry point: real nats-server, a link-cutting TCP proxy, and polling helpers. */
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export { type NatsServerHandle, type StartNatsOptions, startNats } from './nats-server.js';
export { type StartTcpProxyOptions, startTcpProxy, type TcpProxy } from './tcp-proxy.js';

export interface WaitForOptions {
  /** Give up after this many ms (default 10000). */
  timeoutMs?: number;
  /** Pause between attempts in ms (default 50). */
  intervalMs?: number;
  /** Describes what we were waiting for; goes first in the timeout error. */
  message?: string;
}

function describe(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * Polls `fn` until it returns a truthy value and returns that value. A throwing `fn`
 * counts as "not yet". On timeout, throws with `message` plus the last value or error.
 * A single slow call cannot overrun the deadline: each attempt is raced against it.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: WaitForOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let last: { kind: 'value'; value: unknown } | { kind: 'error'; error: unknown } | undefined;
  const timedOut = Symbol('timedOut');

  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        Promise.resolve().then(fn),
        new Promise<typeof timedOut>((resolve) => {
          timer = setTimeout(() => resolve(timedOut), remaining);
        }),
      ]);
      if (result === timedOut) break;
      if (result) return result as NonNullable<T>;
      last = { kind: 'value', value: result };
    } catch (err: unknown) {
      last = { kind: 'error', error: err };
    } finally {
      clearTimeout(timer);
    }
    const pause = Math.min(intervalMs, deadline - Date.now());
    if (pause > 0) await new Promise((resolve) => setTimeout(resolve, pause));
  }

  const what = opts.message ?? 'condition';
  const lastText =
    last === undefined
      ? 'no attempt completed'
      : last.kind === 'error'
        ? `last error: ${describe(last.error)}`
        : `last value: ${describe(last.value)}`;
  const error = new Error(`waitFor timed out after ${timeoutMs} ms: ${what} (${lastText})`);
  if (last?.kind === 'error') error.cause = last.error;
  throw error;
}

/** Creates a fresh directory under os.tmpdir(); the caller removes it. */
export async function tmpDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}
