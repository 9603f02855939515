/**
 * The hub's webhook side, wired in one place: the endpoint store, the fan-out of events into per-endpoint
 * deliveries, the delivery workers, and their HTTP routes.
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../shared/logger.ts';
import type { WebhookSettings } from '../config.ts';
import type { HubMetrics } from '../metrics.ts';
import { registerEndpointRoutes } from './endpoint-routes.ts';
import { EndpointStore } from './endpoints.ts';
import type { Resolver } from './ssrf.ts';

export interface WebhooksOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  endpointsKv: KV;
  settings: WebhookSettings;
  logger: Logger;
  metrics: HubMetrics;
  /** DNS for registration and connect-time checks; tests pass a fake one. */
  resolver?: Resolver;
}

export interface Webhooks {
  store: EndpointStore;
  routes(api: FastifyInstance): void;
  stop(): Promise<void>;
}

export async function startWebhooks(opts: WebhooksOptions): Promise<Webhooks> {
  const store = new EndpointStore({ kv: opts.endpointsKv, logger: opts.logger });
  await store.start();
  return {
    store,
    routes(api) {
      registerEndpointRoutes(api, {
        store,
        settings: opts.settings,
        ...(opts.resolver === undefined ? {} : { resolver: opts.resolver }),
        logger: opts.logger,
        metrics: opts.metrics,
        sendTest: async () => {
          throw new Error('not implemented');
        },
      });
    },
    async stop() {
      await store.stop();
    },
  };
}
