/**
 * bench:catchup — how long a gate agent takes to get a backlog of 10,000 check-ins, buffered while its
 * link was cut, acknowledged by JetStream once the link returns; against a bare nats.js publish loop of
 * as many messages of the same size, same window, same per-message options, in the same run.
 *
 * Set-up: our own nats-server (harness, ephemeral port, own store), the hub as a child process (its
 * check-in consumer keeps its own event loop, as in the cloud, though on this machine's cores), and one
 * gate agent in this process whose NATS connection goes through a harness TCP proxy. 20,000 tickets are
 * issued through the batch API and synced.
 *
 * Two rounds, each: cut the proxy; scan 10,000 fresh tickets once each over POST /v1/scans (10,000
 * admissions, each a committed check-in); wait until GET /v1/status shows checkins_unsent = 10000;
 * restore the proxy and time until the outbox is empty (the publisher's sent counter polled every 2 ms,
 * confirmed by store.outboxStats().depth = 0). The agent notices the link only after its own reconnect
 * (reconnectTimeWait 500 ms + up to 250 ms jitter, counted from its last failed attempt), seen by polling
 * LinkState.connected on the same clock; reconnect -> drained is the figure compared with the baseline.
 *   round 1, "system": the hub runs and consumes the check-ins while they arrive (the set-up the target
 *            is judged on);
 *   round 2, "agent alone": the hub has caught up and is stopped, so only the agent and the server work.
 * During each drain the run meters, without changing them, two methods of the agent's store:
 * applyVenueCheckins (the venue check-in reader applying what it reads back, the agent's own check-ins
 * included) and markSent (the publisher marking acked rows), and the CPU time of the three processes.
 *
 * Baseline: 10,000 publishes of a payload as long as one encoded check-in (toCheckinMessage + encode), on
 * subjects as long as a check-in's, each with expect lastSubjectSequence 0, up to 256 in flight,
 * to a separate stream on the same server, from this process: straight to the server, and through a
 * second harness proxy (the agent's path). Run twice before, between and after the rounds; the median is
 * the baseline.
 *
 * Environment (optional): BENCH_CHECKINS (10000 per round), BENCH_WINDOW (the baseline's; by default
 * the agent's own, OUTBOX_WINDOW = 1,024), BENCH_SCAN_CONCURRENCY (32), BENCH_LOG_LEVEL (the hub child's,
 * default info).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { OUTBOX_WINDOW, toCheckinMessage } from '../gate-agent/outbox-publisher.ts';
import { HUB_CHECKIN_CONSUMER } from '../hub/checkin-consumer.ts';
import { encode } from '../shared/codec.ts';
import { STREAMS, subjects } from '../shared/subjects.ts';
import { makeKeys, startTestAgent, type TestAgent } from '../test/harness/gatesync.ts';
import { startNats, startTcpProxy, type TcpProxy, tmpDir, waitFor } from '../test/harness/index.ts';
import { envInt } from './lib/machine.ts';
import {
  fmt,
  machine,
  mapConcurrent,
  printJsonLine,
  printMachine,
  printTable,
  progress,
  round,
  runBench,
  sleep,
  summarize,
} from './support/common.ts';
import { type HubProcess, issueTickets, spawnHub } from './support/hub-process.ts';
import { meterMethod, processCpuMs, selfCpuMs } from './support/instrument.ts';
import { connectPlain, createBaselineStream, publishWindow } from './support/jetstream-baseline.ts';

const VENUE = 'bench';
const AGENT = 'north';
const TARGET_RATIO = 2; // round 1, reconnect -> drained, over the bare publish loop straight to the server
/** Milliseconds between looks at the outbox and the link while it drains. */
const POLL_MS = 2;
/** Milliseconds a drain may take before the run gives up. */
const DRAIN_LIMIT_MS = 60_000;

interface RoundResult {
  label: string;
  /** Milliseconds, all from proxy.restore() on the monotonic clock. */
  reconnectAt: number;
  firstAckAt: number;
  drainedAt: number;
  duplicates: number;
  peerApply: { calls: number; items: number; ms: number };
  markSent: { calls: number; ms: number };
  cpuMs: { agent: number; hub: number | undefined; nats: number | undefined };
  /** The hub's CPU time counter at the restore, to measure it up to its last check-in as well. */
  hubCpuAtRestore: number | undefined;
}

await runBench('bench:catchup', 170_000, async (cleanup) => {
  const m = machine();
  printMachine(m);
  const n = envInt('BENCH_CHECKINS', 10_000);
  // The bare loop keeps as many publishes in flight as the agent's outbox does (OUTBOX_WINDOW).
  const window = envInt('BENCH_WINDOW', OUTBOX_WINDOW);
  const scanConcurrency = envInt('BENCH_SCAN_CONCURRENCY', 32);

  const dir = await tmpDir('gs-bench-catchup-');
  cleanup.add('temp dir', () => rm(dir, { recursive: true, force: true }));
  const nats = await startNats();
  cleanup.add('nats-server', () => nats.cleanup());
  const keys = makeKeys(dir);
  const hub: HubProcess = await spawnHub({
    natsUrl: nats.url,
    dataDir: join(dir, 'hub'),
    signingKeyFile: keys.file,
  });
  cleanup.add('hub', () => hub.stop());
  const proxy: TcpProxy = await startTcpProxy({ host: '127.0.0.1', port: nats.port });
  cleanup.add('agent proxy', () => proxy.close());
  const agent: TestAgent = await startTestAgent({
    natsUrl: proxy.url,
    venue: VENUE,
    agentId: AGENT,
    gate: AGENT,
    dbPath: join(dir, `${AGENT}.db`),
    trusted: keys.trusted,
  });
  cleanup.add('agent', () => agent.stop());
  await agent.networkReady;
  progress(`nats ${nats.url}, hub ${hub.url} (pid ${hub.pid}), agent ${agent.url} via proxy ${proxy.port}`);

  const issueStart = performance.now();
  const qrs = await issueTickets(hub, VENUE, 2 * n, 'C');
  await waitFor(() => agent.store.ticketCount() >= 2 * n, {
    timeoutMs: 90_000,
    intervalMs: 100,
    message: `agent holds ${2 * n} tickets`,
  });
  progress(`${2 * n} tickets issued and synced in ${fmt(performance.now() - issueStart)} ms`);

  // The baseline's connections and streams: one straight to the server, one through its own proxy.
  const direct = await connectPlain(nats.url, 'bench-bare-direct');
  cleanup.add('bare direct connection', () => direct.close());
  const jsm = await jetstreamManager(direct);
  const bareProxy = await startTcpProxy({ host: '127.0.0.1', port: nats.port });
  cleanup.add('bare proxy', () => bareProxy.close());
  const viaProxy = await connectPlain(bareProxy.url, 'bench-bare-proxied');
  cleanup.add('bare proxied connection', () => viaProxy.close());
  const prefixDirect = await createBaselineStream(direct, 'direct');
  const prefixProxied = await createBaselineStream(viaProxy, 'proxied');

  const outbox = agent.outbox();
  if (outbox === undefined) throw new Error('the agent has no outbox publisher');
  const peerApply = meterMethod(agent.store, 'applyVenueCheckins');
  const markSent = meterMethod(agent.store, 'markSentThrough');
  let payload: Uint8Array | undefined;
  let subjectLength = 0;

  const catchupRound = async (label: string, tickets: string[], hubPid: number | undefined) => {
    proxy.cut();
    await waitFor(() => !agent.link.connected, { message: 'agent notices the cut' });
    const scanStart = performance.now();
    const answers = await mapConcurrent(tickets, scanConcurrency, (qr) => agent.scan(qr));
    const admitted = answers.filter((a) => a.decision === 'admit').length;
    progress(
      `${label}: ${n} scans (${admitted} admitted) while cut, ${fmt(performance.now() - scanStart)} ms`,
    );
    await waitFor(
      async () => (await agent.api<{ checkins_unsent: number }>('/v1/status')).body.checkins_unsent === n,
      { timeoutMs: 10_000, message: `GET /v1/status shows checkins_unsent = ${n}` },
    );
    if (payload === undefined) {
      // One check-in as the publisher sends it: its payload and subject lengths, for the baseline.
      const sample = agent.store.recentCheckins(1)[0];
      if (sample === undefined) throw new Error('no check-in recorded');
      payload = encode(toCheckinMessage(sample));
      subjectLength = subjects.checkin(sample.venue, sample.agent, sample.id).length;
      progress(`check-in message: ${payload.length} bytes, subject ${subjectLength} characters`);
    }

    const sentBefore = outbox.sent;
    const dupBefore = outbox.duplicates;
    peerApply.reset();
    markSent.reset();
    const cpu0 = {
      agent: selfCpuMs(),
      hub: hubPid === undefined ? undefined : processCpuMs(hubPid),
      nats: processCpuMs(nats.pid),
    };
    const restoreAt = performance.now();
    proxy.restore();
    let reconnectAt: number | undefined;
    let firstAckAt: number | undefined;
    let drainedAt: number | undefined;
    while (drainedAt === undefined) {
      const now = performance.now();
      if (now - restoreAt > DRAIN_LIMIT_MS) {
        throw new Error(`${label}: outbox not drained in 60 s (depth ${agent.store.outboxStats().depth})`);
      }
      if (reconnectAt === undefined && agent.link.connected) reconnectAt = now;
      const sent = outbox.sent - sentBefore;
      if (firstAckAt === undefined && sent > 0) firstAckAt = now;
      if (sent >= n && agent.store.outboxStats().depth === 0) drainedAt = now;
      else await sleep(POLL_MS);
    }
    const cpu1 = {
      agent: selfCpuMs(),
      hub: hubPid === undefined ? undefined : processCpuMs(hubPid),
      nats: processCpuMs(nats.pid),
    };
    const diff = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined ? undefined : b - a;
    const r: RoundResult = {
      label,
      reconnectAt: (reconnectAt ?? drainedAt) - restoreAt,
      firstAckAt: (firstAckAt ?? drainedAt) - restoreAt,
      drainedAt: drainedAt - restoreAt,
      duplicates: outbox.duplicates - dupBefore,
      peerApply: { calls: peerApply.calls, items: peerApply.items, ms: peerApply.ms },
      markSent: { calls: markSent.calls, ms: markSent.ms },
      cpuMs: {
        agent: cpu1.agent - cpu0.agent,
        hub: diff(cpu0.hub, cpu1.hub),
        nats: diff(cpu0.nats, cpu1.nats),
      },
      hubCpuAtRestore: cpu0.hub,
    };
    progress(
      `${label}: drained in ${fmt(r.drainedAt)} ms from restore (reconnect at ${fmt(r.reconnectAt)} ms)`,
    );
    return r;
  };

  const bareDirect: number[] = [];
  const bareProxied: number[] = [];
  const bare = async (label: string, runs: number) => {
    if (payload === undefined) throw new Error('no sample check-in yet');
    for (let i = 0; i < runs; i++) {
      const opts = { subjectLength, payload, count: n, window };
      const d = await publishWindow(jetstream(direct), { ...opts, prefix: `${prefixDirect}.${label}${i}` });
      const p = await publishWindow(jetstream(viaProxy), {
        ...opts,
        prefix: `${prefixProxied}.${label}${i}`,
      });
      bareDirect.push(d.ms);
      bareProxied.push(p.ms);
      progress(`bare publish (${label} ${i + 1}): direct ${fmt(d.ms)} ms, via proxy ${fmt(p.ms)} ms`);
    }
  };

  // Round 1 measures the sample check-in first; the baseline runs need its size, so they follow it.
  const r1 = await catchupRound('round 1 (hub running)', qrs.slice(0, n), hub.pid);
  const hubWait = performance.now();
  await waitFor(
    async () => {
      const ci = await jsm.consumers.info(STREAMS.checkins, HUB_CHECKIN_CONSUMER);
      return ci.num_pending === 0 && ci.num_ack_pending === 0;
    },
    { timeoutMs: 60_000, intervalMs: 20, message: 'the hub has consumed every check-in' },
  );
  const hubLag = performance.now() - hubWait;
  // A hub that falls behind does part of its work after the drain: count it up to the last check-in.
  const hubCpuNow = processCpuMs(hub.pid);
  const hubCpuToConsumed =
    r1.hubCpuAtRestore === undefined || hubCpuNow === undefined ? undefined : hubCpuNow - r1.hubCpuAtRestore;
  progress(`hub consumed the last check-in ${fmt(hubLag)} ms after the agent drained`);
  await bare('a', 2);
  await hub.stop();
  await bare('b', 2);
  const r2 = await catchupRound('round 2 (hub stopped)', qrs.slice(n, 2 * n), undefined);
  await bare('c', 2);

  const info = await jsm.streams.info(STREAMS.checkins);
  if (info.state.messages < 2 * n) throw new Error(`GS_CHECKINS holds ${info.state.messages} < ${2 * n}`);

  const baseD = summarize(bareDirect).p50;
  const baseP = summarize(bareProxied).p50;
  const rate = (ms: number) => (n / ms) * 1000;
  const fromReconnect = (r: RoundResult) => r.drainedAt - r.reconnectAt;
  const ratio = (r: RoundResult) => fromReconnect(r) / baseD;

  console.log();
  console.log(
    `catch-up of ${n} check-ins (${payload?.length} B each, window ${window}) after a link cut; ` +
      `ratio = reconnect->drained / bare publish straight to the server (median of ${bareDirect.length})`,
  );
  printTable(
    [
      'run',
      'restore->drained ms',
      'restore->reconnect ms',
      'reconnect->1st ack ms',
      'reconnect->drained ms',
      'check-ins/s',
      'ratio',
    ],
    [
      ...[r1, r2].map((r) => [
        r.label,
        fmt(r.drainedAt),
        fmt(r.reconnectAt),
        fmt(r.firstAckAt - r.reconnectAt),
        fmt(fromReconnect(r)),
        fmt(rate(fromReconnect(r))),
        fmt(ratio(r), 2),
      ]),
      ['bare publish, direct (baseline)', '-', '-', '-', fmt(baseD), fmt(rate(baseD)), '1.00'],
      ['bare publish, via proxy', '-', '-', '-', fmt(baseP), fmt(rate(baseP)), fmt(baseP / baseD, 2)],
    ],
  );
  console.log(
    `bare runs, ms: direct ${bareDirect.map((v) => fmt(v)).join(' ')}; via proxy ` +
      `${bareProxied.map((v) => fmt(v)).join(' ')}`,
  );
  console.log();
  console.log('where the time goes during each drain (ms; blocked = synchronous time on the event loop)');
  printTable(
    [
      'run',
      'peer apply calls',
      'rows/call',
      'peer apply blocked',
      'markSent calls',
      'markSent blocked',
      'cpu agent',
      'cpu hub',
      'cpu nats',
    ],
    [r1, r2].map((r) => [
      r.label,
      fmt(r.peerApply.calls),
      fmt(r.peerApply.items / Math.max(1, r.peerApply.calls), 1),
      fmt(r.peerApply.ms),
      fmt(r.markSent.calls),
      fmt(r.markSent.ms),
      fmt(r.cpuMs.agent),
      fmt(r.cpuMs.hub),
      fmt(r.cpuMs.nats),
    ]),
  );
  console.log(
    `hub consumed the last check-in of round 1 ${fmt(hubLag)} ms after the agent drained; ` +
      `hub CPU from the restore to then: ${hubCpuToConsumed === undefined ? '-' : fmt(hubCpuToConsumed)} ms`,
  );
  const met = ratio(r1) <= TARGET_RATIO;
  console.log(
    `target: reconnect->drained within ${TARGET_RATIO}x the bare loop (round 1): ${met ? 'met' : 'NOT met'} ` +
      `(${fmt(ratio(r1), 2)}x; round 2, hub stopped: ${fmt(ratio(r2), 2)}x)`,
  );
  const roundFigures = (r: RoundResult) => ({
    restore_to_drained_ms: round(r.drainedAt, 1),
    restore_to_reconnect_ms: round(r.reconnectAt, 1),
    reconnect_to_first_ack_ms: round(r.firstAckAt - r.reconnectAt, 1),
    reconnect_to_drained_ms: round(fromReconnect(r), 1),
    checkins_per_s: round(rate(fromReconnect(r)), 0),
    ratio: round(ratio(r), 2),
    duplicates: r.duplicates,
    peer_apply_calls: r.peerApply.calls,
    peer_apply_blocked_ms: round(r.peerApply.ms, 0),
    mark_sent_calls: r.markSent.calls,
    mark_sent_blocked_ms: round(r.markSent.ms, 0),
    cpu_agent_ms: round(r.cpuMs.agent, 0),
    cpu_hub_ms: r.cpuMs.hub === undefined ? null : round(r.cpuMs.hub, 0),
    cpu_nats_ms: r.cpuMs.nats === undefined ? null : round(r.cpuMs.nats, 0),
  });
  printJsonLine({
    bench: 'catchup',
    cpu: m.cpu,
    cores: m.cores,
    node: m.node,
    load_1m_at_start: m.load1,
    checkins: n,
    message_bytes: payload?.length ?? null,
    window,
    ...roundFigures(r1),
    checkins_per_s_from_restore: round(rate(r1.drainedAt), 0),
    ratio_vs_proxied: round(fromReconnect(r1) / baseP, 2),
    bare_direct_ms: round(baseD, 1),
    bare_proxied_ms: round(baseP, 1),
    bare_per_s: round(rate(baseD), 0),
    bare_direct_runs_ms: bareDirect.map((v) => round(v, 0)),
    hub_lag_after_drained_ms: round(hubLag, 0),
    cpu_hub_to_consumed_ms: hubCpuToConsumed === undefined ? null : round(hubCpuToConsumed, 0),
    agent_alone: roundFigures(r2),
    target_ratio: TARGET_RATIO,
    target_met: met,
  });
});
