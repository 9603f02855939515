/**
 * The hub dashboard, wired in one place: the snapshot builder (over the hub's agent board),
 * the page (public) and its JSON and stream routes (admin). See hub/dashboard/routes.ts.
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../../shared/logger.ts';
import type { AgentBoard } from '../agent-board.ts';
import type { Webhooks } from '../webhooks/index.ts';
import { registerDashboardPage, registerDashboardRoutes } from './routes.ts';
import { SnapshotBuilder } from './snapshot.ts';

export interface DashboardOptions {
  js: JetStreamClient;
  jsm: JetStreamManager;
  board: AgentBoard;
  webhooks: Webhooks;
  /** Milliseconds without a heartbeat before an agent shows offline. */
  offlineAfterMs: number;
  logger: Logger;
}

export interface Dashboard {
  /** GET /dashboard, registered outside the API-key check. */
  page(app: FastifyInstance): void;
  /** GET /v1/dashboard/summary and /v1/dashboard/stream, inside it. */
  routes(api: FastifyInstance): void;
}

export function createDashboard(opts: DashboardOptions): Dashboard {
  const { board } = opts;
  const snapshots = new SnapshotBuilder({
    board,
    js: opts.js,
    jsm: opts.jsm,
    webhooks: opts.webhooks,
    offlineAfterMs: opts.offlineAfterMs,
  });
  return {
    page: registerDashboardPage,
    routes(instance) {
      registerDashboardRoutes(instance, { snapshots, logger: opts.logger });
    },
  };
}
