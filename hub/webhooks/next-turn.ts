/**
 * Work deferred to the next turn of the event loop, run together. nats.js writes its buffer to the socket
 * once per run of microtasks, and each attempt or source message finishes on a socket read of its own, so
 * acks and log lines published at once cost a write system call each (a fifth of the hub's busy time in a
 * profile of bench:webhooks). Deferred to setImmediate, those of everything that finished in the same poll
 * phase leave in one write. Functions run in the order they were deferred.
 */
const queued: (() => void)[] = [];

export function inNextTurn(fn: () => void): void {
  if (queued.length === 0) setImmediate(runQueued);
  queued.push(fn);
}

function runQueued(): void {
  for (const fn of queued.splice(0)) fn();
}
