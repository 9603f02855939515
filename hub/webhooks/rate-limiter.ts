/**
 * Per-endpoint pacing for webhook delivery: a token bucket (how fast we may send) and a circuit breaker
 * (whether sending is worth it at all). Both are pure state machines over an injected clock
 * (`now`, milliseconds), so tests drive time by hand and a worker can keep one of each per endpoint.
 *
 * Why: one slow or dead receiver must cost the hub nothing and must not be hammered. The bucket keeps a
 * healthy receiver below the rate it asked for (Convoy and Outpost rate-limit per endpoint); the breaker
 * stops sending to a failing one after a few failures instead of spending every queued message's retry
 * budget on it, and lets one probe through now and then to notice it is back.
 *
 * Token bucket: `burst` tokens, refilled continuously at `ratePerSecond`; a send takes one. `take(now)`
 * returns 0 and takes a token, or returns how many milliseconds until a token is there (taking nothing).
 * Time that runs backwards (a clock step) refills nothing.
 *
 * Circuit breaker states and transitions:
 *
 *   closed    --(N consecutive failures, or failure ratio >= R over >= M results in the last W ms)--> open
 *   open      --(cool-down elapsed: the next acquire)---------------------------------------------> half_open
 *   half_open --(acquire: exactly one probe goes; others wait)
 *   half_open --(probe succeeds)--> closed (counts reset)
 *   half_open --(probe fails)-----> open, with the cool-down doubled (up to maxCoolDownMs)
 *   half_open --(probe result never reported within probeTimeoutMs: a worker died)--> another probe may go
 *
 * `acquire(now)` returns 0 when a send may go (and, in half-open, marks the probe as taken), or the
 * milliseconds to wait. Results reported while open are ignored (they are sends that started before the
 * breaker opened). In half-open the first result reported decides, probe or not: a late failure re-opens,
 * which errs on the side of sending less. `consecutiveOpens` counts failed probes in a row, so the worker
 * can disable an endpoint that stays dead (Convoy's consecutive failure threshold).
 */

export interface TokenBucketOptions {
  /** Sustained sends per second (may be fractional: 0.5 = one every 2 s). */
  ratePerSecond: number;
  /** Most sends at once after a quiet period; at least 1. */
  burst: number;
}

export class TokenBucket {
  readonly ratePerSecond: number;
  readonly burst: number;
  private tokens: number;
  private last: number | undefined;

  constructor({ ratePerSecond, burst }: TokenBucketOptions) {
    if (!Number.isFinite(ratePerSecond) || ratePerSecond <= 0) {
      throw new RangeError(`ratePerSecond must be a positive number, got ${ratePerSecond}`);
    }
    if (!Number.isInteger(burst) || burst < 1) {
      throw new RangeError(`burst must be a whole number of at least 1, got ${burst}`);
    }
    this.ratePerSecond = ratePerSecond;
    this.burst = burst;
    this.tokens = burst; // a new endpoint starts with a full bucket
  }

  private refill(now: number): void {
    if (this.last === undefined) {
      this.last = now;
      return;
    }
    const elapsed = now - this.last;
    if (elapsed <= 0) return; // the clock stood still or went back: no new tokens, keep the later mark
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
    this.last = now;
  }

  /** 0 if a send may go now (a token is taken), else milliseconds until one may (nothing is taken). */
  take(now: number): number {
    this.refill(now);
    // A hair of tolerance so that waiting exactly the returned time always succeeds despite rounding.
    if (this.tokens >= 1 - 1e-9) {
      this.tokens = Math.max(0, this.tokens - 1);
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSecond);
  }

  /** Tokens available at `now` (for metrics and tests); takes nothing. */
  available(now: number): number {
    this.refill(now);
    return this.tokens;
  }
}

export type BreakerState = 'closed' | 'open' | 'half_open';

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker. */
  consecutiveFailures: number;
  /** Optional: open when failures / results >= ratio over the last windowMs, once there are minResults. */
  failureRatio?: { ratio: number; minResults: number; windowMs: number };
  /** How long the breaker stays open before one probe may go (milliseconds). */
  coolDownMs: number;
  /** Cap for the cool-down, which doubles after each failed probe. Default: coolDownMs (no growth). */
  maxCoolDownMs?: number;
  /** A probe whose result is not reported within this time is taken to be lost. Default: coolDownMs. */
  probeTimeoutMs?: number;
}

export interface BreakerSnapshot {
  state: BreakerState;
  consecutiveFailures: number;
  /** Failed probes in a row since the breaker last closed. */
  consecutiveOpens: number;
  /** When an open breaker lets a probe go (milliseconds), if open. */
  openUntil: number | undefined;
  windowResults: number;
  windowFailures: number;
}

/** The ratio window is kept as 10 buckets, so memory stays constant however busy the endpoint is. */
const WINDOW_BUCKETS = 10;

interface Bucket {
  start: number;
  results: number;
  failures: number;
}

export class CircuitBreaker {
  private readonly opts: Required<Omit<CircuitBreakerOptions, 'failureRatio'>> &
    Pick<CircuitBreakerOptions, 'failureRatio'>;
  private mode: BreakerState = 'closed';
  private failuresInARow = 0;
  private opens = 0;
  private openedAt = 0;
  private coolDown: number;
  private probeTakenAt: number | undefined;
  private buckets: Bucket[] = [];

  constructor(options: CircuitBreakerOptions) {
    const { consecutiveFailures, failureRatio, coolDownMs } = options;
    if (!Number.isInteger(consecutiveFailures) || consecutiveFailures < 1) {
      throw new RangeError(
        `consecutiveFailures must be a whole number of at least 1, got ${consecutiveFailures}`,
      );
    }
    if (!Number.isFinite(coolDownMs) || coolDownMs <= 0) {
      throw new RangeError(`coolDownMs must be a positive number of milliseconds, got ${coolDownMs}`);
    }
    if (failureRatio !== undefined) {
      const { ratio, minResults, windowMs } = failureRatio;
      if (!(ratio > 0 && ratio <= 1))
        throw new RangeError(`failureRatio.ratio must be in (0, 1], got ${ratio}`);
      if (!Number.isInteger(minResults) || minResults < 1) {
        throw new RangeError(
          `failureRatio.minResults must be a whole number of at least 1, got ${minResults}`,
        );
      }
      if (!Number.isFinite(windowMs) || windowMs <= 0) {
        throw new RangeError(`failureRatio.windowMs must be a positive number, got ${windowMs}`);
      }
    }
    const maxCoolDownMs = options.maxCoolDownMs ?? coolDownMs;
    if (!(maxCoolDownMs >= coolDownMs)) {
      throw new RangeError(`maxCoolDownMs must be at least coolDownMs (${coolDownMs}), got ${maxCoolDownMs}`);
    }
    const probeTimeoutMs = options.probeTimeoutMs ?? coolDownMs;
    if (!Number.isFinite(probeTimeoutMs) || probeTimeoutMs <= 0) {
      throw new RangeError(`probeTimeoutMs must be a positive number, got ${probeTimeoutMs}`);
    }
    this.opts = { consecutiveFailures, failureRatio, coolDownMs, maxCoolDownMs, probeTimeoutMs };
    this.coolDown = coolDownMs;
  }

  /** The state at `now`: an open breaker whose cool-down has passed reads as half_open. */
  state(now: number): BreakerState {
    if (this.mode === 'open' && now >= this.openedAt + this.coolDown) return 'half_open';
    return this.mode;
  }

  /** 0 if a send may go now, else milliseconds to wait. In half-open, a 0 means "you are the probe". */
  acquire(now: number): number {
    if (this.mode === 'open') {
      const until = this.openedAt + this.coolDown;
      if (now < until) return until - now;
      this.mode = 'half_open';
      this.probeTakenAt = undefined;
    }
    if (this.mode === 'half_open') {
      if (this.probeTakenAt !== undefined && now < this.probeTakenAt + this.opts.probeTimeoutMs) {
        return this.probeTakenAt + this.opts.probeTimeoutMs - now;
      }
      this.probeTakenAt = now;
      return 0;
    }
    return 0;
  }

  recordSuccess(now: number): void {
    if (this.mode === 'open') return;
    if (this.mode === 'half_open') {
      this.close();
      return;
    }
    this.failuresInARow = 0;
    this.count(now, false);
  }

  recordFailure(now: number): void {
    if (this.mode === 'open') return;
    if (this.mode === 'half_open') {
      this.opens += 1;
      this.coolDown = Math.min(this.coolDown * 2, this.opts.maxCoolDownMs);
      this.open(now);
      return;
    }
    this.failuresInARow += 1;
    this.count(now, true);
    if (this.failuresInARow >= this.opts.consecutiveFailures || this.ratioExceeded(now)) {
      this.open(now);
    }
  }

  snapshot(now: number): BreakerSnapshot {
    const { results, failures } = this.windowTotals(now);
    const state = this.state(now);
    return {
      state,
      consecutiveFailures: this.failuresInARow,
      consecutiveOpens: this.opens,
      openUntil: state === 'open' ? this.openedAt + this.coolDown : undefined,
      windowResults: results,
      windowFailures: failures,
    };
  }

  /** Failed probes in a row since the breaker last closed. */
  get consecutiveOpens(): number {
    return this.opens;
  }

  private open(now: number): void {
    this.mode = 'open';
    this.openedAt = now;
    this.probeTakenAt = undefined;
  }

  private close(): void {
    this.mode = 'closed';
    this.failuresInARow = 0;
    this.opens = 0;
    this.coolDown = this.opts.coolDownMs;
    this.probeTakenAt = undefined;
    this.buckets = [];
  }

  private count(now: number, failed: boolean): void {
    const ratio = this.opts.failureRatio;
    if (ratio === undefined) return;
    const width = ratio.windowMs / WINDOW_BUCKETS;
    const start = Math.floor(now / width) * width;
    this.prune(now);
    let bucket = this.buckets[this.buckets.length - 1];
    if (bucket === undefined || bucket.start !== start) {
      bucket = { start, results: 0, failures: 0 };
      this.buckets.push(bucket);
    }
    bucket.results += 1;
    if (failed) bucket.failures += 1;
  }

  private prune(now: number): void {
    const ratio = this.opts.failureRatio;
    if (ratio === undefined) return;
    const width = ratio.windowMs / WINDOW_BUCKETS;
    // A bucket counts while any part of it lies inside (now - windowMs, now].
    this.buckets = this.buckets.filter((b) => b.start + width > now - ratio.windowMs);
  }

  private windowTotals(now: number): { results: number; failures: number } {
    this.prune(now);
    let results = 0;
    let failures = 0;
    for (const b of this.buckets) {
      results += b.results;
      failures += b.failures;
    }
    return { results, failures };
  }

  private ratioExceeded(now: number): boolean {
    const ratio = this.opts.failureRatio;
    if (ratio === undefined) return false;
    const { results, failures } = this.windowTotals(now);
    return results >= ratio.minResults && failures / results >= ratio.ratio;
  }
}
