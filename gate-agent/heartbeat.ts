/**
 * Every few seconds the agent tells the hub it is alive and how it is doing, by writing its entry in the
 * GS_AGENTS KV bucket (a JetStream publish to `$KV.GS_AGENTS.<venue>.<agent>`). Every hub process reads the
 * bucket, so "is this gate online" never depends on which hub the agent last talked to.
 */
import type { JetStreamClient } from '@nats-io/jetstream';
import { errorMessage } from '../shared/errors.ts';
import { HEARTBEAT_INTERVAL_MS, type Heartbeat } from '../shared/heartbeat.ts';
import type { Logger } from '../shared/logger.ts';
import type { LinkState } from '../shared/nats.ts';
import { subjects } from '../shared/subjects.ts';

export class HeartbeatPublisher {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly opts: {
      js: JetStreamClient;
      link: LinkState;
      logger: Logger;
      venue: string;
      agent: string;
      build: () => Heartbeat;
      intervalMs?: number;
    },
  ) {}

  start(): void {
    void this.beat();
    // Tell the hub at once when the link returns, not at the next tick (up to 5 s later).
    this.opts.link.onChange((connected) => {
      if (connected) void this.beat();
    });
    this.timer = setInterval(() => void this.beat(), this.opts.intervalMs ?? HEARTBEAT_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
  }

  async beat(): Promise<void> {
    if (!this.opts.link.connected) return;
    try {
      await this.opts.js.publish(
        subjects.heartbeat(this.opts.venue, this.opts.agent),
        JSON.stringify(this.opts.build()),
        { timeout: 2_000 },
      );
    } catch (err: unknown) {
      this.opts.logger.debug({ err: errorMessage(err) }, 'heartbeat not sent');
    }
  }
}
