/**
 * The baselines: what plain nats.js + JetStream does on the same server with messages of the same size,
 * with none of gatesync around it. Each uses its own stream (`GSBENCH_<tag>`, subjects `gsbench.<tag>.>`),
 * configured like GS_CHECKINS (file storage, 2-minute duplicate window), and its own connection(s).
 *
 * - publishWindow: N publishes, each with expect lastSubjectSequence 0 on its own subject (as the agent's
 *   outbox publishes check-ins, without a Nats-Msg-Id since 2026-11-23), up
 *   to `window` in flight (a slot is refilled as soon as any ack returns). This is the ideal the outbox
 *   publisher's drain is compared with.
 * - deliveryLatency: one message at a time, time from publish() to its arrival at an ordered consumer
 *   (consume(), max_messages 1000, expires 5 s, as peer-checkins.ts reads) on a second connection.
 */
import {
  DeliverPolicy,
  type JetStreamClient,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { newId } from '../../shared/ids.ts';

const NANOS_PER_MS = 1_000_000;

export async function connectPlain(url: string, name: string): Promise<NatsConnection> {
  // noAsyncTraces as the agent has it: with the client's default, every request builds two Error objects
  // with stack traces, which made this baseline slower than the agent's own publishes per message.
  return connect({
    servers: [url],
    name,
    maxReconnectAttempts: 0,
    ignoreClusterUpdates: true,
    noAsyncTraces: true,
  });
}

/** Creates the baseline's stream; returns its subject prefix (`gsbench.<tag>`). */
export async function createBaselineStream(nc: NatsConnection, tag: string): Promise<string> {
  const jsm = await jetstreamManager(nc);
  const prefix = `gsbench.${tag}`;
  await jsm.streams.add({
    name: `GSBENCH_${tag.toUpperCase()}`,
    subjects: [`${prefix}.>`],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    duplicate_window: 2 * 60 * 1000 * NANOS_PER_MS,
    num_replicas: 1,
  });
  return prefix;
}

/**
 * A subject as long as a check-in's (`gs.chk.<venue>.<agent>.<checkin id>`) under `prefix`: the same
 * number of bytes on the wire and in the stream's subject index.
 */
export function subjectLike(prefix: string, checkinSubjectLength: number, id: string): string {
  const head = `${prefix}.`;
  const pad = Math.max(1, checkinSubjectLength - head.length - id.length - 1);
  return `${head}${'x'.repeat(pad)}.${id}`;
}

export interface WindowResult {
  ms: number;
  acked: number;
  duplicates: number;
}

/** Publishes `count` messages of `payload` with up to `window` in flight; resolves when all are acked. */
export async function publishWindow(
  js: JetStreamClient,
  opts: { prefix: string; subjectLength: number; payload: Uint8Array; count: number; window: number },
): Promise<WindowResult> {
  // Subjects and ids are made before the clock starts: only the publishing is timed.
  const ids = Array.from({ length: opts.count }, () => newId());
  const subjectsList = ids.map((id) => subjectLike(opts.prefix, opts.subjectLength, id));
  let next = 0;
  let acked = 0;
  let duplicates = 0;
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    let inFlight = 0;
    let failed = false;
    const pump = () => {
      while (!failed && inFlight < opts.window && next < opts.count) {
        const i = next++;
        inFlight++;
        js.publish(subjectsList[i] as string, opts.payload, {
          expect: { lastSubjectSequence: 0 },
          timeout: 5_000,
        }).then(
          (ack) => {
            inFlight--;
            acked++;
            if (ack.duplicate) duplicates++;
            if (acked === opts.count) resolve();
            else pump();
          },
          (err: unknown) => {
            failed = true;
            reject(err);
          },
        );
      }
    };
    pump();
  });
  return { ms: performance.now() - started, acked, duplicates };
}

/**
 * Measures publish -> ordered-consumer delivery, one message at a time, `count` times after `warmup`
 * unmeasured ones. Returns the latencies in milliseconds.
 */
export async function deliveryLatency(opts: {
  pub: NatsConnection;
  sub: NatsConnection;
  stream: string;
  prefix: string;
  subjectLength: number;
  payload: Uint8Array;
  count: number;
  warmup: number;
  /** Pause between samples, milliseconds (the cross-gate loop has its own gaps too). */
  gapMs: number;
}): Promise<number[]> {
  const js = jetstream(opts.pub);
  const consumer = await jetstream(opts.sub).consumers.get(opts.stream, {
    filter_subjects: `${opts.prefix}.>`,
    // All, not New: the stream is this baseline's own and empty, and a consumer created a moment after
    // the first publish must still deliver it.
    deliver_policy: DeliverPolicy.All,
  });
  const iter = await consumer.consume({ max_messages: 1_000, expires: 5_000 });
  const waiting = new Map<string, (at: number) => void>();
  const reader = (async () => {
    for await (const m of iter) {
      const at = performance.now();
      waiting.get(m.subject)?.(at);
    }
  })();
  const samples: number[] = [];
  try {
    for (let i = 0; i < opts.warmup + opts.count; i++) {
      const id = newId();
      const subject = subjectLike(opts.prefix, opts.subjectLength, id);
      let timer: NodeJS.Timeout | undefined;
      const arrived = new Promise<number>((resolve, reject) => {
        waiting.set(subject, resolve);
        timer = setTimeout(() => reject(new Error(`baseline message ${i} not delivered in 10 s`)), 10_000);
      });
      const started = performance.now();
      const ack = js.publish(subject, opts.payload, { expect: { lastSubjectSequence: 0 } });
      const at = await arrived.finally(() => clearTimeout(timer));
      await ack;
      waiting.delete(subject);
      if (i >= opts.warmup) samples.push(at - started);
      if (opts.gapMs > 0) await new Promise((r) => setTimeout(r, opts.gapMs));
    }
  } finally {
    iter.stop();
    await reader.catch(() => undefined);
  }
  return samples;
}
