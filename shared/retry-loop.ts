/**
 * A background reader that runs one round after another (one fetch, one consume) until stopped, and
 * pauses with exponential backoff (250 ms doubling to 5 s) after a round that failed. Stopping interrupts
 * both the pause and the round in progress, so a stop never waits out a backoff or a fetch's expiry.
 * Used by the agent's ticket sync and venue check-in reader and by the hub's check-in consumer.
 */
import { errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';
import { Pause } from './sleep.ts';

/** What a round iterates over; `stop()` ends it early. */
export interface Stoppable {
  stop(): void;
}

export interface RetryLoopOptions {
  logger: Logger;
  /** Names the reader in log lines: "<what> failed; retrying". */
  what: string;
  round: () => Promise<void>;
  /** Called after a failed round, before the pause. */
  onError?: (err: unknown) => void;
}

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 5_000;

export class RetryLoop {
  private stopped = false;
  private readonly pause = new Pause();
  private current: Stoppable | undefined;
  private loop: Promise<void> | undefined;
  /** The last round's failure, until a round succeeds. */
  lastError: string | undefined;

  constructor(private readonly opts: RetryLoopOptions) {}

  get stopping(): boolean {
    return this.stopped;
  }

  /** Records the iterator of the round in progress, so that stop() (or interrupt()) can end it. */
  track(round: Stoppable | undefined): void {
    this.current = round;
    // A stop that came while the round was still opening its iterator found nothing to end; end it now,
    // or a consume() (which never ends by itself) would keep the loop, and the stop, waiting forever.
    if (this.stopped) round?.stop();
  }

  /** Ends the round in progress; the loop starts the next one. */
  interrupt(): void {
    this.current?.stop();
  }

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pause.interrupt();
    this.current?.stop();
    await this.loop;
  }

  private async run(): Promise<void> {
    let backoff = MIN_BACKOFF_MS;
    while (!this.stopped) {
      try {
        await this.opts.round();
        this.current = undefined;
        this.lastError = undefined;
        backoff = MIN_BACKOFF_MS;
      } catch (err: unknown) {
        this.current = undefined;
        if (this.stopped) break;
        this.opts.onError?.(err);
        this.lastError = errorMessage(err);
        this.opts.logger.warn(
          { err: this.lastError, backoffMs: backoff },
          `${this.opts.what} failed; retrying`,
        );
        await this.pause.sleep(backoff);
        backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      }
    }
  }
}
