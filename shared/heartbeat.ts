/** What an agent writes to the GS_AGENTS bucket every few seconds, read by every hub process. */
export interface Heartbeat {
  venue: string;
  agent: string;
  gate: string;
  connected: boolean;
  /** Milliseconds since the epoch, agent clock. */
  sent_at: number;
  last_event_seq: number;
  last_event_at: number | null;
  tickets_held: number;
  outbox_depth: number;
  oldest_unsent_at: number | null;
  checkins_total: number;
}

/** Milliseconds between heartbeats; the hub calls an agent offline after three are missed. */
export const HEARTBEAT_INTERVAL_MS = 5_000;
