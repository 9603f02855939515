/**
 * bench:bootstrap — how long a fresh gate agent takes to hold 100,000 tickets, against two baselines
 * measured in the same run on the same messages:
 *
 *   bare consume  an ordered JetStream consumer reading the venue's 100,000 messages (no verification,
 *                 no storage): the most the server and the client library deliver, and the least
 *                 nats-server CPU a delivered message costs;
 *   bare verify   Ed25519 verification of the same 100,000 signatures over the same bytes the agent
 *                 verifies (EVENT_CONTEXT + body) with node:crypto, one worker thread per core, nothing
 *                 else: the most this machine's cores can check. The agent verifies every event, so this
 *                 is its ceiling, and the target is agent rate >= 0.70 x this rate.
 *
 * The tickets are issued through the hub's batch API first (hub in this process, stopped once they are
 * issued; nats-server of our own). Then, BENCH_RUNS times: the two baselines, then a fresh agent (new
 * SQLite file, new durable consumer, agent defaults: one verify worker per core, WAL)
 * in a child process; its clock runs from its startAgent() call until its store's stream position
 * reaches the last ticket event, which is when tickets_held is 100,000 (checked on /v1/status
 * afterwards). Other load on the machine only ever slows a run down, so each figure is its fastest run.
 * Peak RSS is the child's VmHWM; the database size is the file plus its -wal at that moment.
 *
 * CPU time is accounted per thread from /proc while the agent syncs (its main thread, its verify
 * workers, its other threads, and nats-server) and for the bare verification: where the time goes. It
 * also gives the ratio the wall-clock one tends to when nothing else runs on the machine (bare CPU per
 * verification over agent + nats-server CPU per ticket), which other tenants of a shared VM move far
 * less than wall-clock time.
 *
 * Environment (all optional): BENCH_TICKETS (100000), BENCH_RUNS (3), BENCH_CHILD_NODE_ARGS (extra node
 * flags for the agent child, e.g. --cpu-prof), BENCH_LOG_LEVEL (the agent child's log level, default
 * error). GATESYNC_* variables in the environment reach the agent child too.
 */
import { rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { type JetStreamManager, type JsMsg, jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { EVENT_CONTEXT, KID_HEADER, SIG_HEADER } from '../shared/signing.ts';
import { STREAMS, subjects } from '../shared/subjects.ts';
import {
  ADMIN_KEY,
  httpJson,
  makeKeys,
  SCANNER_TOKEN,
  startTestHub,
  ticketBody,
} from '../test/harness/gatesync.ts';
import { tmpDir } from '../test/harness/index.ts';
import { startNats } from '../test/harness/nats-server.ts';
import { issueTickets } from './lib/load.ts';
import {
  BenchChild,
  Cleanup,
  cpuBetween,
  envNumber,
  fileBytes,
  loadAverage,
  machineCpuSeconds,
  machineInfo,
  peakRssBytes,
  printMachine,
  processCpuSeconds,
  threadCpuSeconds,
} from './lib/machine.ts';
import { fmt, mib, printJsonLine, printTable, progress, round } from './lib/report.ts';

const VENUE = 'bench-venue';
const TARGET_RATIO = 0.7; // agent tickets/s over bare verifications/s
const AGENT_TIMEOUT_MS = 170_000;

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/** One worker's share of the signed messages, packed into a few flat buffers. */
interface Share {
  data: Uint8Array;
  /** n + 1 offsets into data. */
  offsets: Uint32Array;
  /** n signatures of 64 bytes. */
  sigs: Uint8Array;
  kids: string[];
}

interface Signed {
  data: Uint8Array;
  sig: Buffer;
  kid: string;
}

function pack(items: Signed[]): Share {
  const offsets = new Uint32Array(items.length + 1);
  let total = 0;
  items.forEach((it, i) => {
    offsets[i] = total;
    total += it.data.length;
  });
  offsets[items.length] = total;
  const data = new Uint8Array(total);
  const sigs = new Uint8Array(items.length * 64);
  items.forEach((it, i) => {
    data.set(it.data, offsets[i]);
    sigs.set(it.sig.subarray(0, 64), i * 64);
  });
  return { data, offsets, sigs, kids: items.map((it) => it.kid) };
}

// The same check the agent's verifier pool makes per item: key by kid, then
// verify(null, EVENT_CONTEXT + body, key, sig). Started on 'go' so worker start-up is not timed.
const VERIFY_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createPublicKey, verify } = require('node:crypto');
const context = Buffer.from(workerData.context);
const keys = new Map(workerData.keys.map(([kid, x]) =>
  [kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' })]));
const { data, offsets, sigs, kids } = workerData.share;
const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
const sig = Buffer.from(sigs.buffer, sigs.byteOffset, sigs.byteLength);
// 'on', not 'once': a port with a listener keeps the thread alive until terminate(), so its CPU time
// can still be read after it answers.
parentPort.on('message', () => {
  const started = performance.now();
  let ok = 0;
  for (let i = 0; i < kids.length; i++) {
    const key = keys.get(kids[i]);
    const msg = Buffer.concat([context, body.subarray(offsets[i], offsets[i + 1])]);
    if (key !== undefined && verify(null, msg, key, sig.subarray(i * 64, i * 64 + 64))) ok++;
  }
  parentPort.postMessage({ ok, n: kids.length, ms: performance.now() - started });
});
parentPort.postMessage({ ready: true });
`;

/**
 * Verifies every item on `workers` threads at once: wall time from 'go' to the last answer, and the CPU
 * seconds the worker threads spent meanwhile.
 */
async function bareVerify(
  items: Signed[],
  keys: [string, string][],
  workers: number,
): Promise<{ seconds: number; cpu: number; ok: number }> {
  const per = Math.ceil(items.length / workers);
  const threads = Array.from({ length: workers }, (_v, w) => {
    const share = pack(items.slice(w * per, (w + 1) * per));
    return new Worker(VERIFY_WORKER, {
      eval: true,
      workerData: { keys, context: new Uint8Array(EVENT_CONTEXT), share },
    });
  });
  try {
    const firstMessage = (w: Worker) =>
      new Promise<{ ok: number }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
    await Promise.all(threads.map(firstMessage));
    const cpuBefore = threadCpuSeconds(process.pid);
    const started = performance.now();
    const done = threads.map(firstMessage);
    for (const w of threads) w.postMessage('go');
    const results = await Promise.all(done);
    const seconds = (performance.now() - started) / 1000;
    // Read before terminate(): an ended thread's CPU time leaves /proc/<pid>/task with it.
    const cpu = cpuBetween(process.pid, cpuBefore, threadCpuSeconds(process.pid));
    return {
      seconds,
      cpu: sum(cpu.others.slice(0, workers)),
      ok: results.reduce((total, r) => total + r.ok, 0),
    };
  } finally {
    await Promise.all(threads.map((w) => w.terminate()));
  }
}

/**
 * Reads the venue's messages with an ordered consumer; the clock stops at the last one. Also the
 * nats-server CPU it took: what delivering a message costs the server at the least.
 */
async function bareConsume(
  nc: NatsConnection,
  count: number,
  natsPid: number,
): Promise<{ seconds: number; natsCpu: number; signed: Signed[] }> {
  const consumer = await jetstream(nc).consumers.get(STREAMS.tickets, {
    // A string, not an array: nats-server 2.9 knows only the single filter_subject.
    filter_subjects: subjects.venueTickets(VENUE),
  });
  const natsBefore = processCpuSeconds(natsPid);
  const started = performance.now();
  const iter = await consumer.consume({ max_messages: 2_000 });
  const msgs: JsMsg[] = [];
  for await (const m of iter) {
    msgs.push(m);
    if (msgs.length >= count) break;
  }
  const seconds = (performance.now() - started) / 1000;
  const natsCpu = processCpuSeconds(natsPid) - natsBefore;
  await iter.close();
  // Outside the clock: what bare verification needs, as the agent reads it.
  const signed = msgs.map((m) => ({
    data: m.data,
    sig: Buffer.from(m.headers?.get(SIG_HEADER) ?? '', 'base64'),
    kid: m.headers?.get(KID_HEADER) ?? '',
  }));
  return { seconds, natsCpu, signed };
}

interface AgentRun {
  seconds: number;
  apiUpMs: number;
  peakRss: number | undefined;
  childMaxRss: number;
  dbBytes: number;
  walBytes: number;
  /** CPU seconds from the API being up to caught up. */
  cpu: { main: number; workers: number[]; other: number; nats: number; machineBusyPct: number };
}

async function consumerNames(jsm: JetStreamManager): Promise<string[]> {
  const names: string[] = [];
  for await (const c of jsm.consumers.list(STREAMS.tickets)) names.push(c.name);
  return names;
}

/** A fresh agent (new database, new durable consumer) in a child process, until it holds every ticket. */
async function agentRun(opts: {
  run: number;
  dir: string;
  natsUrl: string;
  natsPid: number;
  trusted: string;
  lastSeq: number;
  tickets: number;
  verifyWorkers: number;
  jsm: JetStreamManager;
}): Promise<AgentRun> {
  const agentId = `bench-boot-${opts.run}`;
  const consumersBefore = new Set(await consumerNames(opts.jsm));
  const dbPath = join(opts.dir, `${agentId}.db`);
  const agent = BenchChild.spawn('bench/lib/agent-child.ts', {
    GATESYNC_VENUE: VENUE,
    GATESYNC_AGENT_ID: agentId,
    GATESYNC_NATS_URL: opts.natsUrl,
    GATESYNC_TRUSTED_KEYS: opts.trusted,
    GATESYNC_SCANNER_TOKENS: `s1:${SCANNER_TOKEN}`,
    GATESYNC_AGENT_HOST: '127.0.0.1',
    GATESYNC_AGENT_PORT: '0',
    GATESYNC_DB_PATH: dbPath,
  });
  try {
    // The clock started in the child, at startAgent(); it answers once its store holds lastSeq.
    const ready = await agent.next('ready');
    // CPU over the sync, from the API being up (the verify workers exist by then) to caught up.
    const threadsBefore = threadCpuSeconds(agent.pid);
    const natsBefore = processCpuSeconds(opts.natsPid);
    const machineBefore = machineCpuSeconds();
    const caughtUp = await agent.ask({ type: 'wait_seq', seq: opts.lastSeq }, 'caught_up', AGENT_TIMEOUT_MS);
    const machineAfter = machineCpuSeconds();
    const cpu = cpuBetween(agent.pid, threadsBefore, threadCpuSeconds(agent.pid));
    const nats = processCpuSeconds(opts.natsPid) - natsBefore;
    const peakRss = peakRssBytes(agent.pid);
    const usage = await agent.ask({ type: 'usage' }, 'usage');
    const dbBytes = fileBytes(dbPath);
    const walBytes = fileBytes(`${dbPath}-wal`);
    const status = await httpJson<{ tickets_held: number }>(`${String(ready.url)}/v1/status`, {
      token: SCANNER_TOKEN,
    });
    if (status.body.tickets_held !== opts.tickets) {
      throw new Error(`agent caught up but holds ${status.body.tickets_held} of ${opts.tickets} tickets`);
    }
    return {
      seconds: Number(caughtUp.ms) / 1000,
      apiUpMs: Number(ready.start_ms),
      peakRss,
      childMaxRss: Number(usage.max_rss_bytes),
      dbBytes,
      walBytes,
      cpu: {
        main: cpu.main,
        workers: cpu.others.slice(0, opts.verifyWorkers),
        other: cpu.others.slice(opts.verifyWorkers).reduce((a, b) => a + b, 0),
        nats,
        machineBusyPct:
          (100 * (machineAfter.busy - machineBefore.busy)) / (machineAfter.total - machineBefore.total),
      },
    };
  } finally {
    await agent.stop();
    // Leave the server as it was: the durable consumer the agent made goes with it.
    for (const name of await consumerNames(opts.jsm)) {
      if (!consumersBefore.has(name))
        await opts.jsm.consumers.delete(STREAMS.tickets, name).catch(() => undefined);
    }
  }
}

async function main(): Promise<void> {
  const machine = machineInfo();
  printMachine(machine);
  const tickets = Math.floor(envNumber('BENCH_TICKETS', 100_000));
  const runs = Math.floor(envNumber('BENCH_RUNS', 3));
  const workers = os.availableParallelism();
  const verifyWorkers = Number(process.env.GATESYNC_VERIFY_WORKERS ?? workers);
  console.log(`bench:bootstrap: a fresh agent to ${fmt(tickets)} tickets, best of ${runs} runs`);

  const cleanup = new Cleanup();
  cleanup.onSignals();
  try {
    const dir = await tmpDir('gatesync-bench-boot-');
    cleanup.add('temp dir', () => rm(dir, { recursive: true, force: true }));
    const nats = await startNats();
    cleanup.add('nats-server', () => nats.cleanup());
    const keys = makeKeys(dir);
    const hub = await startTestHub({ natsUrl: nats.url, dir, keys });
    cleanup.add('hub', () => hub.stop());

    const t0 = performance.now();
    await issueTickets(hub.url, ADMIN_KEY, VENUE, tickets, (i) =>
      ticketBody({ holder: `Holder ${i}`, seat: `S-${i}` }),
    );
    progress(`issued ${fmt(tickets)} tickets in ${fmt((performance.now() - t0) / 1000, 1)} s`);
    // The hub lives in the cloud, not at the venue: stopped now, it takes no CPU from the run (its
    // check-in consumer would otherwise judge every check-in the agent publishes). The streams stay.
    await hub.stop();

    const nc = await connect({ servers: nats.url, name: 'bench-bootstrap' });
    cleanup.add('bench NATS connection', () => nc.close());
    const jsm = await jetstreamManager(nc);
    const lastSeq = (await jsm.streams.info(STREAMS.tickets)).state.last_seq;

    const consumeRuns: number[] = [];
    const consumeNatsCpu: number[] = [];
    const verifyRuns: { seconds: number; cpu: number }[] = [];
    const agentRuns: AgentRun[] = [];
    for (let run = 1; run <= runs; run++) {
      progress(`run ${run}/${runs}: bare JetStream consumer`);
      const consumed = await bareConsume(nc, tickets, nats.pid);
      consumeRuns.push(consumed.seconds);
      consumeNatsCpu.push(consumed.natsCpu);

      progress(`run ${run}/${runs}: bare Ed25519 verification on ${workers} worker threads`);
      const verify = await bareVerify(consumed.signed, [[keys.json.kid, keys.json.public_key]], workers);
      if (verify.ok !== tickets) throw new Error(`bare verify: ${verify.ok} of ${tickets} signatures held`);
      verifyRuns.push({ seconds: verify.seconds, cpu: verify.cpu });

      progress(`run ${run}/${runs}: fresh gate agent`);
      agentRuns.push(
        await agentRun({
          run,
          dir,
          natsUrl: nats.url,
          natsPid: nats.pid,
          trusted: keys.trusted,
          lastSeq,
          tickets,
          verifyWorkers,
          jsm,
        }),
      );
    }

    // Other load on the machine only ever slows a run down, so each figure is its fastest run.
    const consumeSeconds = Math.min(...consumeRuns);
    const verify = verifyRuns.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    const agent = agentRuns.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    const consumeRate = tickets / consumeSeconds;
    const verifyRate = tickets / verify.seconds;
    const agentRate = tickets / agent.seconds;
    const ratio = agentRate / verifyRate;
    const met = ratio >= TARGET_RATIO;
    const perTicket = (seconds: number) => (seconds * 1e6) / tickets; // microseconds
    // What the ratio comes to when both sides have the cores to themselves: the CPU one bare verification
    // costs over the CPU one ticket costs the agent and the nats-server feeding it (both share the cores).
    const agentCpu = agent.cpu.main + sum(agent.cpu.workers) + agent.cpu.other + agent.cpu.nats;
    const cpuRatio = verify.cpu / agentCpu;

    const cells = (seconds: number[]) => seconds.map((v) => fmt(v, 2));
    console.log('');
    printTable(
      ['what', ...consumeRuns.map((_v, i) => `run ${i + 1} s`), 'best s', 'per second', 'agent ratio'],
      [
        [
          'bare JetStream consumer (messages)',
          ...cells(consumeRuns),
          fmt(consumeSeconds, 2),
          fmt(consumeRate),
          fmt(agentRate / consumeRate, 2),
        ],
        [
          `bare Ed25519 verify, ${workers} threads`,
          ...cells(verifyRuns.map((r) => r.seconds)),
          fmt(verify.seconds, 2),
          fmt(verifyRate),
          fmt(ratio, 2),
        ],
        [
          'gate agent bootstrap (tickets)',
          ...cells(agentRuns.map((r) => r.seconds)),
          fmt(agent.seconds, 2),
          fmt(agentRate),
          '-',
        ],
      ],
    );
    console.log('');
    console.log(
      `agent (fastest run): peak RSS ${mib(agent.peakRss)} (VmHWM), database ${mib(agent.dbBytes + agent.walBytes)} ` +
        `(file ${mib(agent.dbBytes)} + wal ${mib(agent.walBytes)}), API up after ${fmt(agent.apiUpMs, 0)} ms`,
    );
    console.log(
      `CPU per ticket while syncing: agent main thread ${fmt(perTicket(agent.cpu.main), 1)} µs, ` +
        `verify workers ${fmt(perTicket(sum(agent.cpu.workers)), 1)} µs, other agent threads ` +
        `${fmt(perTicket(agent.cpu.other), 1)} µs, nats-server ${fmt(perTicket(agent.cpu.nats), 1)} µs ` +
        `(${fmt(perTicket(Math.min(...consumeNatsCpu)), 1)} µs per message for the bare consumer) ` +
        `(machine ${fmt(agent.cpu.machineBusyPct, 0)}% busy); bare verify ${fmt(perTicket(verify.cpu), 1)} µs`,
    );
    console.log(
      `CPU-bound ratio (bare verify CPU / agent + nats-server CPU, per ticket): ${fmt(cpuRatio, 2)}; ` +
        'the measured ratio tends to it on an otherwise idle machine',
    );
    console.log(
      `target: agent rate >= ${TARGET_RATIO} x bare verify rate: ${fmt(ratio, 2)} ${met ? 'MET' : 'MISSED'}`,
    );
    printJsonLine({
      bench: 'bootstrap',
      date: new Date().toISOString(),
      machine,
      load_avg_end: loadAverage(),
      tickets,
      runs,
      agent: {
        seconds: round(agent.seconds, 3),
        tickets_per_s: round(agentRate, 0),
        api_up_ms: round(agent.apiUpMs, 0),
        peak_rss_bytes: agent.peakRss ?? null,
        child_max_rss_bytes: agent.childMaxRss,
        db_bytes: agent.dbBytes,
        wal_bytes: agent.walBytes,
        db_total_bytes: agent.dbBytes + agent.walBytes,
        cpu_us_per_ticket: {
          main_thread: round(perTicket(agent.cpu.main), 1),
          verify_workers: round(perTicket(sum(agent.cpu.workers)), 1),
          other_threads: round(perTicket(agent.cpu.other), 1),
          nats_server: round(perTicket(agent.cpu.nats), 1),
        },
        machine_busy_pct: round(agent.cpu.machineBusyPct, 1),
        runs_s: agentRuns.map((r) => round(r.seconds, 3)),
      },
      bare_consume: {
        seconds: round(consumeSeconds, 3),
        msgs_per_s: round(consumeRate, 0),
        nats_cpu_us_per_msg: round(perTicket(Math.min(...consumeNatsCpu)), 1),
        runs_s: consumeRuns.map((v) => round(v, 3)),
      },
      bare_verify: {
        workers,
        seconds: round(verify.seconds, 3),
        verifications_per_s: round(verifyRate, 0),
        cpu_us_per_verification: round(perTicket(verify.cpu), 1),
        runs_s: verifyRuns.map((r) => round(r.seconds, 3)),
      },
      ratio: round(ratio, 3),
      cpu_bound_ratio: round(cpuRatio, 3),
      ratio_vs_consume: round(agentRate / consumeRate, 3),
      target: { ratio_min: TARGET_RATIO, met },
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
