/**
 * bench:isolation — a healthy endpoint's delivery latency (p50, p99, max) alone, then with dead endpoints
 * beside it subscribed to the same events, then alone again, in one run; the figure is the ratio of the
 * p99 with the dead endpoints to the p99 alone (both "alone" phases pooled).
 *
 * Set-up: our own nats-server and the hub as a child process (GATESYNC_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8).
 * The healthy receiver (node:http in this process) answers 200 at once and verifies every signature. The
 * dead endpoints, created for the middle phase and disabled after it:
 *   - hanging: a receiver that takes every request and never answers (each attempt ends in the headers
 *     timeout, holding one of its connections until then);
 *   - refused: a loopback port where nothing listens (each attempt fails at connect).
 * Every endpoint has the default max_concurrency (10) and subscribes to `checkin.created`.
 *
 * Hub settings, unless BENCH_HUB_DEFAULTS=1: connect, headers and body timeouts 1 s, retry schedule
 * 1s x 5, throttle floor 1 s, and the circuit breaker effectively off (10,000 consecutive failures), so
 * that during the few seconds of a phase the dead endpoints keep failing and retrying at full speed
 * instead of being parked by their breakers: the hardest case for the healthy endpoint's neighbours. With
 * BENCH_HUB_DEFAULTS=1 the hub runs with every webhook default (5 s / 15 s / 15 s timeouts, breaker after
 * 10 failures): the dead endpoints then fail a handful of times and go quiet.
 *
 * Events: admissions of different tickets published straight to GS_CHECKINS from this process at a fixed
 * rate (an open loop), as gate agents publish them. Latency: from just before the publish to the healthy
 * receiver having read the whole `checkin.created` request for that check-in (performance.now() in this
 * process for both). Each phase first sends 2 s of events that are not recorded (the dead endpoints fill
 * their connections and retry queues), then BENCH_EVENTS recorded ones.
 *
 * Environment (optional): BENCH_EVENTS (300 per phase), BENCH_RATE (50 events/s), BENCH_HUB_DEFAULTS,
 * BENCH_LOG_LEVEL (the hub child's, default info).
 */
import { envInt, envNumber } from './lib/machine.ts';
import {
  fmt,
  machine,
  printJsonLine,
  printMachine,
  printTable,
  progress,
  round,
  runBench,
  type Summary,
  sleep,
  summarize,
} from './support/common.ts';
import type { HubProcess } from './support/hub-process.ts';
import { processCpuMs } from './support/instrument.ts';
import { closedPortUrl, startFastReceiver, startHangingReceiver } from './support/webhook-receiver.ts';
import {
  admission,
  createEndpoint,
  disableEndpoint,
  publishAdmission,
  startWebhookRig,
  waitUntilDelivering,
} from './support/webhook-setup.ts';

const VENUE = 'bench';
const AGENT = 'gate1';
/** Seconds of unrecorded events at the start of each phase. */
const PHASE_WARMUP_S = 2;
/** Milliseconds a phase waits for its last deliveries. */
const TAIL_WAIT_MS = 30_000;
/** The healthy endpoint's p99 beside dead ones should stay within this factor of its p99 alone. */
const TARGET_RATIO = 1.5;

const STRESS_SETTINGS: Record<string, string> = {
  GATESYNC_WEBHOOK_CONNECT_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_HEADERS_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_BODY_TIMEOUT: '1s',
  GATESYNC_WEBHOOK_RETRY_SCHEDULE: '1s,1s,1s,1s,1s',
  GATESYNC_WEBHOOK_THROTTLE_FLOOR: '1s',
  GATESYNC_WEBHOOK_BREAKER_FAILURES: '10000',
};

/** Failed delivery attempts the hub has made so far, all endpoints, from its /metrics. */
async function failedAttempts(hub: HubProcess): Promise<number> {
  const res = await hub.api<string>('/metrics');
  let sum = 0;
  for (const line of String(res.body).split('\n')) {
    if (line.startsWith('gatesync_hub_webhook_attempts_total{') && line.includes('outcome="failed"')) {
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return sum;
}

interface PhaseResult {
  name: string;
  latencies: number[];
  missing: number;
  hubCpuPct: number;
  hangingRequests: number;
  failedAttempts: number;
}

await runBench('bench:isolation', 300_000, async (cleanup) => {
  const m = machine();
  printMachine(m);
  const events = envInt('BENCH_EVENTS', 300);
  const rate = envNumber('BENCH_RATE', 50);
  const hubDefaults = process.env.BENCH_HUB_DEFAULTS === '1';
  const hubEnv = hubDefaults ? {} : STRESS_SETTINGS;

  const rig = await startWebhookRig(cleanup, 'gs-bench-isolation-', hubEnv);
  const healthy = await startFastReceiver();
  cleanup.add('healthy receiver', () => healthy.close());
  const hanging = await startHangingReceiver();
  cleanup.add('hanging receiver', () => hanging.close());
  const refusedUrl = await closedPortUrl();
  const good = await createEndpoint(rig.hub, {
    url: `${healthy.url}/hooks`,
    event_types: ['checkin.created'],
    description: 'bench:isolation healthy',
  });
  healthy.setSecret(good.secret);
  await waitUntilDelivering(rig.hub, good.id, healthy);
  progress(`nats ${rig.nats.url}, hub ${rig.hub.url} (pid ${rig.hub.pid}), healthy endpoint delivering`);

  const arrivedAt = new Map<string, number>();
  healthy.onArrival = (a) => {
    try {
      const body = JSON.parse(a.body) as { type?: string; data?: { checkin_id?: unknown } };
      if (body.type === 'checkin.created' && typeof body.data?.checkin_id === 'string') {
        arrivedAt.set(body.data.checkin_id, a.at);
      }
    } catch {
      // not a check-in message
    }
  };

  let seq = 0;
  const runPhase = async (name: string): Promise<PhaseResult> => {
    const warm = Math.round(PHASE_WARMUP_S * rate);
    const total = warm + events;
    const sentAt = new Map<string, number>();
    const recorded: string[] = [];
    const publishes: Promise<void>[] = [];
    const hangingBefore = hanging.requests;
    const failedBefore = await failedAttempts(rig.hub);
    const cpu0 = processCpuMs(rig.hub.pid) ?? Number.NaN;
    const started = performance.now();
    for (let i = 0; i < total; i++) {
      const wait = started + (i * 1000) / rate - performance.now();
      if (wait > 0) await sleep(wait);
      seq++;
      const c = admission(VENUE, AGENT, seq, `I${seq}`);
      sentAt.set(c.id, performance.now());
      if (i >= warm) recorded.push(c.id);
      publishes.push(publishAdmission(rig.js, c));
    }
    await Promise.all(publishes);
    const deadline = performance.now() + TAIL_WAIT_MS;
    while (recorded.some((id) => !arrivedAt.has(id)) && performance.now() < deadline) await sleep(20);
    const cpuMs = (processCpuMs(rig.hub.pid) ?? Number.NaN) - cpu0;
    const elapsed = performance.now() - started;
    const latencies: number[] = [];
    let missing = 0;
    for (const id of recorded) {
      const at = arrivedAt.get(id);
      if (at === undefined) missing++;
      else latencies.push(at - (sentAt.get(id) as number));
    }
    const s = summarize(latencies);
    progress(
      `${name}: ${latencies.length} delivered, p50 ${fmt(s.p50, 1)} ms, p99 ${fmt(s.p99, 1)} ms, max ${fmt(s.max, 1)} ms`,
    );
    return {
      name,
      latencies,
      missing,
      hubCpuPct: (cpuMs / elapsed) * 100,
      hangingRequests: hanging.requests - hangingBefore,
      failedAttempts: (await failedAttempts(rig.hub)) - failedBefore,
    };
  };

  const alone1 = await runPhase('alone');

  const deadHanging = await createEndpoint(rig.hub, {
    url: `${hanging.url}/hooks`,
    event_types: ['checkin.created'],
    description: 'bench:isolation hanging',
  });
  const deadRefused = await createEndpoint(rig.hub, {
    url: `${refusedUrl}/hooks`,
    event_types: ['checkin.created'],
    description: 'bench:isolation refused',
  });
  const beside = await runPhase('beside dead');
  await disableEndpoint(rig.hub, deadHanging.id);
  await disableEndpoint(rig.hub, deadRefused.id);
  // Let the hanging endpoint's attempts in flight run out before measuring alone again.
  await sleep(hubDefaults ? 16_000 : 1_500);
  const alone2 = await runPhase('alone again');

  const sAlone = summarize([...alone1.latencies, ...alone2.latencies]);
  const sA1 = summarize(alone1.latencies);
  const sA2 = summarize(alone2.latencies);
  const sBeside = summarize(beside.latencies);
  const ratioP99 = sBeside.p99 / sAlone.p99;
  const ratioP50 = sBeside.p50 / sAlone.p50;
  const missing = alone1.missing + beside.missing + alone2.missing;
  const met = missing === 0 && ratioP99 <= TARGET_RATIO;

  console.log();
  console.log(
    `healthy endpoint latency, publish -> signed webhook read (ms); ${events} events per phase at ${fmt(rate, 0)}/s; ` +
      `hub webhook settings: ${hubDefaults ? 'defaults' : 'timeouts 1 s, retries 1s x5, breaker off'}`,
  );
  const row = (label: string, s: Summary, p: PhaseResult | undefined) => [
    label,
    fmt(s.n),
    fmt(s.p50, 1),
    fmt(s.p90, 1),
    fmt(s.p99, 1),
    fmt(s.max, 1),
    fmt(s.p99 / sAlone.p99, 2),
    p === undefined ? '-' : fmt(p.hubCpuPct, 0),
    p === undefined ? '-' : fmt(p.failedAttempts),
    p === undefined ? '-' : fmt(p.hangingRequests),
  ];
  printTable(
    ['phase', 'n', 'p50', 'p90', 'p99', 'max', 'p99 ratio', 'hub CPU %', 'failed attempts', 'hung requests'],
    [
      row('alone', sA1, alone1),
      row('beside a hanging and a refusing endpoint', sBeside, beside),
      row('alone again', sA2, alone2),
      row('alone, both phases (baseline)', sAlone, undefined),
    ],
  );
  console.log(
    `healthy receiver: ${healthy.duplicates} duplicates, ${healthy.badSignatures} bad signatures, ${missing} missing`,
  );
  console.log(
    `target: p99 beside dead endpoints within ${TARGET_RATIO}x of p99 alone: ${met ? 'met' : 'NOT met'} ` +
      `(ratio ${fmt(ratioP99, 2)})`,
  );
  printJsonLine({
    bench: 'isolation',
    cpu: m.cpu,
    cores: m.cores,
    node: m.node,
    load_1m_at_start: m.load1,
    events_per_phase: events,
    rate_per_s: rate,
    hub_settings: hubDefaults ? 'defaults' : 'stress',
    alone_p50_ms: round(sAlone.p50, 1),
    alone_p99_ms: round(sAlone.p99, 1),
    alone_max_ms: round(sAlone.max, 1),
    alone_first_p99_ms: round(sA1.p99, 1),
    alone_again_p99_ms: round(sA2.p99, 1),
    beside_dead_p50_ms: round(sBeside.p50, 1),
    beside_dead_p99_ms: round(sBeside.p99, 1),
    beside_dead_max_ms: round(sBeside.max, 1),
    ratio_p99: round(ratioP99, 2),
    ratio_p50: round(ratioP50, 2),
    hub_cpu_pct_alone: round(alone1.hubCpuPct, 0),
    hub_cpu_pct_beside_dead: round(beside.hubCpuPct, 0),
    failed_attempts_beside_dead: beside.failedAttempts,
    hanging_requests_beside_dead: beside.hangingRequests,
    missing,
    duplicates: healthy.duplicates,
    bad_signatures: healthy.badSignatures,
    target_ratio: TARGET_RATIO,
    target_met: met,
  });
  if (missing > 0) throw new Error(`${missing} deliveries to the healthy endpoint never arrived`);
});
