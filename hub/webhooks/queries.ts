/**
 * Reading the webhook log: a message and its attempts, an endpoint's attempts, its dead letters; and the
 * bounded background jobs that re-queue dead letters (recover since a time, redrive all).
 */
import type { JetStreamClient, JetStreamManager } from '@nats-io/jetstream';
import { errorMessage, GatesyncError } from '../../shared/errors.ts';
import { newId } from '../../shared/ids.ts';
import type { Logger } from '../../shared/logger.ts';
import { STREAMS, subjects } from '../../shared/subjects.ts';
import { type Page, type PageQuery, readPage } from '../venue-queries.ts';
import type { Dispatcher } from './dispatcher.ts';
import type { AttemptRecord, DeadLetter, WebhookMessage } from './model.ts';

const json = <T>(b: Uint8Array): T => JSON.parse(new TextDecoder().decode(b)) as T;

export interface Job {
  id: string;
  kind: 'recover' | 'redrive';
  endpoint_id: string;
  since: string | null;
  status: 'running' | 'done' | 'failed';
  queued: number;
  error: string | null;
  started_at: string;
  finished_at: string | null;
}

/** Dead letters re-queued per job at most; a bigger backlog takes several jobs. */
const JOB_LIMIT = 100_000;
/** Deliveries published at once while a job runs, so a redrive cannot swamp JetStream. */
const JOB_BATCH = 200;

export class WebhookQueries {
  private readonly jobs = new Map<string, Job>();
  private readonly running = new Set<Promise<void>>();

  constructor(
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    private readonly dispatcher: Dispatcher,
    private readonly logger: Logger,
  ) {}

  async message(id: string): Promise<WebhookMessage | undefined> {
    const m = await this.jsm.streams
      .getMessage(STREAMS.messages, { last_by_subj: subjects.message(id) })
      .catch(() => null);
    return m === null ? undefined : json<WebhookMessage>(m.data);
  }

  /** Every attempt at a message, at every endpoint, oldest first (up to 1,000). */
  async messageAttempts(id: string): Promise<AttemptRecord[]> {
    const page = await readPage(
      this.js,
      STREAMS.attempts,
      `gs.att.*.${id}`,
      { limit: 1000 },
      json<AttemptRecord>,
    );
    return page.items.map(({ cursor: _c, ...a }) => a);
  }

  /** The attempts at one message at one endpoint since a time (milliseconds), oldest first. */
  async attemptsAt(endpointId: string, messageId: string, since: number): Promise<AttemptRecord[]> {
    const page = await readPage(
      this.js,
      STREAMS.attempts,
      subjects.attempt(endpointId, messageId),
      { since, limit: 1000 },
      json<AttemptRecord>,
    );
    return page.items;
  }

  endpointAttempts(endpointId: string, q: PageQuery): Promise<Page<AttemptRecord>> {
    return readPage(this.js, STREAMS.attempts, `gs.att.${endpointId}.*`, q, json<AttemptRecord>);
  }

  deadLetters(endpointId: string, q: PageQuery): Promise<Page<DeadLetter>> {
    return readPage(this.js, STREAMS.dead, `gs.dead.${endpointId}.*`, q, json<DeadLetter>);
  }

  /** Queues one message again to one endpoint, as a fresh run of attempts. */
  async resend(endpointId: string, messageId: string): Promise<void> {
    const m = await this.message(messageId);
    if (m === undefined) throw new GatesyncError('not_found', `no message ${messageId} (or it has expired)`);
    await this.dispatcher.queue(m, endpointId, { attempt: 1, trigger: 'resend', dueAt: 0 });
  }

  job(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  /**
   * Starts a background job that re-queues the endpoint's dead letters (those dead since `since`, or all)
   * and removes each from the dead-letter stream once it is queued again.
   */
  startJob(kind: Job['kind'], endpointId: string, since: number | undefined): Job {
    for (const j of this.jobs.values()) {
      if (j.endpoint_id === endpointId && j.status === 'running') {
        throw new GatesyncError(
          'job_running',
          `a ${j.kind} job (${j.id}) is already running for this endpoint`,
        );
      }
    }
    const job: Job = {
      id: newId('job_'),
      kind,
      endpoint_id: endpointId,
      since: since === undefined ? null : new Date(since).toISOString(),
      status: 'running',
      queued: 0,
      error: null,
      started_at: new Date().toISOString(),
      finished_at: null,
    };
    this.jobs.set(job.id, job);
    const run = this.runJob(job, since)
      .then(() => {
        job.status = 'done';
      })
      .catch((err: unknown) => {
        job.status = 'failed';
        job.error = errorMessage(err);
        this.logger.warn({ err: job.error, job: job.id }, 'webhook job failed');
      })
      .finally(() => {
        job.finished_at = new Date().toISOString();
        this.running.delete(run);
      });
    this.running.add(run);
    return job;
  }

  private async runJob(job: Job, since: number | undefined): Promise<void> {
    let after: number | undefined;
    while (job.queued < JOB_LIMIT) {
      const page = await this.deadLetters(job.endpoint_id, { after, limit: JOB_BATCH });
      const picked = page.items.filter((d) => since === undefined || Date.parse(d.dead_at) >= since);
      await Promise.all(
        picked.map(async (d) => {
          await this.dispatcher.queue(d.message, job.endpoint_id, {
            attempt: 1,
            trigger: job.kind,
            dueAt: 0,
          });
          await this.jsm.streams.deleteMessage(STREAMS.dead, d.cursor, false).catch(() => false);
        }),
      );
      job.queued += picked.length;
      if (page.next_cursor === null) break;
      after = page.next_cursor;
    }
  }

  async stop(): Promise<void> {
    await Promise.allSettled([...this.running]);
  }
}
