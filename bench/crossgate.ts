/**
 * bench:crossgate — cross-gate freshness: after gate A (north) admits a ticket, how long until gate B
 * (south) would refuse it `already_used`, both online; against the bare JetStream publish -> ordered
 * consumer delivery latency of messages of the same size on the same server, in the same run.
 *
 * Set-up: our own nats-server (harness, ephemeral port, own store), the hub as a child process, and two
 * gate agents of one venue in this process, each connected straight to the server. 1,000 tickets (plus
 * 20 for warm-up) are issued through the batch API and synced to both.
 *
 * For each ticket, one after the other: POST /v1/scans at north (admit); from the moment north's answer
 * arrives, south.store.getPresence(ticket) is polled every millisecond (setTimeout(1), so about 1.1 ms
 * of resolution) until it shows the ticket inside — exactly what south's scan decision reads. South's
 * answer is then confirmed over HTTP with GET /v1/tickets/{code} (a preview: it redeems nothing), outside
 * the timing. The moment south's store committed the check-in is also taken without polling, by metering
 * south's store.applyVenueCheckins (the wrapper times the call and changes nothing).
 *
 * Baseline: one message at a time, publish() (expect lastSubjectSequence 0, payload as long as one
 * encoded check-in, subject as long as a check-in's) on one connection -> arrival at an ordered consumer
 * (consume(), max_messages 1000, expires 5 s, as peer-checkins.ts reads) on a second connection, to a
 * separate stream. Baseline and gatesync alternate in two halves each.
 *
 * Environment (optional): BENCH_TICKETS (1000), BENCH_LOG_LEVEL (the hub child's, default info).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { STREAMS, subjects } from '../shared/subjects.ts';
import {
  agentEnv,
  httpJson,
  makeKeys,
  SCANNER_TOKEN,
  type ScanAnswer,
  spawnAgent,
  startTestAgent,
} from '../test/harness/gatesync.ts';
import { startNats, tmpDir, waitFor } from '../test/harness/index.ts';
import { envInt } from './lib/machine.ts';
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
import { issueTickets, spawnHub } from './support/hub-process.ts';
import { connectPlain, createBaselineStream, deliveryLatency } from './support/jetstream-baseline.ts';

const VENUE = 'bench';
const WARMUP = 20;
/** Milliseconds: gate B must refuse within a second (peer-checkins.ts, test/checkins.test.ts). */
const TARGET_MAX_MS = 1_000;
/** Milliseconds south is given to see one admission before the run fails. */
const SEEN_LIMIT_MS = 10_000;

await runBench('bench:crossgate', 150_000, async (cleanup) => {
  const m = machine();
  printMachine(m);
  const n = envInt('BENCH_TICKETS', 1_000);

  const dir = await tmpDir('gs-bench-crossgate-');
  cleanup.add('temp dir', () => rm(dir, { recursive: true, force: true }));
  const nats = await startNats();
  cleanup.add('nats-server', () => nats.cleanup());
  const keys = makeKeys(dir);
  const hub = await spawnHub({ natsUrl: nats.url, dataDir: join(dir, 'hub'), signingKeyFile: keys.file });
  cleanup.add('hub', () => hub.stop());
  const gateOptions = (gate: string) => ({
    natsUrl: nats.url,
    venue: VENUE,
    agentId: gate,
    gate,
    dbPath: join(dir, `${gate}.db`),
    trusted: keys.trusted,
  });
  // North in a child process, as a gate on its own machine: its commits never block south's event loop.
  const north = await spawnAgent(agentEnv(gateOptions('north')));
  cleanup.add('agent north', () => north.stop());
  const south = await startTestAgent(gateOptions('south'));
  cleanup.add('agent south', () => south.stop());
  await south.networkReady;
  progress(
    `nats ${nats.url}, hub ${hub.url} (pid ${hub.pid}), north ${north.url} (pid ${north.pid}), south ${south.url}`,
  );

  const total = n + WARMUP;
  const qrs = await issueTickets(hub, VENUE, total, 'X');
  await waitFor(
    async () =>
      (await httpJson<{ tickets_held: number }>(`${north.url}/v1/status`, { token: SCANNER_TOKEN })).body
        .tickets_held >= total,
    { timeoutMs: 60_000, intervalMs: 50, message: `north holds ${total} tickets` },
  );
  await waitFor(() => south.store.ticketCount() >= total, {
    timeoutMs: 60_000,
    intervalMs: 50,
    message: `south holds ${total} tickets`,
  });
  progress(`${total} tickets synced to both gates`);
  const scanNorth = async (code: string): Promise<ScanAnswer> => {
    const r = await httpJson<ScanAnswer>(`${north.url}/v1/scans`, {
      token: SCANNER_TOKEN,
      body: { code, direction: 'in' },
    });
    if (r.status !== 200) throw new Error(`north answered ${r.status}: ${JSON.stringify(r.body)}`);
    return r.body;
  };

  const direct = {
    pub: await connectPlain(nats.url, 'bench-latency-pub'),
    sub: await connectPlain(nats.url, 'bench-latency-sub'),
  };
  cleanup.add('baseline connections', async () => {
    await direct.pub.close();
    await direct.sub.close();
  });

  // When each check-in passes through the server, by check-in id: a plain core subscription on the
  // check-in subjects gets it as the stream stores it.
  const onWire = new Map<string, number>();
  const tap = direct.sub.subscribe(subjects.venueCheckins(VENUE), {
    callback: (_err, msg) => {
      onWire.set(msg.subject.slice(msg.subject.lastIndexOf('.') + 1), performance.now());
    },
  });
  cleanup.add('check-in tap', () => tap.unsubscribe());

  // When south's store commits the check-in of the ticket being waited for (no polling involved).
  let awaited: string | undefined;
  let appliedAt: number | undefined;
  const original = south.store.applyVenueCheckins;
  let applyMs: number | undefined;
  south.store.applyVenueCheckins = function (this: typeof south.store, ...args) {
    const started = performance.now();
    const result = original.apply(this, args);
    if (awaited !== undefined && args[1].some((c) => c.ticket_id === awaited)) {
      appliedAt = performance.now();
      applyMs = appliedAt - started;
    }
    return result;
  };

  const polled: number[] = [];
  const exact: number[] = [];
  const fromRequest: number[] = [];
  /** North's answer -> the check-in passes the server (negative: it was published before the answer). */
  const wire: number[] = [];
  /** The check-in passes the server -> south's store has committed it. */
  const wireToCommit: number[] = [];
  /** Milliseconds south's applyVenueCheckins (one SQLite transaction, fsync included) took. */
  const southApply: number[] = [];
  const scanRtt: number[] = [];
  let refusedOverHttp = 0;
  let payload: Uint8Array | undefined;
  let subjectLength = 0;
  let next = 0;
  const gatesync = async (count: number, record: boolean) => {
    for (let k = 0; k < count; k++) {
      const i = next++;
      const ticketId = `X${i}`;
      const qr = qrs[i] as string;
      awaited = ticketId;
      appliedAt = undefined;
      applyMs = undefined;
      const requested = performance.now();
      const answer = await scanNorth(qr);
      const answered = performance.now();
      if (answer.decision !== 'admit') throw new Error(`north did not admit ${ticketId}: ${answer.reason}`);
      let seenAt: number | undefined;
      while (seenAt === undefined) {
        if (south.store.getPresence(ticketId)?.inside === true) seenAt = performance.now();
        else if (performance.now() - answered > SEEN_LIMIT_MS) throw new Error(`south never saw ${ticketId}`);
        else await sleep(1);
      }
      awaited = undefined;
      const preview = await south.api<{ reason?: string }>(`/v1/tickets/${encodeURIComponent(qr)}`);
      if (preview.body.reason === 'already_used') refusedOverHttp++;
      // Looked up after the preview: the tap's copy may come in after south's.
      const wireAt = onWire.get(answer.checkin_id);
      onWire.clear();
      if (payload === undefined) {
        // The check-in exactly as north published it: its payload and subject lengths, for the baseline.
        const subject = subjects.checkin(VENUE, 'north', answer.checkin_id);
        const stored = await (await jetstreamManager(direct.pub)).streams.getMessage(STREAMS.checkins, {
          last_by_subj: subject,
        });
        if (stored === null) throw new Error(`check-in ${answer.checkin_id} is not in ${STREAMS.checkins}`);
        payload = stored.data;
        subjectLength = subject.length;
      }
      if (!record) continue;
      polled.push(seenAt - answered);
      exact.push((appliedAt ?? seenAt) - answered);
      if (applyMs !== undefined) southApply.push(applyMs);
      if (wireAt !== undefined) {
        wire.push(wireAt - answered);
        wireToCommit.push((appliedAt ?? seenAt) - wireAt);
      }
      fromRequest.push(seenAt - requested);
      scanRtt.push(answered - requested);
    }
  };

  const prefix = await createBaselineStream(direct.pub, 'latency');
  const bare: number[] = [];
  const baseline = async (count: number, warmup: number) => {
    if (payload === undefined) throw new Error('no sample check-in yet');
    bare.push(
      ...(await deliveryLatency({
        ...direct,
        stream: 'GSBENCH_LATENCY',
        prefix,
        subjectLength,
        payload,
        count,
        warmup,
        gapMs: 0,
      })),
    );
  };

  const half = Math.floor(n / 2);
  await gatesync(WARMUP, false);
  await baseline(half, WARMUP);
  await gatesync(half, true);
  progress(`first half done: ${polled.length} gatesync samples, ${bare.length} baseline samples`);
  await baseline(n - half, 0);
  await gatesync(n - half, true);
  progress(`second half done: ${polled.length} gatesync samples, ${bare.length} baseline samples`);

  const sPolled = summarize(polled);
  const sExact = summarize(exact);
  const sRequest = summarize(fromRequest);
  const sRtt = summarize(scanRtt);
  const sBare = summarize(bare);
  const sWire = summarize(wire);
  const sWireToCommit = summarize(wireToCommit);
  const sApply = summarize(southApply);
  const ratio = sPolled.p50 / sBare.p50;
  const ratioExact = sExact.p50 / sBare.p50;
  const row = (label: string, s: Summary) => [
    label,
    fmt(s.n),
    fmt(s.p50, 2),
    fmt(s.p90, 2),
    fmt(s.p99, 2),
    fmt(s.max, 2),
    fmt(s.p50 / sBare.p50, 2),
  ];
  console.log();
  console.log(
    `cross-gate freshness, ${n} tickets admitted at north, one at a time; ` +
      `ratio = p50 / baseline p50 (ms, message ${payload?.length} B)`,
  );
  printTable(
    ['measure', 'n', 'p50', 'p90', 'p99', 'max', 'ratio'],
    [
      row('south refuses: north answer -> presence seen (1 ms poll)', sPolled),
      row('south refuses: north answer -> south commit (exact)', sExact),
      row('  of which: north answer -> check-in at the server', sWire),
      row('  of which: check-in at the server -> south commit', sWireToCommit),
      row('    of which: south applyVenueCheckins (SQLite commit)', sApply),
      row('south refuses: north request sent -> presence seen', sRequest),
      row('north scan round trip (context)', sRtt),
      row('bare publish -> ordered consumer delivery (baseline)', sBare),
    ],
  );
  const met = sPolled.max < TARGET_MAX_MS && refusedOverHttp === n + WARMUP;
  console.log(
    `south's GET /v1/tickets/{code} answered already_used for ${refusedOverHttp} of ${n + WARMUP} tickets`,
  );
  console.log(
    `target: south refuses within ${fmt(TARGET_MAX_MS)} ms (max): ${met ? 'met' : 'NOT met'} ` +
      `(max ${fmt(sPolled.max, 1)} ms); p50 ratio against the bare delivery: ${fmt(ratio, 2)}x`,
  );
  printJsonLine({
    bench: 'crossgate',
    cpu: m.cpu,
    cores: m.cores,
    node: m.node,
    load_1m_at_start: m.load1,
    tickets: n,
    message_bytes: payload?.length ?? null,
    p50_ms: round(sPolled.p50, 2),
    p90_ms: round(sPolled.p90, 2),
    p99_ms: round(sPolled.p99, 2),
    max_ms: round(sPolled.max, 2),
    exact_p50_ms: round(sExact.p50, 2),
    exact_p99_ms: round(sExact.p99, 2),
    exact_max_ms: round(sExact.max, 2),
    answer_to_server_p50_ms: round(sWire.p50, 2),
    server_to_south_commit_p50_ms: round(sWireToCommit.p50, 2),
    server_to_south_commit_p99_ms: round(sWireToCommit.p99, 2),
    south_apply_p50_ms: round(sApply.p50, 2),
    from_request_p50_ms: round(sRequest.p50, 2),
    from_request_p99_ms: round(sRequest.p99, 2),
    scan_rtt_p50_ms: round(sRtt.p50, 2),
    bare_p50_ms: round(sBare.p50, 2),
    bare_p99_ms: round(sBare.p99, 2),
    bare_max_ms: round(sBare.max, 2),
    ratio_p50: round(ratio, 2),
    ratio_p50_exact: round(ratioExact, 2),
    refused_over_http: refusedOverHttp,
    target_max_ms: TARGET_MAX_MS,
    target_met: met,
  });
});
