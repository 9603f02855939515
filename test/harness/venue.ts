import { join } from 'node:path';
import type { TestContext } from 'node:test';
import {
  type ScanAnswer,
  startHubEnv,
  startTestAgent,
  type TestAgent,
  type TestHub,
  type TestKeys,
  ticketBody,
} from './gatesync.ts';
import { type NatsServerHandle, startTcpProxy, type TcpProxy, waitFor } from './index.ts';

export interface Gate {
  agent: TestAgent;
  proxy: TcpProxy;
}

export interface Venue {
  dir: string;
  nats: NatsServerHandle;
  keys: TestKeys;
  hub: TestHub;
  gates: Gate[];
}

export async function startVenue(
  t: TestContext,
  opts: { gates: string[]; venue?: string; env?: Record<string, string>; hubEnv?: Record<string, string> },
): Promise<Venue & { defer(fn: () => unknown): void }> {
  const venue = opts.venue ?? 'v1';
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, {
    prefix: 'gs-venue-',
    ...(opts.hubEnv === undefined ? {} : { hubEnv: opts.hubEnv }),
  });
  const gates: Gate[] = [];
  for (const gate of opts.gates) {
    const proxy = await startTcpProxy({ host: '127.0.0.1', port: nats.port });
    defer(() => proxy.close());
    const agent = await startTestAgent({
      natsUrl: proxy.url,
      venue,
      agentId: gate,
      gate,
      dbPath: join(dir, `${gate}.db`),
      trusted: keys.trusted,
      env: opts.env,
    });
    defer(() => agent.stop());
    gates.push({ agent, proxy });
  }
  for (const g of gates) await g.agent.networkReady;
  return { dir, nats, keys, hub, gates, defer };
}

/** Issues `n` tickets in one batch and waits until every gate holds them; returns their QR tokens by id. */
export async function issueTickets(
  v: Venue,
  n: number,
  prefix = 'T',
  venue = 'v1',
): Promise<Map<string, string>> {
  const tickets = Array.from({ length: n }, (_, i) => ticketBody({ id: `${prefix}${i}` }));
  const res = await v.hub.api<{ results: { ticket?: { id: string; qr: string } }[] }>(
    `/v1/venues/${venue}/tickets:batch`,
    { body: { tickets } },
  );
  const out = new Map<string, string>();
  for (const r of res.body.results) if (r.ticket) out.set(r.ticket.id, r.ticket.qr);
  for (const g of v.gates) {
    await waitFor(() => g.agent.store.getTicket(`${prefix}${n - 1}`) && g.agent.store.ticketCount() >= n, {
      timeoutMs: 30_000,
      message: 'tickets synced to every gate',
    });
  }
  return out;
}

/** Every check-in the hub holds for the venue, read through its paged API. */
export async function hubCheckins(
  hub: TestHub,
  venue = 'v1',
): Promise<{ id: string; agent: string; decision: string; ticket_id: string | null }[]> {
  const all: { id: string; agent: string; decision: string; ticket_id: string | null }[] = [];
  let after: string | null = null;
  do {
    const q: string = after === null ? '?limit=1000' : `?limit=1000&after=${after}`;
    const page = await hub.api<{
      checkins: { id: string; agent: string; decision: string; ticket_id: string | null }[];
      next_cursor: string | null;
    }>(`/v1/venues/${venue}/checkins${q}`);
    if (page.status !== 200) throw new Error(`checkins: ${page.status} ${JSON.stringify(page.body)}`);
    all.push(...page.body.checkins);
    after = page.body.next_cursor;
  } while (after !== null);
  return all;
}

export async function outboxEmpty(agent: TestAgent): Promise<boolean> {
  return agent.store.outboxStats().depth === 0;
}

export type { ScanAnswer };
