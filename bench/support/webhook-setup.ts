/**
 * What bench:webhooks, bench:e2e and bench:isolation share: a nats-server of their own, the hub as a child
 * process with loopback receivers allowed (GATESYNC_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8), endpoints created
 * through the admin API, a wait until an endpoint's worker delivers (a `webhook.test` message arriving),
 * and check-ins published straight to GS_CHECKINS the way a gate agent's outbox publisher does (msgpack
 * CheckinMessage, Nats-Msg-Id = check-in id, expected last subject sequence 0).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type JetStreamClient, jetstream } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { CheckinMessage } from '../../shared/checkins.ts';
import { encode } from '../../shared/codec.ts';
import { newId } from '../../shared/ids.ts';
import { subjects } from '../../shared/subjects.ts';
import { makeKeys, type TestKeys } from '../../test/harness/gatesync.ts';
import { type NatsServerHandle, startNats, tmpDir, waitFor } from '../../test/harness/index.ts';
import { type Cleanup, REPO_ROOT } from '../lib/machine.ts';
import { type HubProcess, spawnHub } from './hub-process.ts';
import type { FastReceiver } from './webhook-receiver.ts';

export interface WebhookRig {
  dir: string;
  nats: NatsServerHandle;
  keys: TestKeys;
  hub: HubProcess;
  /** A connection of the bench's own, for publishing check-ins and tapping subjects. */
  nc: NatsConnection;
  js: JetStreamClient;
}

/** Starts nats-server and the hub (child process) with `hubEnv` added to its settings. */
export async function startWebhookRig(
  cleanup: Cleanup,
  prefix: string,
  hubEnv: Record<string, string>,
): Promise<WebhookRig> {
  const dir = await tmpDir(prefix);
  cleanup.add('temp dir', () => rm(dir, { recursive: true, force: true }));
  const nats = await startNats();
  cleanup.add('nats-server', () => nats.cleanup());
  const keys = makeKeys(dir);
  const hub = await spawnHub({
    natsUrl: nats.url,
    dataDir: join(dir, 'hub'),
    signingKeyFile: keys.file,
    env: {
      GATESYNC_WEBHOOK_ALLOW_CIDRS: '127.0.0.0/8',
      // BENCH_HUB_PROFILE=<dir>: a CPU profile of the hub, written there when it exits.
      ...(process.env.BENCH_HUB_PROFILE
        ? {
            NODE_OPTIONS: `--import ${join(REPO_ROOT, 'bench/support/cpu-profile-preload.mjs')}`,
            BENCH_PROFILE_DIR: process.env.BENCH_HUB_PROFILE,
          }
        : {}),
      ...hubEnv,
    },
  });
  cleanup.add('hub', () => hub.stop());
  const nc = await connect({
    servers: [nats.url],
    name: 'bench-webhooks',
    maxReconnectAttempts: 0,
    ignoreClusterUpdates: true,
  });
  cleanup.add('bench connection', () => nc.close());
  return { dir, nats, keys, hub, nc, js: jetstream(nc) };
}

export interface CreatedEndpoint {
  id: string;
  secret: string;
}

export async function createEndpoint(
  hub: HubProcess,
  body: { url: string; event_types?: string[]; max_concurrency?: number; description?: string },
): Promise<CreatedEndpoint> {
  const res = await hub.api<{ id?: string; secret?: string }>('/v1/webhooks/endpoints', body);
  if (res.status !== 201 || res.body.id === undefined || res.body.secret === undefined) {
    throw new Error(`creating an endpoint answered ${res.status}: ${JSON.stringify(res.body).slice(0, 500)}`);
  }
  return { id: res.body.id, secret: res.body.secret };
}

/** Disables an endpoint: its worker stops and new events are no longer queued to it. */
export async function disableEndpoint(hub: HubProcess, id: string): Promise<void> {
  const res = await hub.api(`/v1/webhooks/endpoints/${id}/disable`, {});
  if (res.status !== 200) throw new Error(`disabling ${id} answered ${res.status}`);
}

/** Enables an endpoint: its worker starts again and takes what is queued to it. */
export async function enableEndpoint(hub: HubProcess, id: string): Promise<void> {
  const res = await hub.api(`/v1/webhooks/endpoints/${id}/enable`, {});
  if (res.status !== 200) throw new Error(`enabling ${id} answered ${res.status}`);
}

/**
 * Queues a `webhook.test` to the endpoint and waits until it reaches `receiver`: from then on the
 * endpoint's worker is running. Retries the test every few seconds while the worker starts.
 */
export async function waitUntilDelivering(
  hub: HubProcess,
  endpointId: string,
  receiver: FastReceiver,
  timeoutMs = 30_000,
): Promise<void> {
  const ids: string[] = [];
  let lastSent = 0;
  await waitFor(
    async () => {
      if (ids.some((id) => receiver.firstArrival.has(id))) return true;
      if (performance.now() - lastSent > 5_000) {
        lastSent = performance.now();
        const res = await hub.api<{ message_id?: string }>(`/v1/webhooks/endpoints/${endpointId}/test`, {});
        if (res.status === 202 && res.body.message_id !== undefined) ids.push(res.body.message_id);
      }
      return false;
    },
    { timeoutMs, intervalMs: 20, message: `endpoint ${endpointId} delivers a webhook.test` },
  );
}

/** An admission at `venue` by `agent`, of ticket `ticketId`, scanned now. */
export function admission(venue: string, agent: string, seq: number, ticketId: string): CheckinMessage {
  return {
    v: 1,
    id: newId(),
    venue,
    agent,
    gate: agent,
    seq,
    ticket_id: ticketId,
    direction: 'in',
    decision: 'admit',
    reason: null,
    scanner: 's1',
    method: 'qr',
    unsynced_ticket: false,
    scanned_at: Date.now(),
  };
}

/** Publishes one check-in as an agent's outbox publisher does; resolves on JetStream's ack. */
export async function publishAdmission(js: JetStreamClient, c: CheckinMessage): Promise<void> {
  await js.publish(subjects.checkin(c.venue, c.agent, c.id), encode(c), {
    expect: { lastSubjectSequence: 0 },
    timeout: 5_000,
  });
}

/** Publishes `list` with up to `window` publishes in flight; resolves when every one is acked. */
export async function publishWindowed(
  js: JetStreamClient,
  list: readonly CheckinMessage[],
  window: number,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < list.length; i = next++) await publishAdmission(js, list[i] as CheckinMessage);
  };
  await Promise.all(Array.from({ length: Math.min(window, list.length) }, worker));
}
