/**
 * Work deferred to the next turn of the event loop, run together. nats.js writes its buffer to the socket
 * once per run of microtasks, and each attempt or source message finishes on a socket read of its own, so
 * acks and log lines published at once cost a write system call each (a fifth of the hub's busy time in a
 * profile of bench:webhooks). Deferred to setImmediate, those of everything that finished in the same poll
 * phase leave in one write. Functions run in the order they were deferred.
 */
type Deferred = (() => void) | { ack(): void };
let queued: Deferred[] = [];

export function inNextTurn(fn: () => void): void {
  if (queued.length === 0) setImmediate(runQueued);
  queued.push(fn);
}

/** `m.ack()` in the next turn, in order with what `inNextTurn` deferred (no closure per message). */
export function ackInNextTurn(m: { ack(): void }): void {
  if (queued.length === 0) setImmediate(runQueued);
  queued.push(m);
}

function runQueued(): void {
  const run = queued;
  queued = [];
  for (const d of run) {
    if (typeof d === 'function') d();
    else d.ack();
  }
}
