/**
 * The hub's webhook side, wired in one place: the endpoint store, the sources that turn events into
 * messages, the dispatcher that queues a delivery per subscribed endpoint, one worker per enabled
 * endpoint, and the HTTP routes. See docs/webhooks.md.
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { FastifyInstance } from 'fastify';
import { errorMessage } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { NatsConnection } from '../../shared/nats.ts';
import { PubAcks } from '../../shared/pub-acks.ts';
import { STREAMS, subjects } from '../../shared/subjects.ts';
import type { AgentBoard } from '../agent-board.ts';
import type { WebhookSettings } from '../config.ts';
import type { HubMetrics } from '../metrics.ts';
import { registerDeliveryRoutes } from './delivery-routes.ts';
import { Dispatcher } from './dispatcher.ts';
import { registerEndpointRoutes } from './endpoint-routes.ts';
import { EndpointStore } from './endpoints.ts';
import { type DeadLetter, type EndpointRecord, type EndpointWithHealth, publicEndpoint } from './model.ts';
import { WebhookQueries } from './queries.ts';
import { WebhookSender } from './sender.ts';
import { AgentPresence, StreamSource, streamSources } from './sources.ts';
import type { Resolver } from './ssrf.ts';
import { EndpointWorker, endpointConsumerName } from './worker.ts';

export interface WebhooksOptions {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  endpointsKv: KV;
  /** The hub's view of agents' heartbeats, for agent.online / agent.offline. */
  board: AgentBoard;
  settings: WebhookSettings;
  agentOfflineAfterMs: number;
  logger: Logger;
  metrics: HubMetrics;
  /** DNS for registration and connect-time checks; tests pass a fake one. */
  resolver?: Resolver;
}

export interface Webhooks {
  store: EndpointStore;
  /** What GET /v1/webhooks/health answers; the dashboard reads it directly. */
  health(): Promise<EndpointWithHealth[]>;
  dispatcher: Dispatcher;
  queries: WebhookQueries;
  routes(api: FastifyInstance): void;
  stop(): Promise<void>;
}

export async function startWebhooks(opts: WebhooksOptions): Promise<Webhooks> {
  const { js, jsm, logger, metrics, settings } = opts;
  const store = new EndpointStore({ kv: opts.endpointsKv, logger });
  await store.start();
  const acks = new PubAcks(opts.nc);
  const dispatcher = new Dispatcher({
    acks,
    nc: opts.nc,
    store,
    logger,
    metrics,
    maxPayloadBytes: settings.maxPayloadBytes,
  });
  const sender = new WebhookSender(settings, opts.resolver);
  const queries = new WebhookQueries(js, jsm, dispatcher, logger);
  const workers = new Map<string, EndpointWorker>();
  dispatcher.useWorkers((id) => workers.get(id));
  let stopping = false;

  const operational = (build: () => Parameters<Dispatcher['message']>[0], except: string) => {
    try {
      void dispatcher.publish(dispatcher.message(build()), except).catch((err: unknown) => {
        logger.warn({ err: errorMessage(err) }, 'operational webhook event not queued');
      });
    } catch (err: unknown) {
      logger.warn({ err: errorMessage(err) }, 'operational webhook event refused');
    }
  };
  const workerDeps = {
    nc: opts.nc,
    js,
    jsm,
    acks,
    store,
    dispatcher,
    sender,
    settings,
    logger,
    metrics,
    onDisabled(e: EndpointRecord) {
      operational(
        () => ({
          type: 'endpoint.disabled',
          data: {
            endpoint_id: e.id,
            url: e.url,
            reason: e.disabled_reason,
            disabled_at: e.disabled_at,
            failing_since: e.failing_since,
          },
        }),
        e.id,
      );
    },
    onExhausted(dl: DeadLetter) {
      operational(
        () => ({
          type: 'message.attempt.exhausted',
          data: {
            endpoint_id: dl.endpoint_id,
            message_id: dl.message_id,
            event_type: dl.event_type,
            attempts: dl.attempts,
            reason: dl.reason,
            dead_at: dl.dead_at,
          },
        }),
        dl.endpoint_id,
      );
    },
  };

  // One worker per enabled endpoint, started and stopped as endpoints change (here or in another hub).
  const reconcile = async (id: string, e: EndpointRecord | undefined) => {
    if (stopping) return;
    const worker = workers.get(id);
    const wanted = e !== undefined && !e.disabled;
    if (wanted && worker === undefined) {
      const w = new EndpointWorker(id, workerDeps);
      workers.set(id, w);
      await w.start();
    } else if (!wanted && worker !== undefined) {
      workers.delete(id);
      await worker.stop();
    }
    if (e === undefined) {
      // Deleted: its queue and consumer go with it (attempts and dead letters age out).
      await jsm.consumers.delete(STREAMS.webhooks, endpointConsumerName(id)).catch(() => false);
      await jsm.streams.purge(STREAMS.webhooks, { filter: subjects.delivery(id) }).catch(() => undefined);
    }
  };
  const reconcileLogged = (id: string, e: EndpointRecord | undefined) => {
    reconcile(id, e).catch((err: unknown) => {
      logger.error({ err: errorMessage(err), endpoint: id }, 'webhook worker not (re)started');
    });
  };
  store.onChange(reconcileLogged);
  for (const e of store.list()) await reconcile(e.id, e);

  const sources = streamSources(dispatcher).map(
    (spec) => new StreamSource(spec, { js, jsm, dispatcher, logger, metrics }),
  );
  for (const s of sources) await s.start();
  store.onChange(() => {
    for (const s of sources) void s.refresh();
  });
  const presence = new AgentPresence({
    board: opts.board,
    dispatcher,
    logger,
    offlineAfterMs: opts.agentOfflineAfterMs,
  });
  presence.start();

  /** Every endpoint with this process's view of its deliveries and its JetStream queue. */
  const health = (): Promise<EndpointWithHealth[]> =>
    Promise.all(
      store.list().map(async (e) => {
        let queued: number | null = null;
        try {
          const info = await jsm.consumers.info(STREAMS.webhooks, endpointConsumerName(e.id));
          queued = info.num_pending + info.num_ack_pending;
        } catch {
          // no consumer (yet): unknown
        }
        return { ...publicEndpoint(e), health: workers.get(e.id)?.health() ?? null, queued };
      }),
    );

  return {
    store,
    dispatcher,
    queries,
    health,
    routes(api) {
      registerEndpointRoutes(api, {
        store,
        settings,
        ...(opts.resolver === undefined ? {} : { resolver: opts.resolver }),
        logger,
        metrics,
        sendTest: async (endpoint, data) => {
          const m = dispatcher.message({
            type: 'webhook.test',
            data: data ?? { endpoint_id: endpoint.id, note: 'a test message from gatesync' },
          });
          await dispatcher.storeMessage(m);
          await dispatcher.queue(m, endpoint.id, { attempt: 1, trigger: 'test', dueAt: 0 });
          return { message_id: m.id };
        },
        sourcesSettled: async () => {
          await Promise.all(sources.map((s) => s.refresh()));
        },
      });
      registerDeliveryRoutes(api, { store, queries, health });
    },
    async stop() {
      stopping = true;
      presence.stop();
      for (const s of sources) await s.stop();
      await Promise.all([...workers.values()].map((w) => w.stop()));
      workers.clear();
      await queries.stop();
      await sender.close();
      await store.stop();
      acks.close();
    },
  };
}
