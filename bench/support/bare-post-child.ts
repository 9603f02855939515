/**
 * The baseline for bench:webhooks, in a process of its own (as the hub is): a bare undici POST loop.
 * `concurrency` workers share one Pool of `concurrency` keep-alive connections (no pipelining), and each
 * sends the next of `count` requests as soon as its previous answer has been read. Every request carries
 * the given body and Standard Webhooks headers signed for it (a fresh webhook-id and timestamp, one
 * HMAC-SHA256 each), so the receiver does the same work per request as for the hub's deliveries.
 *
 *   child -> parent  { type: 'ready', pid }
 *   parent -> child  { type: 'run', url, concurrency, count, body, secret, idPrefix }
 *   child -> parent  { type: 'done', ms, ok, errors, cpu_ms }
 *   parent -> child  { type: 'stop' }     closes the pool, answers 'stopped', exits
 */
import { Pool } from 'undici';
import { signedHeaders } from './webhook-receiver.ts';

interface RunMessage {
  type: 'run';
  url: string;
  concurrency: number;
  count: number;
  body: string;
  secret: string;
  idPrefix: string;
}

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

async function run(m: RunMessage): Promise<void> {
  const pool = new Pool(m.url, {
    connections: m.concurrency,
    pipelining: 1,
    keepAliveTimeout: 30_000, // milliseconds, as the hub's sender
  });
  let next = 0;
  let ok = 0;
  let errors = 0;
  const cpu0 = cpuMs();
  const started = performance.now();
  const worker = async () => {
    for (let i = next++; i < m.count; i = next++) {
      try {
        const res = await pool.request({
          path: '/',
          method: 'POST',
          headers: signedHeaders(m.secret, `${m.idPrefix}${i}`, m.body),
          body: m.body,
        });
        await res.body.text();
        if (res.statusCode >= 200 && res.statusCode <= 299) ok++;
        else errors++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: m.concurrency }, worker));
  const ms = performance.now() - started;
  const cpu = cpuMs() - cpu0;
  await pool.close();
  process.send?.({ type: 'done', ms, ok, errors, cpu_ms: cpu });
}

process.on('message', (raw: unknown) => {
  const m = raw as { type: string };
  if (m.type === 'run') {
    run(m as RunMessage).catch((err: unknown) => {
      process.send?.({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
    });
  } else if (m.type === 'stop') {
    process.send?.({ type: 'stopped' });
    process.exit(0);
  }
});
process.send?.({ type: 'ready', pid: process.pid });
