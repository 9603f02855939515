import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { startHubEnv, startTestAgent, ticketBody } from './harness/gatesync.ts';
import { waitFor } from './harness/index.ts';
import { hubCheckins } from './harness/venue.ts';

const root = new URL('../', import.meta.url).pathname;
const PASSWORDS = {
  HUB: 'hub-pass-0123456789',
  NORTH: 'north-pass-0123456789',
  SOUTH: 'south-pass-0123456789',
};

test('the shipped NATS config lets a venue read only its tickets and publish only its check-ins', async (t) => {
  let conf = readFileSync(join(root, 'deploy/nats/venues.conf'), 'utf8');
  conf = conf
    .replace('$GATESYNC_NATS_HUB_PASSWORD', `"${PASSWORDS.HUB}"`)
    .replace('$GATESYNC_NATS_V1_NORTH_PASSWORD', `"${PASSWORDS.NORTH}"`)
    .replace('$GATESYNC_NATS_V1_SOUTH_PASSWORD', `"${PASSWORDS.SOUTH}"`);
  const { dir, nats, keys, hub, defer } = await startHubEnv(t, {
    prefix: 'gs-perm-',
    natsConfig: conf,
    hubEnv: { GATESYNC_NATS_USER: 'hub', GATESYNC_NATS_PASS: PASSWORDS.HUB },
  });
  const agent = await startTestAgent({
    natsUrl: nats.url,
    venue: 'v1',
    agentId: 'north',
    dbPath: join(dir, 'north.db'),
    trusted: keys.trusted,
    env: { GATESYNC_NATS_USER: 'v1-north', GATESYNC_NATS_PASS: PASSWORDS.NORTH },
  });
  defer(() => agent.stop());

  // The venue user does everything a gate needs.
  const mine = await hub.api<{ qr: string }>('/v1/venues/v1/tickets', { body: ticketBody({ id: 'MINE' }) });
  await hub.api('/v1/venues/v2/tickets', { body: ticketBody({ id: 'THEIRS' }) });
  await waitFor(() => agent.store.getTicket('MINE'), {
    message: 'venue ticket synced with venue credentials',
  });
  const scan = await agent.scan(mine.body.qr);
  assert.equal(scan.decision, 'admit');
  await waitFor(async () => (await hubCheckins(hub)).some((c) => c.id === scan.checkin_id), {
    message: 'check-in published',
  });
  await waitFor(
    async () => (await hub.api<{ agents: unknown[] }>('/v1/venues/v1/agents')).body.agents.length === 1,
    {
      message: 'heartbeat written',
    },
  );
  assert.equal(agent.store.getTicket('THEIRS'), undefined);

  // And nothing beyond it.
  const nc = await connect({ servers: nats.url, user: 'v1-north', pass: PASSWORDS.NORTH });
  t.after(() => nc.close());
  const errors: string[] = [];
  void (async () => {
    for await (const s of nc.status()) if (s.type === 'error') errors.push(String(s.error));
  })();
  const js = jetstream(nc, { timeout: 1500 });
  const jsm = await jetstreamManager(nc, { checkAPI: false, timeout: 1500 });
  await assert.rejects(
    jsm.consumers.add('GS_TICKETS', {
      durable_name: 'gs_agent_v1_spy',
      filter_subject: 'gs.tix.v2.*',
      ack_policy: AckPolicy.All,
    }),
    'a consumer over another venue is refused',
  );
  await assert.rejects(js.publish('gs.tix.v1.FORGED', 'x'), 'publishing ticket events is refused');
  await assert.rejects(
    js.publish('gs.chk.v2.north.C1', 'x'),
    'publishing another venue check-ins is refused',
  );
  await assert.rejects(js.publish('gs.chk.v1.south.C1', 'x'), 'publishing as another gate is refused');
  await assert.rejects(
    jsm.consumers.add('GS_TICKETS', {
      durable_name: 'gs_agent_v1_north',
      filter_subject: 'gs.tix.>',
      ack_policy: AckPolicy.All,
    }),
    'its own consumer with a wider filter is refused',
  );
  nc.subscribe('gs.tix.>');
  await nc.flush();
  await waitFor(() => errors.some((e) => /Permissions Violation for Subscription/i.test(e)), {
    message: 'subscription refused',
  });
});
