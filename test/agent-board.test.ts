/**
 * The hub's per-agent sync lag (`syncPending`) against a real nats-server: reused for 2 s, shared by
 * concurrent askers, so a busy dashboard does not make the server count a venue's pending tickets on
 * every refresh. The consumer-info requests are counted by a plain subscription on the API subject.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AckPolicy, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { syncPending } from '../hub/agent-board.ts';
import { ensureStreams } from '../hub/streams.ts';
import { agentConsumerName, STREAMS, subjects } from '../shared/subjects.ts';
import { startNats, waitFor } from './harness/index.ts';

test('an agent sync lag is asked of the server at most once per 2 s, however many ask at once', async (t) => {
  const nats = await startNats();
  t.after(() => nats.cleanup());
  const nc = await connect({ servers: nats.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await ensureStreams(jsm, { checkinRetentionDays: 1 });
  await jsm.consumers.add(STREAMS.tickets, {
    durable_name: agentConsumerName('v1', 'north'),
    filter_subject: subjects.venueTickets('v1'),
    ack_policy: AckPolicy.None,
  });
  let asked = 0;
  const tap = nc.subscribe(`$JS.API.CONSUMER.INFO.${STREAMS.tickets}.>`, {
    callback: () => {
      asked++;
    },
  });
  t.after(() => tap.unsubscribe());
  await nc.flush();

  const now = Date.now();
  const answers = await Promise.all(Array.from({ length: 5 }, () => syncPending(jsm, 'v1', 'north', now)));
  assert.deepEqual(answers, [0, 0, 0, 0, 0]);
  assert.equal(await syncPending(jsm, 'v1', 'north', now + 1_900), 0);
  await nc.flush();
  await waitFor(() => asked === 1, { message: 'one consumer-info request' });
  assert.equal(await syncPending(jsm, 'v1', 'north', now + 2_100), 0, 'asked again after 2 s');
  assert.equal(await syncPending(jsm, 'v1', 'south', now + 2_100), null, 'an agent with no consumer');
  await nc.flush();
  await waitFor(() => asked === 3, { message: 'two more requests' });
});
