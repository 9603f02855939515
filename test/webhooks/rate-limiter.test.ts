import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type BreakerState,
  CircuitBreaker,
  type CircuitBreakerOptions,
  TokenBucket,
  type TokenBucketOptions,
} from '../../hub/webhooks/rate-limiter.ts';

test('a token bucket lets a burst through, then one send per 1/rate', () => {
  const bucket = new TokenBucket({ ratePerSecond: 10, burst: 3 });
  const steps: Array<[now: number, wait: number]> = [
    [0, 0],
    [0, 0],
    [0, 0],
    [0, 100],
    [50, 50],
    [100, 0],
    [100, 100],
    [250, 0], // 1.5 tokens had come back: one taken, half left
    [250, 50],
    [300, 0],
  ];
  for (const [i, [now, wait]] of steps.entries()) assert.equal(bucket.take(now), wait, `step ${i} at ${now}`);
});

test('a slow rate and a long idle period never give more than the burst', () => {
  const slow = new TokenBucket({ ratePerSecond: 0.5, burst: 1 });
  const steps: Array<[now: number, wait: number]> = [
    [0, 0],
    [0, 2000],
    [1000, 1000],
    [2000, 0],
    [1_000_000, 0],
    [1_000_000, 2000],
  ];
  for (const [now, wait] of steps) assert.equal(slow.take(now), wait, `at ${now}`);

  const idle = new TokenBucket({ ratePerSecond: 10, burst: 3 });
  for (let i = 0; i < 3; i++) idle.take(0);
  assert.deepEqual(
    [idle.take(3_600_000), idle.take(3_600_000), idle.take(3_600_000), idle.take(3_600_000)],
    [0, 0, 0, 100],
  );
});

test('a clock that steps back refills nothing', () => {
  const bucket = new TokenBucket({ ratePerSecond: 10, burst: 1 });
  assert.equal(bucket.take(1000), 0);
  assert.equal(bucket.take(500), 100);
  assert.equal(bucket.take(900), 100);
  assert.equal(bucket.take(1100), 0);
});

test('waiting exactly the time take() returns always succeeds, at any rate', () => {
  for (const ratePerSecond of [3, 7, 0.3, 1000 / 3, 1e6]) {
    const bucket = new TokenBucket({ ratePerSecond, burst: 1 });
    let now = 0;
    let sent = 0;
    while (sent < 200) {
      const wait = bucket.take(now);
      if (wait === 0) {
        sent += 1;
        continue;
      }
      now += wait;
      assert.equal(bucket.take(now), 0, `rate ${ratePerSecond} at ${now}`);
      sent += 1;
    }
    // 200 sends took at least 199 token periods (the first was the full bucket).
    assert.ok(now >= (199 * 1000) / ratePerSecond - 1, `rate ${ratePerSecond}: ${now}`);
  }
});

test('over ten seconds a bucket sends burst + rate x 10, no more', () => {
  const bucket = new TokenBucket({ ratePerSecond: 7, burst: 2 });
  let sent = 0;
  for (let now = 0; now <= 10_000; now++) while (bucket.take(now) === 0) sent += 1;
  assert.equal(sent, 2 + 70);
});

test('a token bucket refuses options that cannot work', () => {
  const cases: TokenBucketOptions[] = [
    { ratePerSecond: 0, burst: 1 },
    { ratePerSecond: -1, burst: 1 },
    { ratePerSecond: Number.NaN, burst: 1 },
    { ratePerSecond: Number.POSITIVE_INFINITY, burst: 1 },
    { ratePerSecond: 1, burst: 0 },
    { ratePerSecond: 1, burst: 1.5 },
  ];
  for (const options of cases)
    assert.throws(() => new TokenBucket(options), RangeError, JSON.stringify(options));
});

// ---------------------------------------------------------------------------------------------------------
// Circuit breaker: each scenario is a script of [time, action, expected].

type Step =
  | [now: number, action: 'acquire', wait: number]
  | [now: number, action: 'ok' | 'fail']
  | [now: number, action: 'state', state: BreakerState]
  | [now: number, action: 'opens', count: number];

function run(options: CircuitBreakerOptions, steps: Step[]): void {
  const breaker = new CircuitBreaker(options);
  for (const [i, step] of steps.entries()) {
    const [now, action] = step;
    const where = `step ${i} (${action} at ${now})`;
    switch (step[1]) {
      case 'acquire':
        assert.equal(breaker.acquire(now), step[2], where);
        break;
      case 'ok':
        breaker.recordSuccess(now);
        break;
      case 'fail':
        breaker.recordFailure(now);
        break;
      case 'state':
        assert.equal(breaker.state(now), step[2], where);
        break;
      case 'opens':
        assert.equal(breaker.consecutiveOpens, step[2], where);
        break;
      default: {
        const never: never = step[1];
        throw new Error(`unknown action ${String(never)}`);
      }
    }
  }
}

test('the breaker opens after N consecutive failures, and a success in between resets the count', () => {
  run({ consecutiveFailures: 3, coolDownMs: 1000 }, [
    [0, 'acquire', 0],
    [0, 'fail'],
    [0, 'fail'],
    [0, 'ok'],
    [0, 'fail'],
    [0, 'fail'],
    [0, 'state', 'closed'],
    [10, 'fail'],
    [10, 'state', 'open'],
    [110, 'acquire', 900],
    [1009, 'acquire', 1],
    [1009, 'state', 'open'],
    [1010, 'state', 'half_open'],
  ]);
});

test('half-open lets exactly one probe through; its success closes the breaker', () => {
  run({ consecutiveFailures: 1, coolDownMs: 1000 }, [
    [0, 'fail'],
    [1000, 'acquire', 0], // the probe
    [1000, 'acquire', 1000], // everyone else waits for the probe (its timeout defaults to the cool-down)
    [1500, 'acquire', 500],
    [1600, 'state', 'half_open'],
    [1600, 'ok'],
    [1600, 'state', 'closed'],
    [1600, 'acquire', 0],
    [1600, 'acquire', 0],
  ]);
});

test('a failed probe re-opens with the cool-down doubled, up to the cap; a success resets it', () => {
  run({ consecutiveFailures: 1, coolDownMs: 1000, maxCoolDownMs: 3000 }, [
    [0, 'fail'],
    [0, 'opens', 0],
    [1000, 'acquire', 0],
    [1000, 'fail'],
    [1000, 'opens', 1],
    [2999, 'acquire', 1],
    [3000, 'acquire', 0],
    [3000, 'fail'],
    [3000, 'opens', 2],
    [3000, 'acquire', 3000], // 4000 capped at 3000
    [6000, 'acquire', 0],
    [6000, 'fail'],
    [6000, 'opens', 3],
    [8999, 'acquire', 1],
    [9000, 'acquire', 0],
    [9000, 'ok'],
    [9000, 'opens', 0],
    [9000, 'state', 'closed'],
    [9500, 'fail'],
    [9500, 'acquire', 1000], // back to the first cool-down
  ]);
});

test('a probe whose result never comes back (a worker died) is replaced after the probe timeout', () => {
  run({ consecutiveFailures: 1, coolDownMs: 1000, probeTimeoutMs: 5000 }, [
    [0, 'fail'],
    [1000, 'acquire', 0],
    [2000, 'acquire', 4000],
    [5999, 'acquire', 1],
    [6000, 'acquire', 0],
    [6000, 'acquire', 5000],
  ]);
});

test('results of sends that started before the breaker opened change nothing while it is open', () => {
  run({ consecutiveFailures: 2, coolDownMs: 1000 }, [
    [0, 'fail'],
    [0, 'fail'],
    [500, 'ok'],
    [500, 'state', 'open'],
    [900, 'fail'],
    [900, 'acquire', 100], // not extended by the late failure
    [1000, 'acquire', 0],
  ]);
});

test('the breaker opens on the failure ratio once the window holds enough results', () => {
  const ratio: CircuitBreakerOptions = {
    consecutiveFailures: 100,
    failureRatio: { ratio: 0.5, minResults: 10, windowMs: 10_000 },
    coolDownMs: 1000,
  };
  // Alternating: 4 failures in 9 results, then a 5th failure makes 5 in 10 = 50 %.
  run(ratio, [
    [0, 'ok'],
    [1, 'fail'],
    [2, 'ok'],
    [3, 'fail'],
    [4, 'ok'],
    [5, 'fail'],
    [6, 'ok'],
    [7, 'fail'],
    [8, 'ok'],
    [8, 'state', 'closed'],
    [9, 'fail'],
    [9, 'state', 'open'],
  ]);
  // 4 failures in 10 results stays closed.
  run(ratio, [
    ...Array.from({ length: 6 }, (_, i): Step => [i, 'ok']),
    ...Array.from({ length: 4 }, (_, i): Step => [10 + i, 'fail']),
    [20, 'state', 'closed'],
  ]);
  // Old results leave the window: 9 failures long ago and one now are not 10 results.
  run(ratio, [
    ...Array.from({ length: 9 }, (_, i): Step => [i, i % 3 === 0 ? 'ok' : 'fail']),
    [25_000, 'fail'],
    [25_000, 'state', 'closed'],
  ]);
});

test('the snapshot reports state, counts and when an open breaker lets a probe go', () => {
  const breaker = new CircuitBreaker({
    consecutiveFailures: 2,
    failureRatio: { ratio: 0.9, minResults: 100, windowMs: 60_000 },
    coolDownMs: 30_000,
  });
  breaker.recordSuccess(0);
  breaker.recordFailure(1000);
  assert.deepEqual(breaker.snapshot(1000), {
    state: 'closed',
    consecutiveFailures: 1,
    consecutiveOpens: 0,
    openUntil: undefined,
    windowResults: 2,
    windowFailures: 1,
  });
  breaker.recordFailure(2000);
  assert.deepEqual(breaker.snapshot(2000), {
    state: 'open',
    consecutiveFailures: 2,
    consecutiveOpens: 0,
    openUntil: 32_000,
    windowResults: 3,
    windowFailures: 2,
  });
  assert.equal(breaker.snapshot(32_000).state, 'half_open');
});

test('a circuit breaker refuses options that cannot work', () => {
  const ok: CircuitBreakerOptions = { consecutiveFailures: 5, coolDownMs: 1000 };
  const cases: CircuitBreakerOptions[] = [
    { ...ok, consecutiveFailures: 0 },
    { ...ok, consecutiveFailures: 2.5 },
    { ...ok, coolDownMs: 0 },
    { ...ok, coolDownMs: Number.NaN },
    { ...ok, maxCoolDownMs: 500 },
    { ...ok, probeTimeoutMs: 0 },
    { ...ok, failureRatio: { ratio: 0, minResults: 10, windowMs: 1000 } },
    { ...ok, failureRatio: { ratio: 1.5, minResults: 10, windowMs: 1000 } },
    { ...ok, failureRatio: { ratio: 0.5, minResults: 0, windowMs: 1000 } },
    { ...ok, failureRatio: { ratio: 0.5, minResults: 10, windowMs: 0 } },
  ];
  for (const options of cases)
    assert.throws(() => new CircuitBreaker(options), RangeError, JSON.stringify(options));
});
