/**
 * What the benchmarks put on the system: tickets issued through the hub's batch API, and HTTP load.
 *
 * The load generator is closed-loop: `concurrency` workers, each with one request in flight at a
 * time on its own keep-alive connection (an undici Pool of `concurrency` connections, no pipelining), for
 * a warm-up and then a fixed measurement window.
 *
 * Only requests that complete inside the window count: throughput is completions in the window divided
 * by its length, and latency is measured per request with performance.now() from just before the
 * request is handed to undici until its whole body has been read. Percentiles come from the sorted
 * samples (nearest rank), so nothing is bucketed or approximated.
 */
import { Pool } from 'undici';
import { MAX_BATCH } from '../../hub/http-api.ts';

export interface LoadRequest {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface LoadOptions {
  /** `http://127.0.0.1:<port>` */
  origin: string;
  concurrency: number;
  /** Milliseconds of load before the window opens; not recorded. */
  warmupMs: number;
  /** Milliseconds of the measurement window. */
  durationMs: number;
  /** The n-th request of the run (n counts across all workers). */
  request: (n: number) => LoadRequest;
  /** Names the outcome of a 200 answer (for example its decision); counted per name. */
  classify?: (body: string) => string;
}

export interface LoadResult {
  concurrency: number;
  /** Requests completed inside the window. */
  requests: number;
  /** Non-200 answers and transport errors inside the window. */
  errors: number;
  seconds: number;
  ops_per_s: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
  mean_ms: number;
  outcomes: Record<string, number>;
}

/** Nearest-rank percentile of ascending `sorted` samples; p in [0, 100]. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(opts.origin, {
    connections: opts.concurrency,
    pipelining: 1,
    keepAliveTimeout: 60_000, // milliseconds
    keepAliveMaxTimeout: 60_000, // milliseconds
  });
  const latencies: number[] = [];
  const outcomes: Record<string, number> = {};
  let errors = 0;
  let n = 0;
  const start = performance.now();
  const windowStart = start + opts.warmupMs;
  const windowEnd = windowStart + opts.durationMs;

  const worker = async (): Promise<void> => {
    while (performance.now() < windowEnd) {
      const req = opts.request(n++);
      const t0 = performance.now();
      let ok = false;
      let outcome = 'error';
      try {
        const res = await pool.request({
          method: req.method,
          path: req.path,
          headers: req.headers,
          ...(req.body === undefined ? {} : { body: req.body }),
        });
        const text = await res.body.text();
        ok = res.statusCode === 200;
        outcome = ok ? (opts.classify?.(text) ?? 'ok') : `http_${res.statusCode}`;
      } catch (err: unknown) {
        outcome = `error_${err instanceof Error ? err.name : 'unknown'}`;
      }
      const t1 = performance.now();
      if (t1 >= windowStart && t1 <= windowEnd) {
        latencies.push(t1 - t0);
        if (!ok) errors++;
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: opts.concurrency }, worker));
  } finally {
    await pool.close();
  }

  const sorted = Float64Array.from(latencies).sort();
  const seconds = opts.durationMs / 1000;
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    concurrency: opts.concurrency,
    requests: sorted.length,
    errors,
    seconds,
    ops_per_s: sorted.length / seconds,
    p50_ms: percentile(sorted, 50),
    p99_ms: percentile(sorted, 99),
    max_ms: sorted.length === 0 ? Number.NaN : (sorted[sorted.length - 1] as number),
    mean_ms: sorted.length === 0 ? Number.NaN : sum / sorted.length,
    outcomes,
  };
}

export interface IssuedTicket {
  id: string;
  qr: string;
}

/**
 * Issues `count` tickets to `venue` through the hub's batch API (`POST /v1/venues/{venue}/tickets:batch`,
 * at most MAX_BATCH per call, admin bearer key), one call at a time, and returns them in issue order.
 * Throws if any ticket fails: a benchmark on a partial set would measure something else.
 */
export async function issueTickets(
  hubUrl: string,
  adminKey: string,
  venue: string,
  count: number,
  body: (i: number) => Record<string, unknown>,
): Promise<IssuedTicket[]> {
  const out: IssuedTicket[] = [];
  while (out.length < count) {
    const n = Math.min(MAX_BATCH, count - out.length);
    const tickets = Array.from({ length: n }, (_v, i) => body(out.length + i));
    const res = await fetch(`${hubUrl}/v1/venues/${venue}/tickets:batch`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tickets }),
    });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`batch issue answered ${res.status}: ${text.slice(0, 500)}`);
    const answer = JSON.parse(text) as {
      issued: number;
      failed: number;
      results: ({ ticket: IssuedTicket } | { error: unknown })[];
    };
    if (answer.failed > 0) {
      const first = answer.results.find((r) => 'error' in r);
      throw new Error(`batch issue: ${answer.failed} of ${n} failed, first: ${JSON.stringify(first)}`);
    }
    for (const r of answer.results) {
      if ('ticket' in r) out.push({ id: r.ticket.id, qr: r.ticket.qr });
    }
  }
  return out;
}
