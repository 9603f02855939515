/**
 * Wires the hub and owns its lifecycle: start in order (NATS, streams and buckets, API keys, HTTP), stop
 * in reverse. `startHub` is what the CLI, the demo and the tests call.
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';
import { childCache } from '../shared/metric-children.ts';
import { connectNats, drainOrClose, LinkState, type NatsConnection } from '../shared/nats.ts';
import { AgentBoard } from './agent-board.ts';
import { ApiKeys } from './api-keys.ts';
import { CheckinConsumer } from './checkin-consumer.ts';
import type { HubConfig } from './config.ts';
import { createDashboard } from './dashboard/index.ts';
import { type EmbeddedNats, startEmbeddedNats } from './embedded-nats.ts';
import { buildHubHttp } from './http-api.ts';
import { IdempotencyStore } from './idempotency.ts';
import { createHubMetrics, type HubMetrics } from './metrics.ts';
import { registerOpenApi } from './openapi.ts';
import { ensureBuckets, ensureStreams } from './streams.ts';
import { TicketService } from './ticket-service.ts';
import { VenueQueries } from './venue-queries.ts';
import { startWebhooks, type Webhooks } from './webhooks/index.ts';
import type { Resolver } from './webhooks/ssrf.ts';

export interface HubHandle {
  /** http://host:port of the API. */
  url: string;
  port: number;
  natsUrl: string;
  nc: NatsConnection;
  tickets: TicketService;
  metrics: HubMetrics;
  checkins: CheckinConsumer;
  webhooks: Webhooks;
  stop(): Promise<void>;
}

export interface HubStartOptions {
  /** DNS used for webhook URL checks (tests pass a fake resolver). */
  resolver?: Resolver;
}

export async function startHub(
  config: HubConfig,
  logger: Logger,
  startOptions: HubStartOptions = {},
): Promise<HubHandle> {
  const stack: { name: string; stop: () => Promise<unknown> | unknown }[] = [];
  const stopAll = async () => {
    for (const { name, stop } of stack.reverse()) {
      try {
        await stop();
      } catch (err: unknown) {
        logger.warn({ err: errorMessage(err), part: name }, 'error while stopping');
      }
    }
    stack.length = 0;
  };
  try {
    let embedded: EmbeddedNats | undefined;
    if (config.natsUrls.length === 0) {
      embedded = await startEmbeddedNats(config.dataDir, logger);
      stack.push({ name: 'embedded nats', stop: () => embedded?.stop() });
    }
    const servers = embedded === undefined ? config.natsUrls : [embedded.url];
    const link = new LinkState();
    const nc = await connectNats(
      {
        servers,
        name: 'gatesync-hub',
        credsFile: config.natsCredsFile,
        user: config.natsUser,
        pass: config.natsPass,
        token: config.natsToken,
        ignoreClusterUpdates: false,
      },
      logger,
      link,
    );
    stack.push({ name: 'nats', stop: () => drainOrClose(nc) });
    const jsm = await jetstreamManager(nc);
    await ensureStreams(jsm, {
      checkinRetentionDays: config.checkinRetentionDays,
      webhookRetentionDays: config.webhooks.retentionDays,
      replicas: config.streamReplicas,
    });
    const buckets = await ensureBuckets(nc, config.streamReplicas);
    const metrics = createHubMetrics();
    const apiKeys = new ApiKeys(buckets.config, config.adminKey, logger);
    await apiKeys.start();
    stack.push({ name: 'api keys', stop: () => apiKeys.stop() });
    const tickets = new TicketService({
      js: jetstream(nc),
      jsm,
      signingKey: config.signingKey,
      onPublished: (type) => metrics.eventsPublished.inc({ type }),
    });
    // The labelled child is kept: finding it by its labels on every check-in cost 1.5 to 2 % of the
    // hub's busy time while it judged a backlog.
    const processed = childCache((decision: string, verdict: string) =>
      metrics.checkinsProcessed.labels({ decision, verdict }),
    );
    const checkins = new CheckinConsumer({
      nc,
      js: jetstream(nc),
      jsm,
      logger,
      onCheckin: (c, verdict) => processed(c.decision, verdict).inc(),
      onConflict: (_c, isNew) => {
        if (isNew) metrics.conflicts.inc();
      },
    });
    await checkins.start();
    stack.push({ name: 'check-in consumer', stop: () => checkins.stop() });
    // One watch of the agents' heartbeats serves the agents route, the dashboard and presence webhooks.
    const board = new AgentBoard({ kv: buckets.agents, logger, offlineAfterMs: config.agentOfflineAfterMs });
    await board.start();
    stack.push({ name: 'agent board', stop: () => board.stop() });
    const webhooks = await startWebhooks({
      nc,
      js: jetstream(nc),
      jsm,
      endpointsKv: buckets.endpoints,
      board,
      settings: config.webhooks,
      agentOfflineAfterMs: config.agentOfflineAfterMs,
      logger,
      metrics,
      ...(startOptions.resolver === undefined ? {} : { resolver: startOptions.resolver }),
    });
    stack.push({ name: 'webhooks', stop: () => webhooks.stop() });
    const dashboard = createDashboard({
      js: jetstream(nc),
      jsm,
      board,
      webhooks,
      offlineAfterMs: config.agentOfflineAfterMs,
      logger,
    });
    const app = buildHubHttp({
      publicRoutes: [registerOpenApi, (app) => dashboard.page(app)],
      routes: [(api) => webhooks.routes(api), (api) => dashboard.routes(api)],
      queries: new VenueQueries(jetstream(nc), jsm, board),
      logger,
      metrics,
      tickets,
      apiKeys,
      idempotency: new IdempotencyStore(buckets.idempotency),
      batchBodyLimit: config.batchBodyLimit,
      isReady: () => link.connected,
      publicKeys: () => [
        { kid: config.signingKey.kid, public_key: config.signingKey.publicKey, status: 'active' as const },
        ...[...config.extraPublicKeys.values()]
          .filter((k) => k.kid !== config.signingKey.kid)
          .map((k) => ({ kid: k.kid, public_key: k.publicKey, status: 'trusted' as const })),
      ],
    });
    await app.listen({ host: config.host, port: config.port });
    stack.push({ name: 'http', stop: () => app.close() });
    const address = app.server.address();
    const port = typeof address === 'object' && address !== null ? address.port : config.port;
    const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
    logger.info({ url, nats: servers.join(','), kid: config.signingKey.kid }, 'hub started');
    return {
      url,
      port,
      natsUrl: servers.join(','),
      nc,
      tickets,
      metrics,
      checkins,
      webhooks,
      stop: stopAll,
    };
  } catch (err: unknown) {
    await stopAll();
    throw err;
  }
}
