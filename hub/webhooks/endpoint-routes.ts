/**
 * Webhook endpoint management routes. STUB: being written (see the webhook endpoints work package).
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../shared/logger.ts';
import type { WebhookSettings } from '../config.ts';
import type { HubMetrics } from '../metrics.ts';
import type { EndpointStore } from './endpoints.ts';
import type { EndpointRecord } from './model.ts';
import type { Resolver } from './ssrf.ts';

export interface EndpointRouteDeps {
  store: EndpointStore;
  settings: WebhookSettings;
  /** DNS for registration checks; tests pass a fake one. */
  resolver?: Resolver;
  logger: Logger;
  metrics: HubMetrics;
  /** Queues a `webhook.test` message to one endpoint (enabled or not) and returns its id. */
  sendTest(
    endpoint: EndpointRecord,
    data: Record<string, unknown> | undefined,
  ): Promise<{ message_id: string }>;
}

export function registerEndpointRoutes(_api: FastifyInstance, _deps: EndpointRouteDeps): void {}
