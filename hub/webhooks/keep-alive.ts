/**
 * Messages held past part of their ack wait tell the server they are alive (`working()`), so it does not
 * hand them to another hub process meanwhile. Used for a worker's deliveries in flight and a source's
 * events in progress: one sweep timer each, not a timer per message.
 */

/** A message held this long is marked working (ack_wait is at least 10 s for deliveries, 30 s for events). */
export const KEEP_ALIVE_MS = 4_000;
/** Milliseconds between sweeps. */
export const KEEP_ALIVE_SWEEP_MS = 1_000;

/** Marks working every message held (or last marked) KEEP_ALIVE_MS ago or more, and restarts its clock. */
export function keepHeldAlive(held: Map<{ working(): void }, number>, now = Date.now()): void {
  for (const [m, since] of held) {
    if (now - since < KEEP_ALIVE_MS) continue;
    m.working();
    held.set(m, now);
  }
}
