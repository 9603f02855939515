/**
 * Creates (or updates) the JetStream streams and KV buckets the hub owns. Idempotent: every hub process
 * runs it at start-up, so several hubs can start side by side.
 */
import {
  DiscardPolicy,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import type { NatsConnection } from '../shared/nats.ts';
import { KV_BUCKETS, STREAMS, subjects } from '../shared/subjects.ts';

const NANOS_PER_MS = 1_000_000;
const DAY_MS = 24 * 60 * 60 * 1000;

export interface HubStreamOptions {
  /** Days a check-in stays in GS_CHECKINS (and so how late a re-send is still recognised). */
  checkinRetentionDays: number;
  /** Days webhook messages, attempts and dead letters are kept (the window for logs, resend and redrive). */
  webhookRetentionDays?: number;
  /** Copies of every stream and bucket in a NATS cluster (1 on a single server). */
  replicas?: number;
}

export function streamConfigs(opts: HubStreamOptions): (Partial<StreamConfig> & { name: string })[] {
  return [
    {
      name: STREAMS.tickets,
      subjects: [subjects.allTickets],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      // The latest signed state of every ticket: a fresh agent reads O(tickets), not O(history).
      max_msgs_per_subject: 1,
      discard: DiscardPolicy.Old,
      duplicate_window: 2 * 60 * 1000 * NANOS_PER_MS,
      allow_direct: true,
      num_replicas: opts.replicas ?? 1,
    },
    {
      name: STREAMS.checkins,
      subjects: [subjects.allCheckins],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: opts.checkinRetentionDays * DAY_MS * NANOS_PER_MS,
      duplicate_window: 2 * 60 * 1000 * NANOS_PER_MS,
      allow_direct: true,
      num_replicas: opts.replicas ?? 1,
    },
    {
      name: STREAMS.entries,
      subjects: [subjects.allEntries],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      // The hub's verdict of each ticket's admission state, written with expected-sequence checks.
      max_msgs_per_subject: 1,
      max_age: opts.checkinRetentionDays * DAY_MS * NANOS_PER_MS,
      allow_direct: true,
      num_replicas: opts.replicas ?? 1,
    },
    {
      name: STREAMS.conflicts,
      subjects: [subjects.allConflicts],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_msgs_per_subject: 1,
      max_age: opts.checkinRetentionDays * DAY_MS * NANOS_PER_MS,
      allow_direct: true,
      num_replicas: opts.replicas ?? 1,
    },
    {
      name: STREAMS.webhooks,
      subjects: [subjects.allDeliveries],
      // One message per pending delivery; acked (and so removed) once delivered, re-queued or dead.
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      duplicate_window: 2 * 60 * 1000 * NANOS_PER_MS,
      num_replicas: opts.replicas ?? 1,
    },
    {
      name: STREAMS.messages,
      subjects: [subjects.allMessages],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_msgs_per_subject: 1,
      max_age: (opts.webhookRetentionDays ?? 30) * DAY_MS * NANOS_PER_MS,
      duplicate_window: 2 * 60 * 1000 * NANOS_PER_MS,
      allow_direct: true,
      num_replicas: opts.replicas ?? 1,
    },
    {
      name: STREAMS.attempts,
      subjects: [subjects.allAttempts],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_age: (opts.webhookRetentionDays ?? 30) * DAY_MS * NANOS_PER_MS,
      allow_direct: true,
      num_replicas: opts.replicas ?? 1,
    },
    {
      name: STREAMS.dead,
      subjects: [subjects.allDeadLetters],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      max_msgs_per_subject: 1,
      max_age: (opts.webhookRetentionDays ?? 30) * DAY_MS * NANOS_PER_MS,
      allow_direct: true,
      num_replicas: opts.replicas ?? 1,
    },
  ];
}

export async function ensureStreams(jsm: JetStreamManager, opts: HubStreamOptions): Promise<void> {
  for (const cfg of streamConfigs(opts)) {
    const name = cfg.name;
    try {
      await jsm.streams.info(name);
      await jsm.streams.update(name, cfg);
    } catch (err: unknown) {
      if (!(err instanceof Error) || !/stream not found/i.test(err.message)) throw err;
      await jsm.streams.add(cfg);
    }
  }
}

export interface HubBuckets {
  config: KV;
  idempotency: KV;
  agents: KV;
  endpoints: KV;
}

export async function ensureBuckets(nc: NatsConnection, replicas = 1): Promise<HubBuckets> {
  const kvm = new Kvm(nc);
  const config = await kvm.create(KV_BUCKETS.config, { history: 1, storage: 'file', replicas });
  // Idempotency records live a day, as Stripe's do.
  const idempotency = await kvm.create(KV_BUCKETS.idempotency, {
    history: 1,
    storage: 'file',
    ttl: DAY_MS,
    replicas,
  });
  // Agents' latest heartbeats; agents write them as plain publishes to $KV.GS_AGENTS.<venue>.<agent>.
  const agents = await kvm.create(KV_BUCKETS.agents, {
    history: 1,
    storage: 'file',
    ttl: 30 * DAY_MS,
    replicas,
  });
  const endpoints = await kvm.create(KV_BUCKETS.endpoints, { history: 1, storage: 'file', replicas });
  return { config, idempotency, agents, endpoints };
}
