/**
 * bench:scan — scan throughput and latency of a gate agent holding 100,000 tickets, against a plain
 * node:http server answering a constant JSON, both driven by the same closed-loop load generator in the
 * same run.
 *
 * Set-up: a nats-server of our own (ephemeral port, own store); the hub in this process issues 100,000
 * tickets through its batch API and is then stopped (it lives in the cloud, not at the venue); a gate
 * agent in a child process with the agent's defaults (durable commits: WAL, synchronous=FULL, group
 * commit; outbox publisher and venue check-in reader running) syncs them, and the run waits until its
 * /v1/status shows every ticket held. The plain baseline runs in a second child. This process only
 * generates load, so neither server shares an event loop with the client.
 *
 * Each agent request is `POST /v1/scans {"code": <QR token>, "direction": "in"}` with the scanner's
 * bearer token, cycling through the tickets in a shuffled order (a ticket scanned twice answers
 * already_used: still a committed check-in). The baseline gets byte-for-byte the same requests. Points
 * alternate baseline, agent at each concurrency, each a warm-up then a fixed window. Then nats-server is
 * stopped (the venue's link is down) and the agent is measured again at each concurrency: scans alone,
 * with nothing to publish and no peers to read, which shows what the network side costs the scan path.
 *
 * Environment (all optional): BENCH_TICKETS (100000), BENCH_CONCURRENCY (1,16,64), BENCH_WARMUP_S (2),
 * BENCH_DURATION_S (10), BENCH_OFFLINE (1; 0 skips the link-down points), BENCH_CHILD_NODE_ARGS (extra
 * node flags for the children, e.g. --cpu-prof), BENCH_LOG_LEVEL (the agent child's log level, default
 * error). GATESYNC_* variables in the environment reach the agent child too.
 */
import { rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import {
  ADMIN_KEY,
  httpJson,
  makeKeys,
  SCANNER_TOKEN,
  startTestHub,
  ticketBody,
} from '../test/harness/gatesync.ts';
import { tmpDir, waitFor } from '../test/harness/index.ts';
import { startNats } from '../test/harness/nats-server.ts';
import { issueTickets, type LoadOptions, type LoadResult, runLoad } from './lib/load.ts';
import {
  BenchChild,
  Cleanup,
  cpuBetween,
  envList,
  envNumber,
  loadAverage,
  machineInfo,
  printMachine,
  processCpuSeconds,
  threadCpuSeconds,
} from './lib/machine.ts';
import { fmt, printJsonLine, printTable, progress, round } from './lib/report.ts';

const VENUE = 'bench-venue';
const TARGET_RATIO = 0.5; // of the plain server's throughput, at concurrency 16
const TARGET_P99_MS = 5; // milliseconds, at concurrency 16
const TARGET_CONCURRENCY = 16;

/** Fisher-Yates, in place. */
function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j] as T, items[i] as T];
  }
  return items;
}

/** sum and count of the agent's commit-group histogram, from its Prometheus text. */
async function commitGroups(agentUrl: string): Promise<{ sum: number; count: number }> {
  const r = await httpJson<string>(`${agentUrl}/metrics`, { token: SCANNER_TOKEN });
  const text = String(r.body);
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  return {
    sum: value('gatesync_agent_commit_group_size_sum'),
    count: value('gatesync_agent_commit_group_size_count'),
  };
}

/** The decision of a scan answer (or the baseline's constant one), for the outcome counts. */
function classify(body: string): string {
  const a = JSON.parse(body) as { decision?: string; reason?: string };
  return a.decision === 'admit' ? 'admit' : `reject_${a.reason ?? 'unknown'}`;
}

/** One server at one concurrency: the load result, plus what the server's main thread spent on it. */
interface Measured {
  load: LoadResult;
  /** CPU of the server's main thread over warm-up and window, as a share of one core (%). */
  serverMainPct: number;
  /** CPU of this process (the load generator), as a share of one core (%). */
  clientPct: number;
  /** The agent's mean check-ins per commit in the window; NaN for the baseline. */
  commitGroup: number;
  /**
   * CPU per completed request, in microseconds, over warm-up and window: the server's main thread, the
   * server process (all threads), nats-server (when running) and this process (the load generator).
   * Their sum bounds what two cores can do: `ceiling` = cores x 1e6 / sum, requests per second.
   */
  cpuUs: { main: number; server: number; nats: number; loadGen: number; ceiling: number };
}

interface Point {
  concurrency: number;
  plain: Measured;
  agent: Measured;
  /** The agent with its venue link down (nats-server stopped): scans only, no outbox, no peer reads. */
  offline: Measured | undefined;
}

async function measure(
  server: { url: string; pid: number; metrics: boolean },
  load: Omit<LoadOptions, 'origin'>,
  natsPid?: number,
): Promise<Measured> {
  const seconds = (load.warmupMs + load.durationMs) / 1000;
  const threads = threadCpuSeconds(server.pid);
  const serverCpu = processCpuSeconds(server.pid);
  const natsCpu = natsPid === undefined ? 0 : processCpuSeconds(natsPid);
  const client = process.cpuUsage();
  // The window's commit groups: snapshot the histogram when the window opens and after it closes.
  let before: Promise<{ sum: number; count: number }> | undefined;
  const timer = server.metrics
    ? setTimeout(() => {
        before = commitGroups(server.url);
      }, load.warmupMs)
    : undefined;
  const result = await runLoad({ origin: server.url, ...load });
  clearTimeout(timer);
  const clientUsage = process.cpuUsage(client);
  const serverMain = cpuBetween(server.pid, threads, threadCpuSeconds(server.pid)).main;
  const serverAll = processCpuSeconds(server.pid) - serverCpu;
  const natsAll = natsPid === undefined ? 0 : processCpuSeconds(natsPid) - natsCpu;
  let commitGroup = Number.NaN;
  if (server.metrics) {
    const after = await commitGroups(server.url);
    const start = (await before) ?? { sum: 0, count: 0 };
    commitGroup = (after.sum - start.sum) / (after.count - start.count);
  }
  // Requests over warm-up and window, at the window's rate: the CPU figures cover both.
  const requests = result.ops_per_s * seconds;
  const us = (cpuSeconds: number) => (cpuSeconds * 1e6) / requests;
  const cpuUs = {
    main: us(serverMain),
    server: us(serverAll),
    nats: us(natsAll),
    loadGen: us((clientUsage.user + clientUsage.system) / 1e6),
    ceiling: 0,
  };
  cpuUs.ceiling = (availableParallelism() * 1e6) / (cpuUs.server + cpuUs.nats + cpuUs.loadGen);
  return {
    load: result,
    serverMainPct: (100 * serverMain) / seconds,
    clientPct: (100 * (clientUsage.user + clientUsage.system)) / 1e6 / seconds,
    commitGroup,
    cpuUs,
  };
}

function row(concurrency: number, server: string, m: Measured, baseline: Measured | undefined): string[] {
  return [
    String(concurrency),
    server,
    fmt(m.load.ops_per_s),
    fmt(m.load.p50_ms, 2),
    fmt(m.load.p99_ms, 2),
    fmt(m.load.max_ms, 2),
    fmt(m.load.errors),
    baseline === undefined ? '-' : fmt(m.load.ops_per_s / baseline.load.ops_per_s, 2),
    fmt(m.commitGroup, 1),
    fmt(m.serverMainPct, 0),
    fmt(m.clientPct, 0),
    `${fmt(m.cpuUs.main, 0)}/${fmt(m.cpuUs.server, 0)}/${fmt(m.cpuUs.nats, 0)}/${fmt(m.cpuUs.loadGen, 0)}`,
    baseline === undefined ? '-' : fmt(m.cpuUs.ceiling / baseline.load.ops_per_s, 2),
    Object.entries(m.load.outcomes)
      .map(([k, v]) => `${k}=${v}`)
      .join(' '),
  ];
}

function figures(m: Measured, baseline: Measured) {
  return {
    ops_per_s: round(m.load.ops_per_s, 0),
    p50_ms: round(m.load.p50_ms, 3),
    p99_ms: round(m.load.p99_ms, 3),
    max_ms: round(m.load.max_ms, 3),
    errors: m.load.errors,
    ratio: round(m.load.ops_per_s / baseline.load.ops_per_s, 3),
    mean_commit_group: round(m.commitGroup, 2),
    main_thread_busy_pct: round(m.serverMainPct, 1),
    cpu_us_per_scan: {
      main_thread: round(m.cpuUs.main, 1),
      agent: round(m.cpuUs.server, 1),
      nats_server: round(m.cpuUs.nats, 1),
      load_gen: round(m.cpuUs.loadGen, 1),
    },
    baseline_cpu_us_per_request: {
      main_thread: round(baseline.cpuUs.main, 1),
      load_gen: round(baseline.cpuUs.loadGen, 1),
    },
    cpu_ceiling_ops_per_s: round(m.cpuUs.ceiling, 0),
    cpu_ceiling_ratio: round(m.cpuUs.ceiling / baseline.load.ops_per_s, 3),
  };
}

async function main(): Promise<void> {
  const machine = machineInfo();
  printMachine(machine);
  const tickets = Math.floor(envNumber('BENCH_TICKETS', 100_000));
  const concurrencies = envList('BENCH_CONCURRENCY', [1, 16, 64]);
  const warmupMs = envNumber('BENCH_WARMUP_S', 2) * 1000;
  const durationMs = envNumber('BENCH_DURATION_S', 10) * 1000;
  const offline = process.env.BENCH_OFFLINE !== '0';
  console.log(
    `bench:scan: ${fmt(tickets)} tickets held, concurrency ${concurrencies.join('/')}, ` +
      `${warmupMs / 1000} s warm-up + ${durationMs / 1000} s per point`,
  );

  const cleanup = new Cleanup();
  cleanup.onSignals();
  try {
    const dir = await tmpDir('gatesync-bench-scan-');
    cleanup.add('temp dir', () => rm(dir, { recursive: true, force: true }));
    const nats = await startNats();
    cleanup.add('nats-server', () => nats.cleanup());
    const keys = makeKeys(dir);
    const hub = await startTestHub({ natsUrl: nats.url, dir, keys });
    cleanup.add('hub', () => hub.stop());

    let t0 = performance.now();
    const issued = await issueTickets(hub.url, ADMIN_KEY, VENUE, tickets, (i) =>
      ticketBody({ holder: `Holder ${i}`, seat: `S-${i}` }),
    );
    progress(`issued ${fmt(issued.length)} tickets in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    // The hub lives in the cloud, not at the venue: stopped now, it takes no CPU from the run (its
    // check-in consumer would otherwise judge every check-in the agent publishes). The streams stay.
    await hub.stop();

    const agent = BenchChild.spawn('bench/lib/agent-child.ts', {
      GATESYNC_VENUE: VENUE,
      GATESYNC_AGENT_ID: 'bench-scan',
      GATESYNC_NATS_URL: nats.url,
      GATESYNC_TRUSTED_KEYS: keys.trusted,
      GATESYNC_SCANNER_TOKENS: `s1:${SCANNER_TOKEN}`,
      GATESYNC_AGENT_HOST: '127.0.0.1',
      GATESYNC_AGENT_PORT: '0',
      GATESYNC_DB_PATH: join(dir, 'agent.db'),
    });
    cleanup.add('agent child', () => agent.stop());
    const agentUrl = String((await agent.next('ready')).url);
    const status = async () =>
      (
        await httpJson<{ tickets_held: number; connected: boolean }>(`${agentUrl}/v1/status`, {
          token: SCANNER_TOKEN,
        })
      ).body;
    t0 = performance.now();
    await waitFor(async () => (await status()).tickets_held === tickets, {
      timeoutMs: 150_000,
      intervalMs: 500,
      message: `agent holds ${tickets} tickets`,
    });
    progress(`agent holds ${fmt(tickets)} tickets after ${fmt((performance.now() - t0) / 1000, 1)} s`);

    const plain = BenchChild.spawn('bench/lib/plain-child.ts', {});
    cleanup.add('plain child', () => plain.stop());
    const plainUrl = String((await plain.next('ready')).url);

    const codes = shuffle(issued.map((t) => t.qr));
    let cursor = 0;
    const request = () => ({
      method: 'POST' as const,
      path: '/v1/scans',
      headers: { authorization: `Bearer ${SCANNER_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ code: codes[cursor++ % codes.length], direction: 'in' }),
    });
    const agentServer = { url: agentUrl, pid: agent.pid, metrics: true };
    const plainServer = { url: plainUrl, pid: plain.pid, metrics: false };

    const points: Point[] = [];
    for (const concurrency of concurrencies) {
      const load = { concurrency, warmupMs, durationMs, request, classify };
      progress(`concurrency ${concurrency}: plain node:http`);
      const plainResult = await measure(plainServer, load);
      progress(`concurrency ${concurrency}: gate agent`);
      const agentResult = await measure(agentServer, load, nats.pid);
      points.push({ concurrency, plain: plainResult, agent: agentResult, offline: undefined });
    }
    if (offline) {
      // The venue's link goes down: the agent keeps scanning from its store, with no check-ins to
      // publish and no peers to read. The difference to the rows above is what the network side costs.
      progress('venue link down: nats-server stopped');
      await nats.stop();
      await waitFor(async () => !(await status()).connected, {
        timeoutMs: 15_000,
        intervalMs: 250,
        message: 'agent sees the link down',
      });
      for (const point of points) {
        progress(`concurrency ${point.concurrency}: gate agent, link down`);
        const load = { concurrency: point.concurrency, warmupMs, durationMs, request, classify };
        point.offline = await measure(agentServer, load);
      }
    }

    console.log('');
    printTable(
      [
        'concurrency',
        'server',
        'ops/s',
        'p50 ms',
        'p99 ms',
        'max ms',
        'errors',
        'ratio',
        'commit group',
        'server main %',
        'load gen %',
        'cpu us/op main/all/nats/gen',
        'cpu ceiling ratio',
        'answers',
      ],
      points.flatMap((p) => [
        row(p.concurrency, 'plain node:http', p.plain, undefined),
        row(p.concurrency, 'gate agent', p.agent, p.plain),
        ...(p.offline === undefined ? [] : [row(p.concurrency, 'gate agent, link down', p.offline, p.plain)]),
      ]),
    );

    const at = points.find((p) => p.concurrency === TARGET_CONCURRENCY);
    const ratioAt = at === undefined ? Number.NaN : at.agent.load.ops_per_s / at.plain.load.ops_per_s;
    const p99At = at === undefined ? Number.NaN : at.agent.load.p99_ms;
    const ratioMet = ratioAt >= TARGET_RATIO;
    const p99Met = p99At < TARGET_P99_MS;
    console.log('');
    console.log(
      'ratio: agent ops/s over plain ops/s at the same concurrency; server main %: CPU of the server ' +
        "process's main thread over the point (100 = one core); load gen %: CPU of this process; cpu us/op: " +
        "CPU microseconds per request of the server's main thread, the server process, nats-server and the " +
        'load generator; cpu ceiling ratio: what the cores could do at those costs (cores x 1e6 / (all + ' +
        "nats + gen)) over the plain server's measured rate",
    );
    if (at === undefined) {
      console.log(`targets: not evaluated (concurrency ${TARGET_CONCURRENCY} was not run)`);
    } else {
      console.log(
        `target at concurrency ${TARGET_CONCURRENCY}: ratio >= ${TARGET_RATIO}: ${fmt(ratioAt, 2)} ` +
          `${ratioMet ? 'MET' : 'MISSED'}; p99 < ${TARGET_P99_MS} ms: ${fmt(p99At, 2)} ms ` +
          `${p99Met ? 'MET' : 'MISSED'}`,
      );
    }
    printJsonLine({
      bench: 'scan',
      date: new Date().toISOString(),
      machine,
      load_avg_end: loadAverage(),
      tickets,
      warmup_s: warmupMs / 1000,
      duration_s: durationMs / 1000,
      results: points.map((p) => ({
        concurrency: p.concurrency,
        ...figures(p.agent, p.plain),
        baseline_ops_per_s: round(p.plain.load.ops_per_s, 0),
        baseline_p50_ms: round(p.plain.load.p50_ms, 3),
        baseline_p99_ms: round(p.plain.load.p99_ms, 3),
        baseline_max_ms: round(p.plain.load.max_ms, 3),
        ...(p.offline === undefined ? {} : { link_down: figures(p.offline, p.plain) }),
      })),
      targets: {
        concurrency: TARGET_CONCURRENCY,
        ratio_min: TARGET_RATIO,
        ratio: round(ratioAt, 3),
        ratio_met: at === undefined ? null : ratioMet,
        p99_ms_max: TARGET_P99_MS,
        p99_ms: round(p99At, 3),
        p99_met: at === undefined ? null : p99Met,
      },
    });
  } finally {
    await cleanup.run();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
