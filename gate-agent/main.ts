/**
 * Wires the gate agent and owns its lifecycle. The store and the scanner API come up first and do not
 * wait for the network: a kiosk that boots while the venue is offline answers scans from its store at
 * once, and the NATS side (ticket sync) joins whenever the link appears.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { FastifyError } from 'fastify';
import { errorMessage } from '../shared/errors.ts';
import { answerError } from '../shared/http.ts';
import type { Logger } from '../shared/logger.ts';
import { connectNats, drainOrClose, LinkState, type NatsConnection } from '../shared/nats.ts';
import { STREAMS } from '../shared/subjects.ts';
import type { AgentConfig } from './config.ts';
import { HeartbeatPublisher } from './heartbeat.ts';
import { AGENT_BODY_LIMIT, buildAgentHttp, scanAnswerOf } from './http-api.ts';
import { HttpFront } from './http-front.ts';
import { type AgentMetrics, createAgentMetrics } from './metrics.ts';
import { OutboxPublisher } from './outbox-publisher.ts';
import { PeerCheckins } from './peer-checkins.ts';
import { ScanService } from './scan-service.ts';
import { TicketStore } from './ticket-store.ts';
import { TicketSync } from './ticket-sync.ts';
import { VerifierPool } from './verifier-pool.ts';
import { WalSync } from './wal-sync.ts';

export interface AgentHandle {
  url: string;
  port: number;
  store: TicketStore;
  metrics: AgentMetrics;
  link: LinkState;
  /** Resolves once NATS is connected and sync, outbox and peers run. */
  networkReady: Promise<void>;
  outbox(): OutboxPublisher | undefined;
  status(): AgentStatus;
  stop(): Promise<void>;
}

export interface AgentStatus {
  venue: string;
  agent: string;
  gate: string;
  connected: boolean;
  /** When the link last changed state, ISO time. */
  link_since: string;
  last_event: { seq: number; at: string | null; age_ms: number | null; applied_at: string | null };
  sync_pending: number | null;
  sync_error: string | null;
  tickets_held: number;
  checkins_unsent: number;
  oldest_unsent_age_ms: number | null;
  checkins_total: number;
}

export async function startAgent(config: AgentConfig, logger: Logger): Promise<AgentHandle> {
  mkdirSync(dirname(config.dbPath), { recursive: true });
  const store = new TicketStore(config.dbPath);
  // Events signed by a key this gate did not trust yet were dropped; when the trusted set changes
  // (a key rotation reaching the gate), read the venue's tickets again so none stays missing.
  const keysFingerprint = [...config.trustedKeys.values()]
    .map((k) => `${k.kid}:${k.publicKey}`)
    .sort()
    .join(',');
  const previousKeys = store.getMeta('trusted_keys');
  if (previousKeys !== undefined && previousKeys !== keysFingerprint) {
    logger.info('trusted keys changed since the last run: re-reading every ticket of the venue');
    store.resetSyncPosition(STREAMS.tickets);
  }
  store.setMeta('trusted_keys', keysFingerprint);
  const walSync = new WalSync(config.dbPath);
  // Whatever an earlier run left unsynced is on disk before the first answer (and before any send).
  await walSync.sync();
  const link = new LinkState();
  const metrics = createAgentMetrics({
    outboxDepth: () => store.outboxStats().depth,
    oldestUnsentAgeSeconds: () => {
      const oldest = store.outboxStats().oldestScannedAt;
      return oldest === null ? 0 : (Date.now() - oldest) / 1000;
    },
    ticketsHeld: () => store.ticketCount(),
    syncLagSeconds: () => {
      const at = store.syncPosition(STREAMS.tickets).lastEventAt;
      return at === null ? 0 : (Date.now() - at) / 1000;
    },
    connected: () => link.connected,
  });
  const pool = new VerifierPool(config.trustedKeys, config.verifyWorkers);
  let sync: TicketSync | undefined;
  let outbox: OutboxPublisher | undefined;
  let peers: PeerCheckins | undefined;
  let heartbeat: HeartbeatPublisher | undefined;
  let nc: NatsConnection | undefined;
  const stopping = new AbortController();

  const scans = new ScanService({
    walSync,
    store,
    venue: config.venue,
    agent: config.agentId,
    gate: config.gate,
    reentry: config.reentry,
    trustedKeys: config.trustedKeys,
    onCommitted: (results, size) => {
      metrics.commitGroup.observe(size);
      outbox?.offer(results.map((r) => r.record));
    },
  });

  const status = (): AgentStatus => {
    const pos = store.syncPosition(STREAMS.tickets);
    const outbox = store.outboxStats();
    const now = Date.now();
    const held = store.ticketCount();
    return {
      venue: config.venue,
      agent: config.agentId,
      gate: config.gate,
      connected: link.connected,
      link_since: new Date(link.since).toISOString(),
      last_event: {
        seq: pos.lastSeq,
        at: pos.lastEventAt === null ? null : new Date(pos.lastEventAt).toISOString(),
        age_ms: pos.lastEventAt === null ? null : now - pos.lastEventAt,
        applied_at: pos.lastAppliedAt === null ? null : new Date(pos.lastAppliedAt).toISOString(),
      },
      sync_pending: sync?.pending ?? null,
      sync_error: sync?.lastError ?? null,
      tickets_held: held,
      checkins_unsent: outbox.depth,
      oldest_unsent_age_ms: outbox.oldestScannedAt === null ? null : now - outbox.oldestScannedAt,
      checkins_total: store.checkinCount(),
    };
  };

  const app = buildAgentHttp({
    logger,
    metrics,
    scans,
    scannerTokens: config.scannerTokens,
    status,
    recentRejects: (limit) => store.recentRejects(limit),
    sentThrough: () => store.sentThrough(),
    // Ready = store open and NATS connected. Not ready does not mean "do not scan": scans are answered
    // from the store while the link is down; /readyz tells an orchestrator the gate is cut off.
    notReadyReason: () =>
      !store.db.open
        ? 'the store is not open'
        : link.connected
          ? undefined
          : 'not connected to NATS (scans are still answered from the local store)',
  });
  let front: HttpFront | undefined;
  let port: number;
  if (config.httpThread) {
    front = new HttpFront({
      app,
      answerScan: scanAnswerOf(app),
      answerError: (err) =>
        answerError({ logger, errorCounter: metrics.httpErrors }, err as FastifyError, 'POST', '/v1/scans'),
      logger,
      host: config.host,
      port: config.port,
      bodyLimit: AGENT_BODY_LIMIT,
      scannerTokens: config.scannerTokens,
    });
    // Routes and schemas compiled now: a mistake stops the start, not the first forwarded request.
    await app.ready();
    port = await front.start();
  } else {
    await app.listen({ host: config.host, port: config.port });
    const address = app.server.address();
    port = typeof address === 'object' && address !== null ? address.port : config.port;
  }
  const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
  logger.info(
    { url, venue: config.venue, agent: config.agentId, gate: config.gate },
    'gate agent serving scans',
  );

  // The network side comes up in the background; scans never wait for it.
  const networkReady = (async () => {
    nc = await connectNats(
      {
        servers: config.natsUrls,
        name: `gatesync-agent-${config.venue}-${config.agentId}`,
        credsFile: config.natsCredsFile,
        user: config.natsUser,
        pass: config.natsPass,
        token: config.natsToken,
      },
      logger,
      link,
      stopping.signal,
    );
    sync = new TicketSync({
      js: jetstream(nc),
      jsm: await jetstreamManager(nc, { checkAPI: false }),
      store,
      pool,
      venue: config.venue,
      agent: config.agentId,
      logger,
      onApplied: (applied, stale) => {
        metrics.eventsApplied.inc(applied);
        metrics.eventsStale.inc(stale);
      },
      onRejected: (reason) => metrics.eventsRejected.inc({ reason }),
    });
    sync.start();
    const js = jetstream(nc);
    outbox = new OutboxPublisher({
      nc,
      store,
      link,
      logger,
      onSent: (n) => metrics.checkinsSent.inc(n),
      durableSeq: () => scans.durableSeq(),
    });
    outbox.start();
    const sender = outbox;
    peers = new PeerCheckins({
      js,
      store,
      venue: config.venue,
      agent: config.agentId,
      logger,
      publishedHere: (id) => sender.publishedHere(id),
    });
    peers.start();
    heartbeat = new HeartbeatPublisher({
      js,
      link,
      logger,
      venue: config.venue,
      agent: config.agentId,
      build: () => {
        const pos = store.syncPosition(STREAMS.tickets);
        const ob = store.outboxStats();
        return {
          venue: config.venue,
          agent: config.agentId,
          gate: config.gate,
          connected: link.connected,
          sent_at: Date.now(),
          last_event_seq: pos.lastSeq,
          last_event_at: pos.lastEventAt,
          tickets_held: store.ticketCount(),
          outbox_depth: ob.depth,
          oldest_unsent_at: ob.oldestScannedAt,
          checkins_total: store.checkinCount(),
        };
      },
    });
    heartbeat.start();
  })().catch((err: unknown) => {
    if (stopping.signal.aborted) return;
    logger.error({ err: errorMessage(err) }, 'gate agent network side failed to start');
  });

  return {
    url,
    port,
    store,
    metrics,
    link,
    networkReady,
    outbox: () => outbox,
    status,
    async stop() {
      stopping.abort();
      await front?.stop();
      await app.close();
      heartbeat?.stop();
      await peers?.stop();
      await outbox?.stop();
      await sync?.stop();
      if (nc !== undefined) await drainOrClose(nc, 1_000);
      await pool.close();
      walSync.close();
      store.close();
      logger.info('gate agent stopped');
    },
  };
}
