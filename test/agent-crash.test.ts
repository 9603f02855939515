import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { decodeTicketEvent } from '../shared/events.ts';
import { STREAMS } from '../shared/subjects.ts';
import {
  agentEnv,
  httpJson,
  SCANNER_TOKEN,
  spawnAgent,
  startHubEnv,
  ticketBody,
} from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';

/** The hub's state of a venue: ticket id -> [rev, status, stream seq], read straight from GS_TICKETS. */
async function hubState(natsUrl: string, venue: string): Promise<Map<string, [number, string, number]>> {
  const nc = await connect({ servers: natsUrl });
  try {
    const js = jetstream(nc);
    const consumer = await js.consumers.get(STREAMS.tickets, { filter_subjects: `gs.tix.${venue}.*` });
    const state = new Map<string, [number, string, number]>();
    const info = await consumer.info();
    let left = info.num_pending;
    while (left > 0) {
      const batch = await consumer.fetch({ max_messages: Math.min(left, 1000), expires: 5000 });
      for await (const m of batch) {
        const e = decodeTicketEvent(m.data);
        state.set(e.ticket.id, [e.rev, e.ticket.status, m.seq]);
        left--;
      }
    }
    return state;
  } finally {
    await nc.close();
  }
}

test('kill -9 of the agent while events stream in: after restart its store equals the hub, nothing missing or applied twice', async (t) => {
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, { prefix: 'gs-crash-' });
  const dbPath = join(dir, 'agent.db');
  const env = agentEnv({ natsUrl: nats.url, venue: 'v1', agentId: 'a1', dbPath, trusted: keys.trusted });
  let agent = await spawnAgent(env);
  defer(() => agent.kill9());
  const status = async () =>
    (
      await httpJson<{ tickets_held: number; last_event: { seq: number } }>(`${agent.url}/v1/status`, {
        token: SCANNER_TOKEN,
      })
    ).body;

  // Stream in 6 batches of 1,000 issues, with revocations in between, and kill the agent mid-way.
  let issued = 0;
  const revoked: string[] = [];
  const streaming = (async () => {
    for (let b = 0; b < 6; b++) {
      const tickets = Array.from({ length: 1000 }, (_, i) => ticketBody({ id: `K${b}_${i}` }));
      const r = await hub.api<{ issued: number }>('/v1/venues/v1/tickets:batch', { body: { tickets } });
      issued += r.body.issued;
      for (let i = 0; i < 50; i++) {
        const id = `K${b}_${i * 7}`;
        const rv = await hub.api(`/v1/venues/v1/tickets/${id}/revoke`, { body: { reason: 'test' } });
        if (rv.status === 200) revoked.push(id);
      }
    }
  })();
  await waitFor(async () => (await status()).tickets_held >= 1500, {
    timeoutMs: 30_000,
    message: 'agent mid-stream',
  });
  assert.equal(await agent.kill9(), 'SIGKILL');
  await streaming;
  assert.equal(issued, 6000);

  agent = await spawnAgent(env);
  await waitFor(async () => (await status()).tickets_held === 6000, {
    timeoutMs: 60_000,
    intervalMs: 200,
    message: 'agent caught up after restart',
  }).catch(async (e) => {
    console.error(JSON.stringify(await status()), agent.output().slice(-5000));
    throw e;
  });
  const expected = await hubState(nats.url, 'v1');
  await waitFor(
    async () => (await status()).last_event.seq >= Math.max(...[...expected.values()].map((v) => v[2])),
    {
      timeoutMs: 30_000,
      message: 'agent reached the stream head',
    },
  );
  await agent.stop();

  const db = new Database(dbPath, { readonly: true });
  t.after(() => db.close());
  const rows = db.prepare('SELECT id, rev, status, stream_seq FROM tickets').all() as {
    id: string;
    rev: number;
    status: string;
    stream_seq: number;
  }[];
  assert.equal(rows.length, expected.size, 'nothing missing, nothing extra');
  let mismatches = 0;
  for (const r of rows) {
    const want = expected.get(r.id);
    if (want === undefined || want[0] !== r.rev || want[1] !== r.status || want[2] !== r.stream_seq)
      mismatches++;
  }
  assert.equal(mismatches, 0, 'every ticket at the hub revision, status and stream sequence');
  assert.equal(rows.filter((r) => r.status === 'revoked').length, revoked.length);
  assert.ok(revoked.length >= 250);
});
