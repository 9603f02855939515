/**
 * The hub dashboard, wired in one place: the agent board (a watch of GS_AGENTS), the snapshot builder,
 * the page (public) and its JSON and stream routes (admin). See hub/dashboard/routes.ts.
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { FastifyInstance } from 'fastify';
import { GatesyncError } from '../../shared/errors.ts';
import type { Logger } from '../../shared/logger.ts';
import type { Webhooks } from '../webhooks/index.ts';
import { AgentBoard } from './agent-board.ts';
import { registerDashboardPage, registerDashboardRoutes } from './routes.ts';
import { type EndpointRow, SnapshotBuilder } from './snapshot.ts';

export interface DashboardOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  agentsKv: KV;
  webhooks: Webhooks;
  /** Milliseconds without a heartbeat before an agent shows offline. */
  offlineAfterMs: number;
  logger: Logger;
}

export interface Dashboard {
  board: AgentBoard;
  /** GET /dashboard, registered outside the API-key check. */
  page(app: FastifyInstance): void;
  /** GET /v1/dashboard/summary and /v1/dashboard/stream, inside it. */
  routes(api: FastifyInstance): void;
  stop(): void;
}

export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const board = new AgentBoard({
    kv: opts.agentsKv,
    logger: opts.logger,
    offlineAfterMs: opts.offlineAfterMs,
  });
  await board.start();
  let api: FastifyInstance | undefined;
  const snapshots = new SnapshotBuilder({
    board,
    js: opts.js,
    jsm: opts.jsm,
    webhooks: opts.webhooks,
    offlineAfterMs: opts.offlineAfterMs,
    async webhookHealth(authorization) {
      if (api === undefined) throw new Error('dashboard routes are not registered');
      const res = await api.inject({
        method: 'GET',
        url: '/v1/webhooks/health',
        headers: { authorization },
      });
      if (res.statusCode !== 200) {
        throw new GatesyncError('internal', `GET /v1/webhooks/health answered ${res.statusCode}`);
      }
      return res.json<{ endpoints: Omit<EndpointRow, 'state'>[] }>();
    },
  });
  return {
    board,
    page: registerDashboardPage,
    routes(instance) {
      api = instance;
      registerDashboardRoutes(instance, { snapshots, logger: opts.logger });
    },
    stop: () => board.stop(),
  };
}
