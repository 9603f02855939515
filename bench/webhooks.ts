/**
 * bench:webhooks — deliveries per second from the hub to a fast local receiver, against a bare undici POST
 * loop at the same concurrency to the same receiver with bodies of the same size, in the same run; and a
 * check that no message is lost or delivered twice (by webhook-id).
 *
 * Set-up: our own nats-server, the hub as a child process (GATESYNC_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8), a
 * node:http receiver in this process that answers 200 at once and verifies every signature, and one
 * endpoint subscribed to `checkin.created` with max_concurrency C. A `webhook.test` delivery shows the
 * endpoint's worker is running; W check-ins (BENCH_WARMUP, 3,000) then warm the path up and give a real body
 * as the baseline's, and the bare loop is warmed with BENCH_BARE_WARMUP (10,000) POSTs before it is
 * measured. Both sides are measured warm: with 200 warm-up check-ins, the first few thousand messages of
 * the hub run paid for V8 compiling the ingestion path (the hub's CPU per check-in on the source side fell
 * from 350 us in a first batch of 3,000 to 110-123 us in the next two, measured); the bare loop's child
 * needs about 8,000 requests to settle (181, 58, then 29 to 32 us of CPU per request in consecutive runs of
 * 3,000 and 5,000, measured), so with 1,000 or 3,000 warm-up POSTs its "before" run was the slower one.
 *
 * Hub run: N admissions of N different tickets are published straight to GS_CHECKINS from this process,
 * as gate agents publish them (msgpack, Nats-Msg-Id = check-in id, up to 256 in flight). The hub's webhook
 * source turns each into a `checkin.created` message, stores it, queues a delivery, and the endpoint's
 * worker posts it. The figure is N over the time from the first publish to the arrival of the last of the
 * N messages at the receiver (the whole hub path, fan-out included); the delivery window alone (first to
 * last arrival) is printed too. Then the run waits a little for late duplicates and counts, by
 * webhook-id: lost (expected, never arrived), duplicates (arrived more than once), foreign (unexpected
 * ids) and bad signatures. Any of them non-zero fails the run.
 *
 * Delivery only: the hub's delivery engine without the ingestion pipeline. The endpoint is disabled (its
 * worker stops), N deliveries are queued straight to its GS_WEBHOOKS subject `gs.wh.<endpoint>` as the
 * hub's dispatcher queues them (a `Delivery` with v 1, a fresh chain per message, attempt 1, due_at 0,
 * trigger `test`, Nats-Msg-Id `<chain>.1`), each carrying a `checkin.created` message whose body is the
 * size of the sampled one; then the endpoint is enabled. The figure is N over the time from the enable
 * request to the arrival of the last of the N messages (worker start included); lost, duplicates and
 * foreign are counted as in the hub run and hub/nats CPU is measured over the same span.
 *
 * Baseline: the bare loop (bench/support/bare-post-child.ts) in a process of its own, as the hub is: N
 * POSTs of the sampled body, each freshly signed, C in flight on a Pool of C connections. Run before and
 * after the hub run; the mean is the baseline.
 *
 * Environment (optional): BENCH_MESSAGES (5000), BENCH_CONCURRENCY (16, the endpoint's max_concurrency
 * and the bare loop's), BENCH_WARMUP (3000 check-ins through the hub before it is measured),
 * BENCH_BARE_WARMUP (10000 POSTs of the bare loop before it is measured), BENCH_LOG_LEVEL (the hub child's,
 * default info).
 */

import { readFileSync } from 'node:fs';
import type { NatsConnection } from '@nats-io/transport-node';
import { OUTBOX_WINDOW } from '../gate-agent/outbox-publisher.ts';
import { derivedMessageId } from '../hub/webhooks/dispatcher.ts';
import type { Delivery, WebhookMessage } from '../hub/webhooks/model.ts';
import { newId } from '../shared/ids.ts';
import { subjects } from '../shared/subjects.ts';
import { BenchChild, envInt } from './lib/machine.ts';
import {
  fmt,
  machine,
  printJsonLine,
  printMachine,
  printTable,
  progress,
  round,
  runBench,
  sleep,
} from './support/common.ts';
import type { HubProcess } from './support/hub-process.ts';
import { processCpuMs } from './support/instrument.ts';
import { startFastReceiver } from './support/webhook-receiver.ts';
import {
  admission,
  createEndpoint,
  disableEndpoint,
  enableEndpoint,
  publishWindowed,
  startWebhookRig,
  waitUntilDelivering,
} from './support/webhook-setup.ts';

const VENUE = 'bench';
const AGENT = 'gate1';
/** Check-in publishes in flight: the agent's outbox publisher window. */
const PUBLISH_WINDOW = OUTBOX_WINDOW;
/** Milliseconds the run waits after the last expected arrival for late duplicates. */
const GRACE_MS = 2_000;
/** Milliseconds without a new arrival after which the hub run gives up waiting. */
const STALL_MS = 20_000;

/**
 * Waits until every expected message has arrived at the receiver, or until none has for STALL_MS. Only
 * the ones still missing are looked up at each poll: the run shares the two cores with the hub it
 * measures, so re-counting all 5,000 every 20 ms would be load of its own.
 */
async function waitForArrivals(
  receiver: { firstArrival: ReadonlyMap<string, number> },
  expected: ReadonlySet<string>,
  label: string,
): Promise<void> {
  const missing = new Set(expected);
  let lastProgress = performance.now();
  while (missing.size > 0) {
    const before = missing.size;
    for (const id of missing) if (receiver.firstArrival.has(id)) missing.delete(id);
    if (missing.size !== before) lastProgress = performance.now();
    else if (performance.now() - lastProgress > STALL_MS) {
      progress(
        `${label}: no new arrival for ${STALL_MS} ms, ${expected.size - missing.size} of ${expected.size} arrived`,
      );
      return;
    }
    await sleep(20);
  }
}
const TARGET_RATIO = 0.5;

/**
 * Milliseconds between samples of the hub's in-flight gauge during the hub run. Each sample is a full
 * /metrics scrape (about 2 ms of hub CPU, measured on an idle hub): every 100 ms that was 6 to 7% of the hub's busy
 * time in the measured run.
 */
const IN_FLIGHT_SAMPLE_MS = 250;

/**
 * Read and write system calls a process has made so far (/proc/<pid>/io; socket sends and receives
 * included), or NaN where /proc does not say. Each nats.js flush and each undici request is a write.
 */
function syscalls(pid: number): { reads: number; writes: number } {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (name: string) => Number(/^(\w+): (\d+)$/m.exec(io.slice(io.indexOf(`${name}:`)))?.[2]);
    return { reads: field('syscr'), writes: field('syscw') };
  } catch {
    return { reads: Number.NaN, writes: Number.NaN };
  }
}

/** One value of an unlabelled gauge from the hub's /metrics. */
async function hubGauge(hub: HubProcess, name: string): Promise<number | undefined> {
  const res = await hub.api<string>('/metrics');
  for (const line of String(res.body).split('\n')) {
    if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
  }
  return undefined;
}

/**
 * Counts, with plain core subscriptions, the JetStream API requests the hub makes on GS_WEBHOOKS while
 * it delivers: pull requests (CONSUMER.MSG.NEXT), consumer look-ups (CONSUMER.INFO) and acks. The taps
 * only listen; they change nothing the hub does.
 */
interface ApiCounts {
  pulls: number;
  pulledMessages: number;
  consumerInfo: number;
  acks: number;
}

function tapJetStreamApi(nc: NatsConnection): { stop(): ApiCounts } {
  const counts: ApiCounts = { pulls: 0, pulledMessages: 0, consumerInfo: 0, acks: 0 };
  const subs = [
    nc.subscribe('$JS.API.CONSUMER.MSG.NEXT.GS_WEBHOOKS.>', {
      callback: (_err, msg) => {
        counts.pulls++;
        try {
          const batch = (JSON.parse(msg.string()) as { batch?: number }).batch;
          counts.pulledMessages += typeof batch === 'number' ? batch : 1;
        } catch {
          counts.pulledMessages++;
        }
      },
    }),
    nc.subscribe('$JS.API.CONSUMER.INFO.GS_WEBHOOKS.>', {
      callback: () => {
        counts.consumerInfo++;
      },
    }),
    nc.subscribe('$JS.ACK.GS_WEBHOOKS.>', {
      callback: () => {
        counts.acks++;
      },
    }),
  ];
  return {
    stop() {
      for (const sub of subs) sub.unsubscribe();
      return counts;
    },
  };
}

interface BareResult {
  ms: number;
  ok: number;
  errors: number;
  cpu_ms: number;
  per_s: number;
}

await runBench('bench:webhooks', 300_000, async (cleanup) => {
  const m = machine();
  printMachine(m);
  const n = envInt('BENCH_MESSAGES', 5_000);
  const warmup = envInt('BENCH_WARMUP', 3_000);
  const bareWarmup = envInt('BENCH_BARE_WARMUP', 10_000);
  const concurrency = envInt('BENCH_CONCURRENCY', 16);
  if (concurrency > 100) throw new Error('BENCH_CONCURRENCY is an endpoint max_concurrency: 1 to 100');

  const rig = await startWebhookRig(cleanup, 'gs-bench-webhooks-', {});
  const receiver = await startFastReceiver();
  cleanup.add('receiver', () => receiver.close());
  const endpoint = await createEndpoint(rig.hub, {
    url: `${receiver.url}/hooks`,
    event_types: ['checkin.created'],
    max_concurrency: concurrency,
    description: 'bench:webhooks',
  });
  receiver.setSecret(endpoint.secret);
  await waitUntilDelivering(rig.hub, endpoint.id, receiver);
  progress(
    `nats ${rig.nats.url}, hub ${rig.hub.url} (pid ${rig.hub.pid}), endpoint ${endpoint.id} delivering`,
  );

  const bare = BenchChild.spawn('bench/support/bare-post-child.ts', {});
  cleanup.add('bare loop child', () => bare.stop());
  await bare.next('ready', 30_000);

  let seq = 0;
  let sampleBody = '';
  /** Publishes `count` admissions and waits for all of their messages; returns the timings. */
  const hubRun = async (count: number, label: string) => {
    receiver.reset();
    const checkins = Array.from({ length: count }, () => {
      seq++;
      return admission(VENUE, AGENT, seq, `T${seq}`);
    });
    const expected = new Set(checkins.map((c) => derivedMessageId('checkin.created', c.id)));
    receiver.onArrival = (a) => {
      if (sampleBody === '' && expected.has(a.id)) sampleBody = a.body;
    };
    const taps = tapJetStreamApi(rig.nc);
    const inFlight: number[] = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const v = await hubGauge(rig.hub, 'gatesync_hub_webhook_attempts_in_flight');
        if (v !== undefined) inFlight.push(v);
        await sleep(IN_FLIGHT_SAMPLE_MS);
      }
    })();
    const hubCpu0 = processCpuMs(rig.hub.pid) ?? Number.NaN;
    const natsCpu0 = processCpuMs(rig.nats.pid) ?? Number.NaN;
    const hubIo0 = syscalls(rig.hub.pid);
    const started = performance.now();
    await publishWindowed(rig.js, checkins, PUBLISH_WINDOW);
    const published = performance.now();
    await waitForArrivals(receiver, expected, label);
    const arrivals = [...expected].map((id) => receiver.firstArrival.get(id)).filter((t) => t !== undefined);
    const last = Math.max(...arrivals);
    const first = Math.min(...arrivals);
    const hubCpu = (processCpuMs(rig.hub.pid) ?? Number.NaN) - hubCpu0;
    const natsCpu = (processCpuMs(rig.nats.pid) ?? Number.NaN) - natsCpu0;
    const hubIo = syscalls(rig.hub.pid);
    sampling = false;
    await sampler;
    const api = taps.stop();
    await sleep(GRACE_MS);
    let lost = 0;
    for (const id of expected) if (!receiver.firstArrival.has(id)) lost++;
    let foreign = 0;
    for (const id of receiver.firstArrival.keys()) if (!expected.has(id)) foreign++;
    return {
      count,
      publishMs: published - started,
      totalMs: last - started,
      windowMs: last - first,
      firstArrivalMs: first - started,
      perS: (arrivals.length / (last - started)) * 1000,
      windowPerS: ((arrivals.length - 1) / (last - first)) * 1000,
      lost,
      duplicates: receiver.duplicates,
      foreign,
      requests: receiver.requests,
      verified: receiver.verified,
      badSignatures: receiver.badSignatures,
      hubCpuMs: hubCpu,
      natsCpuMs: natsCpu,
      hubWrites: hubIo.writes - hubIo0.writes,
      hubReads: hubIo.reads - hubIo0.reads,
      api,
      meanInFlight:
        inFlight.length === 0 ? Number.NaN : inFlight.reduce((a, b) => a + b, 0) / inFlight.length,
    };
  };

  const warm = await hubRun(warmup, 'warm-up');
  if (warm.lost > 0) throw new Error(`warm-up: ${warm.lost} of ${warmup} messages never arrived`);
  progress(
    `warm-up: ${warmup} messages in ${fmt(warm.totalMs, 0)} ms, hub CPU ${fmt((warm.hubCpuMs / warmup) * 1000, 0)} us per message; body ${Buffer.byteLength(sampleBody)} B`,
  );

  const bareRun = async (label: string, count = n): Promise<BareResult> => {
    receiver.reset();
    const answer = await bare.ask(
      {
        type: 'run',
        url: receiver.url,
        concurrency,
        count,
        body: sampleBody,
        secret: endpoint.secret,
        idPrefix: `bare_${label}_`,
      },
      'done',
      120_000,
    );
    const r = answer as unknown as Omit<BareResult, 'per_s'>;
    if (r.errors > 0 || receiver.badSignatures > 0 || receiver.firstArrival.size !== count) {
      throw new Error(
        `bare loop ${label}: ${r.errors} errors, ${receiver.badSignatures} bad signatures, ${receiver.firstArrival.size} of ${count} ids`,
      );
    }
    const result = { ...r, per_s: (r.ok / r.ms) * 1000 };
    progress(`bare loop ${label}: ${count} POSTs in ${fmt(r.ms, 0)} ms, ${fmt(result.per_s)}/s`);
    return result;
  };

  await bareRun('warm-up', bareWarmup);
  const bare1 = await bareRun('before');
  const hub = await hubRun(n, 'hub');
  progress(
    `hub: ${n} messages in ${fmt(hub.totalMs, 0)} ms (${fmt(hub.perS)}/s), lost ${hub.lost}, duplicates ${hub.duplicates}`,
  );
  const bare2 = await bareRun('after');

  /** Delivery only: N deliveries queued to the disabled endpoint, then the endpoint enabled. */
  const deliveryOnlyRun = async (count: number) => {
    const sample = JSON.parse(sampleBody) as Pick<WebhookMessage, 'type' | 'timestamp' | 'data'>;
    await disableEndpoint(rig.hub, endpoint.id);
    await sleep(1_000); // the worker stops
    receiver.reset();
    receiver.onArrival = undefined;
    const tag = newId();
    const deliveries: Delivery[] = Array.from({ length: count }, (_, i) => ({
      v: 1,
      message: {
        id: derivedMessageId('checkin.created', `delivery-only.${tag}.${i}`),
        type: sample.type,
        timestamp: sample.timestamp,
        data: sample.data,
        venue: VENUE,
        order_key: `DO${i}`,
      },
      endpoint_id: endpoint.id,
      chain: `test_${newId()}`,
      attempt: 1,
      due_at: 0,
      trigger: 'test',
    }));
    const expected = new Set(deliveries.map((d) => d.message.id));
    const subject = subjects.delivery(endpoint.id);
    const queueStarted = performance.now();
    let next = 0;
    const publisher = async () => {
      for (let i = next++; i < deliveries.length; i = next++) {
        const d = deliveries[i] as Delivery;
        await rig.js.publish(subject, JSON.stringify(d), {
          msgID: `${d.chain}.${d.attempt}`,
          timeout: 5_000,
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(PUBLISH_WINDOW, count) }, publisher));
    const queueMs = performance.now() - queueStarted;
    await sleep(500);
    if (receiver.requests > 0) throw new Error(`delivery only: ${receiver.requests} requests while disabled`);

    const taps = tapJetStreamApi(rig.nc);
    const hubCpu0 = processCpuMs(rig.hub.pid) ?? Number.NaN;
    const natsCpu0 = processCpuMs(rig.nats.pid) ?? Number.NaN;
    const hubIo0 = syscalls(rig.hub.pid);
    const started = performance.now();
    await enableEndpoint(rig.hub, endpoint.id);
    const enabledMs = performance.now() - started;
    await waitForArrivals(receiver, expected, 'delivery only');
    const arrivals = [...expected].map((id) => receiver.firstArrival.get(id)).filter((t) => t !== undefined);
    const last = Math.max(...arrivals);
    const first = Math.min(...arrivals);
    const hubCpu = (processCpuMs(rig.hub.pid) ?? Number.NaN) - hubCpu0;
    const natsCpu = (processCpuMs(rig.nats.pid) ?? Number.NaN) - natsCpu0;
    const hubIo = syscalls(rig.hub.pid);
    const api = taps.stop();
    await sleep(GRACE_MS);
    let lost = 0;
    for (const id of expected) if (!receiver.firstArrival.has(id)) lost++;
    let foreign = 0;
    for (const id of receiver.firstArrival.keys()) if (!expected.has(id)) foreign++;
    return {
      count,
      queueMs,
      enabledMs,
      totalMs: last - started,
      firstArrivalMs: first - started,
      perS: (arrivals.length / (last - started)) * 1000,
      lost,
      duplicates: receiver.duplicates,
      foreign,
      badSignatures: receiver.badSignatures,
      hubCpuMs: hubCpu,
      natsCpuMs: natsCpu,
      hubWrites: hubIo.writes - hubIo0.writes,
      hubReads: hubIo.reads - hubIo0.reads,
      api,
    };
  };
  const only = await deliveryOnlyRun(n);
  progress(
    `delivery only: ${n} messages in ${fmt(only.totalMs, 0)} ms (${fmt(only.perS)}/s), lost ${only.lost}, duplicates ${only.duplicates}`,
  );
  const bareMean = (bare1.per_s + bare2.per_s) / 2;
  const ratio = hub.perS / bareMean;
  const windowRatio = hub.windowPerS / bareMean;
  const clean = hub.lost === 0 && hub.duplicates === 0 && hub.foreign === 0 && hub.badSignatures === 0;
  const onlyRatio = only.perS / bareMean;
  const onlyClean =
    only.lost === 0 && only.duplicates === 0 && only.foreign === 0 && only.badSignatures === 0;

  console.log();
  console.log(
    `${n} messages, concurrency ${concurrency}, body ${Buffer.byteLength(sampleBody)} B; ratio = deliveries/s over the bare loops' mean`,
  );
  const cpuPer = (ms: number) => fmt((ms / n) * 1000, 0);
  printTable(
    ['run', 'deliveries/s', 'ms', 'ratio', 'sender CPU us/msg', 'nats CPU us/msg'],
    [
      ['bare undici POST loop, before', fmt(bare1.per_s), fmt(bare1.ms, 0), '-', cpuPer(bare1.cpu_ms), '-'],
      [
        'hub: first publish -> last arrival',
        fmt(hub.perS),
        fmt(hub.totalMs, 0),
        fmt(ratio, 2),
        cpuPer(hub.hubCpuMs),
        cpuPer(hub.natsCpuMs),
      ],
      [
        'hub: first -> last arrival',
        fmt(hub.windowPerS),
        fmt(hub.windowMs, 0),
        fmt(windowRatio, 2),
        '-',
        '-',
      ],
      ['bare undici POST loop, after', fmt(bare2.per_s), fmt(bare2.ms, 0), '-', cpuPer(bare2.cpu_ms), '-'],
      [
        'hub, delivery only: enable -> last arrival',
        fmt(only.perS),
        fmt(only.totalMs, 0),
        fmt(onlyRatio, 2),
        cpuPer(only.hubCpuMs),
        cpuPer(only.natsCpuMs),
      ],
    ],
  );
  console.log(
    `hub run: check-ins published in ${fmt(hub.publishMs, 0)} ms, first delivery ${fmt(hub.firstArrivalMs, 0)} ms after the first publish`,
  );
  const per = (v: number) => fmt(v / n, 2);
  console.log(
    `hub worker, per delivery: ${per(hub.api.pulls)} pull requests (asking for ${per(hub.api.pulledMessages)} messages), ` +
      `${per(hub.api.consumerInfo)} consumer look-ups, ${per(hub.api.acks)} acks; ` +
      `mean attempts in flight ${fmt(hub.meanInFlight, 1)} of ${concurrency} allowed`,
  );
  console.log(
    `hub process, per delivery: ${per(hub.hubWrites)} write and ${per(hub.hubReads)} read system calls end to end; ` +
      `${per(only.hubWrites)} and ${per(only.hubReads)} delivery only`,
  );
  console.log(
    `receiver: ${hub.requests} requests, ${hub.verified} signatures verified, ${hub.badSignatures} bad; ` +
      `lost ${hub.lost}, duplicates ${hub.duplicates}, foreign ${hub.foreign}`,
  );
  console.log(
    `delivery only: ${n} deliveries queued to the disabled endpoint in ${fmt(only.queueMs, 0)} ms; enable answered in ` +
      `${fmt(only.enabledMs, 0)} ms, first delivery ${fmt(only.firstArrivalMs, 0)} ms after it; per delivery ` +
      `${per(only.api.pulls)} pull requests, ${per(only.api.consumerInfo)} consumer look-ups, ${per(only.api.acks)} acks; ` +
      `lost ${only.lost}, duplicates ${only.duplicates}, foreign ${only.foreign}, bad signatures ${only.badSignatures}`,
  );
  console.log(
    `target: >= ${TARGET_RATIO} of the bare loop with nothing lost or doubled: ` +
      `${ratio >= TARGET_RATIO && clean ? 'met' : 'NOT met'} (ratio ${fmt(ratio, 2)})`,
  );
  printJsonLine({
    bench: 'webhooks',
    cpu: m.cpu,
    cores: m.cores,
    node: m.node,
    load_1m_at_start: m.load1,
    messages: n,
    warmup_messages: warmup,
    bare_warmup_posts: bareWarmup,
    warmup_hub_cpu_us_per_msg: round((warm.hubCpuMs / warmup) * 1000, 0),
    concurrency,
    body_bytes: Buffer.byteLength(sampleBody),
    hub_per_s: round(hub.perS, 0),
    hub_ms: round(hub.totalMs, 0),
    hub_window_per_s: round(hub.windowPerS, 0),
    hub_publish_ms: round(hub.publishMs, 0),
    hub_cpu_us_per_msg: round((hub.hubCpuMs / n) * 1000, 0),
    nats_cpu_us_per_msg: round((hub.natsCpuMs / n) * 1000, 0),
    pulls_per_msg: round(hub.api.pulls / n, 2),
    consumer_info_per_msg: round(hub.api.consumerInfo / n, 2),
    acks_per_msg: round(hub.api.acks / n, 2),
    mean_in_flight: round(hub.meanInFlight, 1),
    bare_per_s: [round(bare1.per_s, 0), round(bare2.per_s, 0)],
    bare_cpu_us_per_msg: round((((bare1.cpu_ms + bare2.cpu_ms) / 2) * 1000) / n, 0),
    ratio: round(ratio, 2),
    ratio_window: round(windowRatio, 2),
    lost: hub.lost,
    duplicates: hub.duplicates,
    foreign: hub.foreign,
    bad_signatures: hub.badSignatures,
    verified: hub.verified,
    delivery_only_per_s: round(only.perS, 0),
    delivery_only_ms: round(only.totalMs, 0),
    delivery_only_ratio: round(onlyRatio, 2),
    delivery_only_hub_cpu_us_per_msg: round((only.hubCpuMs / n) * 1000, 0),
    delivery_only_nats_cpu_us_per_msg: round((only.natsCpuMs / n) * 1000, 0),
    delivery_only_pulls_per_msg: round(only.api.pulls / n, 2),
    hub_writes_per_msg: round(hub.hubWrites / n, 2),
    hub_reads_per_msg: round(hub.hubReads / n, 2),
    delivery_only_hub_writes_per_msg: round(only.hubWrites / n, 2),
    delivery_only_hub_reads_per_msg: round(only.hubReads / n, 2),
    delivery_only_lost: only.lost,
    delivery_only_duplicates: only.duplicates,
    delivery_only_foreign: only.foreign,
    delivery_only_bad_signatures: only.badSignatures,
    target_ratio: TARGET_RATIO,
    target_met: ratio >= TARGET_RATIO && clean,
  });
  if (!clean) {
    throw new Error(
      `lost ${hub.lost}, duplicates ${hub.duplicates}, foreign ${hub.foreign}, bad signatures ${hub.badSignatures}`,
    );
  }
  if (!onlyClean) {
    throw new Error(
      `delivery only: lost ${only.lost}, duplicates ${only.duplicates}, foreign ${only.foreign}, bad signatures ${only.badSignatures}`,
    );
  }
});
