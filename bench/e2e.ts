/**
 * bench:e2e — from a scan at a gate to the signed webhook arriving at a subscriber: p50, p99 and max over
 * scans spread over time (an open loop at a fixed rate, not a burst); target p99 under 500 ms on loopback.
 *
 * Set-up: our own nats-server, the hub as a child process (GATESYNC_WEBHOOK_ALLOW_CIDRS=127.0.0.0/8, every
 * other webhook setting at its default), a real gate agent as a child process (`gatesync agent`, as a gate
 * on its own machine), a node:http receiver in this process that verifies every signature, and one endpoint
 * subscribed to `checkin.created` (default max_concurrency). Tickets are issued through the batch API and
 * synced to the agent; a `webhook.test` shows the endpoint's worker is running.
 *
 * Scans: POST /v1/scans at the agent, one every 1000/BENCH_RATE ms whether or not the previous one has been
 * answered, each of a different ticket (every one an admission). The first 20 are warm-up. Clocks, all
 * performance.now() in this process:
 *   sent      the scan request is handed to fetch
 *   answered  the agent's answer has been read (its check-in is on the agent's disk)
 *   at server a plain core subscription on the venue's check-in subjects sees the check-in, as the
 *             server stores it in GS_CHECKINS (the baseline: what the gate side costs)
 *   webhook   the receiver has read the whole request of the `checkin.created` message whose
 *             data.checkin_id is the scan's check-in, with a valid signature
 * The webhook leg (at server -> webhook) is the hub's: its webhook source, the dispatcher's two publishes,
 * the endpoint's worker fetching the delivery, and the HTTP POST.
 *
 * Environment (optional): BENCH_SCANS (500), BENCH_RATE (25 scans/s), BENCH_LOG_LEVEL (the hub child's).
 */
import { join } from 'node:path';
import { subjects } from '../shared/subjects.ts';
import { agentEnv, httpJson, SCANNER_TOKEN, type ScanAnswer, spawnAgent } from '../test/harness/gatesync.ts';
import { waitFor } from '../test/harness/index.ts';
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
import { issueTickets } from './support/hub-process.ts';
import { startFastReceiver } from './support/webhook-receiver.ts';
import { createEndpoint, startWebhookRig, waitUntilDelivering } from './support/webhook-setup.ts';

const VENUE = 'bench';
const GATE = 'gate1';
const WARMUP = 20;
/** Milliseconds: p99 from scan to webhook must stay under this (issue 4). */
const TARGET_P99_MS = 500;
/** Milliseconds the run waits for the last webhooks after the last answer. */
const TAIL_WAIT_MS = 30_000;

interface Sample {
  sent: number;
  answered?: number;
  checkinId?: string;
}

await runBench('bench:e2e', 300_000, async (cleanup) => {
  const m = machine();
  printMachine(m);
  const n = envInt('BENCH_SCANS', 500);
  const rate = envNumber('BENCH_RATE', 25);
  const total = n + WARMUP;

  const rig = await startWebhookRig(cleanup, 'gs-bench-e2e-', {});
  const agent = await spawnAgent(
    agentEnv({
      natsUrl: rig.nats.url,
      venue: VENUE,
      agentId: GATE,
      gate: GATE,
      dbPath: join(rig.dir, `${GATE}.db`),
      trusted: rig.keys.trusted,
    }),
  );
  cleanup.add('agent', () => agent.stop());
  const receiver = await startFastReceiver();
  cleanup.add('receiver', () => receiver.close());
  const endpoint = await createEndpoint(rig.hub, {
    url: `${receiver.url}/hooks`,
    event_types: ['checkin.created'],
    description: 'bench:e2e',
  });
  receiver.setSecret(endpoint.secret);
  await waitUntilDelivering(rig.hub, endpoint.id, receiver);
  progress(
    `nats ${rig.nats.url}, hub ${rig.hub.url}, agent ${agent.url} (pid ${agent.pid}), endpoint delivering`,
  );

  const qrs = await issueTickets(rig.hub, VENUE, total, 'E');
  await waitFor(
    async () =>
      (await httpJson<{ tickets_held: number }>(`${agent.url}/v1/status`, { token: SCANNER_TOKEN })).body
        .tickets_held >= total,
    { timeoutMs: 60_000, intervalMs: 50, message: `the agent holds ${total} tickets` },
  );
  progress(`${total} tickets synced to the agent`);

  // When each check-in passes through the server, by check-in id.
  const atServer = new Map<string, number>();
  const tap = rig.nc.subscribe(subjects.venueCheckins(VENUE), {
    callback: (_err, msg) => {
      atServer.set(msg.subject.slice(msg.subject.lastIndexOf('.') + 1), performance.now());
    },
  });
  cleanup.add('check-in tap', () => tap.unsubscribe());
  // When each check-in's webhook arrived, by check-in id.
  const webhookAt = new Map<string, number>();
  receiver.onArrival = (a) => {
    try {
      const body = JSON.parse(a.body) as { type?: string; data?: { checkin_id?: unknown } };
      if (body.type === 'checkin.created' && typeof body.data?.checkin_id === 'string') {
        webhookAt.set(body.data.checkin_id, a.at);
      }
    } catch {
      // not ours: counted by the receiver, ignored here
    }
  };
  const badBefore = receiver.badSignatures;

  const samples: Sample[] = [];
  const inFlight: Promise<void>[] = [];
  const intervalMs = 1000 / rate;
  const started = performance.now();
  for (let i = 0; i < total; i++) {
    const due = started + i * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    const s: Sample = { sent: performance.now() };
    samples.push(s);
    inFlight.push(
      httpJson<ScanAnswer>(`${agent.url}/v1/scans`, {
        token: SCANNER_TOKEN,
        body: { code: qrs[i], direction: 'in' },
      }).then((r) => {
        s.answered = performance.now();
        if (r.status !== 200 || r.body.decision !== 'admit') {
          throw new Error(`scan ${i} answered ${r.status}: ${JSON.stringify(r.body)}`);
        }
        s.checkinId = r.body.checkin_id;
      }),
    );
    if (i > 0 && i % 100 === 0) progress(`${i} of ${total} scans sent, ${webhookAt.size} webhooks arrived`);
  }
  await Promise.all(inFlight);
  const scansMs = performance.now() - started;
  await waitFor(() => samples.every((s) => s.checkinId !== undefined && webhookAt.has(s.checkinId)), {
    timeoutMs: TAIL_WAIT_MS,
    intervalMs: 20,
    message: 'every scan has its webhook',
  }).catch(() => undefined);

  const recorded = samples.slice(WARMUP);
  const toWebhook: number[] = [];
  const answerToWebhook: number[] = [];
  const toServer: number[] = [];
  const serverToWebhook: number[] = [];
  const rtt: number[] = [];
  let missing = 0;
  for (const s of recorded) {
    const id = s.checkinId as string;
    const hook = webhookAt.get(id);
    const server = atServer.get(id);
    const answered = s.answered as number;
    rtt.push(answered - s.sent);
    if (server !== undefined) toServer.push(server - s.sent);
    if (hook === undefined) {
      missing++;
      continue;
    }
    toWebhook.push(hook - s.sent);
    answerToWebhook.push(hook - answered);
    if (server !== undefined) serverToWebhook.push(hook - server);
  }
  const sHook = summarize(toWebhook);
  const sAnswerHook = summarize(answerToWebhook);
  const sServer = summarize(toServer);
  const sLeg = summarize(serverToWebhook);
  const sRtt = summarize(rtt);
  const bad = receiver.badSignatures - badBefore;
  const met = missing === 0 && bad === 0 && sHook.p99 < TARGET_P99_MS;

  console.log();
  console.log(
    `${n} scans at ${fmt(rate, 0)}/s (sent over ${fmt(scansMs / 1000, 1)} s, ${WARMUP} more as warm-up), one ticket each; ` +
      `milliseconds; ratio = p50 / p50 of scan -> check-in at the server`,
  );
  const row = (label: string, s: Summary) => [
    label,
    fmt(s.n),
    fmt(s.p50, 1),
    fmt(s.p90, 1),
    fmt(s.p99, 1),
    fmt(s.max, 1),
    fmt(s.p50 / sServer.p50, 2),
  ];
  printTable(
    ['measure', 'n', 'p50', 'p90', 'p99', 'max', 'ratio'],
    [
      row('scan sent -> signed webhook at the receiver', sHook),
      row('  scan answered -> webhook', sAnswerHook),
      row('  check-in at the server -> webhook (the hub leg)', sLeg),
      row('scan sent -> check-in at the server (baseline)', sServer),
      row('scan round trip (context)', sRtt),
    ],
  );
  console.log(
    `receiver: ${toWebhook.length} of ${n} webhooks arrived (${missing} missing), ${receiver.duplicates} duplicates, ${bad} bad signatures`,
  );
  console.log(
    `target: p99 scan -> webhook < ${TARGET_P99_MS} ms: ${met ? 'met' : 'NOT met'} (p99 ${fmt(sHook.p99, 1)} ms, max ${fmt(sHook.max, 1)} ms)`,
  );
  printJsonLine({
    bench: 'e2e',
    cpu: m.cpu,
    cores: m.cores,
    node: m.node,
    load_1m_at_start: m.load1,
    scans: n,
    rate_per_s: rate,
    p50_ms: round(sHook.p50, 1),
    p90_ms: round(sHook.p90, 1),
    p99_ms: round(sHook.p99, 1),
    max_ms: round(sHook.max, 1),
    hub_leg_p50_ms: round(sLeg.p50, 1),
    hub_leg_p99_ms: round(sLeg.p99, 1),
    hub_leg_max_ms: round(sLeg.max, 1),
    to_server_p50_ms: round(sServer.p50, 1),
    to_server_p99_ms: round(sServer.p99, 1),
    to_server_max_ms: round(sServer.max, 1),
    scan_rtt_p50_ms: round(sRtt.p50, 1),
    scan_rtt_p99_ms: round(sRtt.p99, 1),
    ratio_p50: round(sHook.p50 / sServer.p50, 2),
    missing,
    duplicates: receiver.duplicates,
    bad_signatures: bad,
    target_p99_ms: TARGET_P99_MS,
    target_met: met,
  });
  if (missing > 0 || bad > 0) throw new Error(`${missing} webhooks missing, ${bad} bad signatures`);
});
