/**
 * Looking inside a run without changing the product: wrap one method of one object to count its calls and
 * the milliseconds they block the event loop, and read the CPU time of a process from /proc.
 */
import { readFileSync } from 'node:fs';

export interface CallMeter {
  calls: number;
  /** Milliseconds spent inside the calls (synchronous work, fsyncs included). */
  ms: number;
  /** Sum of the lengths of the first array argument, when there is one. */
  items: number;
  reset(): void;
}

/**
 * Replaces `target[method]` with a wrapper that meters every call, on this object only. The wrapped
 * method keeps its behaviour and result.
 */
export function meterMethod<T extends object, K extends keyof T>(target: T, method: K): CallMeter {
  const original = target[method];
  if (typeof original !== 'function') throw new Error(`${String(method)} is not a method`);
  const meter: CallMeter = {
    calls: 0,
    ms: 0,
    items: 0,
    reset() {
      meter.calls = 0;
      meter.ms = 0;
      meter.items = 0;
    },
  };
  const wrapped = function (this: unknown, ...args: unknown[]): unknown {
    meter.calls++;
    for (const a of args) {
      if (Array.isArray(a)) {
        meter.items += a.length;
        break;
      }
    }
    const started = performance.now();
    try {
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    } finally {
      meter.ms += performance.now() - started;
    }
  };
  (target as Record<K, unknown>)[method] = wrapped;
  return meter;
}

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on every common Linux). */
const USER_HZ = 100;

/** CPU milliseconds (user + system) a process has used so far; undefined off Linux or once it is gone. */
export function processCpuMs(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / USER_HZ;
  } catch {
    return undefined;
  }
}

/** CPU milliseconds used by this process so far. */
export function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
