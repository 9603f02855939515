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

type HubStreamConfig = Partial<StreamConfig> & { name: string };

/** Two minutes of Nats-Msg-Id de-duplication (durable dedupe comes from expected-sequence checks). */
const DEDUPE_WINDOW = 2 * 60 * 1000 * NANOS_PER_MS;
const days = (n: number) => n * DAY_MS * NANOS_PER_MS;

export function streamConfigs(opts: HubStreamOptions): HubStreamConfig[] {
  // What every hub stream shares: file storage, limits retention, direct gets, the configured replicas.
  const stream = (name: string, subject: string, rest: Partial<StreamConfig>): HubStreamConfig => ({
    name,
    subjects: [subject],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    allow_direct: true,
    num_replicas: opts.replicas ?? 1,
    ...rest,
  });
  const checkinAge = days(opts.checkinRetentionDays);
  const webhookAge = days(opts.webhookRetentionDays ?? 30);
  return [
    // The latest signed state of every ticket: a fresh agent reads O(tickets), not O(history).
    stream(STREAMS.tickets, subjects.allTickets, {
      max_msgs_per_subject: 1,
      discard: DiscardPolicy.Old,
      duplicate_window: DEDUPE_WINDOW,
    }),
    stream(STREAMS.checkins, subjects.allCheckins, { max_age: checkinAge, duplicate_window: DEDUPE_WINDOW }),
    // The hub's verdict of each ticket's admission state, written with expected-sequence checks.
    stream(STREAMS.entries, subjects.allEntries, { max_msgs_per_subject: 1, max_age: checkinAge }),
    stream(STREAMS.conflicts, subjects.allConflicts, { max_msgs_per_subject: 1, max_age: checkinAge }),
    // One message per pending delivery; acked (and so removed) once delivered, re-queued or dead.
    stream(STREAMS.webhooks, subjects.allDeliveries, {
      retention: RetentionPolicy.Workqueue,
      allow_direct: false,
      duplicate_window: DEDUPE_WINDOW,
    }),
    stream(STREAMS.messages, subjects.allMessages, {
      max_msgs_per_subject: 1,
      max_age: webhookAge,
      duplicate_window: DEDUPE_WINDOW,
    }),
    stream(STREAMS.attempts, subjects.allAttempts, { max_age: webhookAge }),
    stream(STREAMS.dead, subjects.allDeadLetters, { max_msgs_per_subject: 1, max_age: webhookAge }),
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
