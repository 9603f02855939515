/**
 * A gate agent in a process of its own, for the benchmarks: its HTTP server gets an event loop that no
 * load generator competes for. Configured from GATESYNC_* variables like `gatesync agent` (agent
 * defaults apply to everything not set), driven over the IPC channel:
 *
 *   child -> parent  { type: 'ready', url, pid, start_ms } once the scanner API listens
 *   parent -> child  { type: 'wait_seq', seq }             answer 'caught_up' when the store holds the
 *   child -> parent  { type: 'caught_up', seq, ms }        stream position `seq`; ms since startAgent()
 *   parent -> child  { type: 'usage' }                     answer 'usage' with this process's peak RSS
 *   parent -> child  { type: 'stop' }                      stop the agent, answer 'stopped', exit
 *
 * The position is read from the store the agent writes (a primary-key lookup, microseconds), so waiting
 * for it costs the agent nothing measurable, unlike polling /v1/status, which counts every ticket.
 */
import { loadAgentConfig } from '../../gate-agent/config.ts';
import { type AgentHandle, startAgent } from '../../gate-agent/main.ts';
import { createLogger } from '../../shared/logger.ts';
import { STREAMS } from '../../shared/subjects.ts';

type ParentMessage = { type: 'wait_seq'; seq: number } | { type: 'usage' } | { type: 'stop' };

const send = (m: Record<string, unknown>) => process.send?.(m);

const logger = createLogger('bench-agent', process.env.BENCH_LOG_LEVEL ?? 'error');
const config = loadAgentConfig(process.env);
const started = performance.now();
const agent: AgentHandle = await startAgent(config, logger);
send({ type: 'ready', url: agent.url, pid: process.pid, start_ms: performance.now() - started });

let stopping = false;
async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  try {
    await agent.stop();
  } finally {
    send({ type: 'stopped' });
    process.exit(code);
  }
}

process.on('message', (raw: unknown) => {
  const m = raw as ParentMessage;
  switch (m.type) {
    case 'wait_seq': {
      const poll = () => {
        const pos = agent.store.syncPosition(STREAMS.tickets).lastSeq;
        if (pos >= m.seq) send({ type: 'caught_up', seq: pos, ms: performance.now() - started });
        else setTimeout(poll, 10); // milliseconds
      };
      poll();
      break;
    }
    case 'usage': {
      const usage = process.resourceUsage();
      send({ type: 'usage', max_rss_bytes: usage.maxRSS * 1024, rss_bytes: process.memoryUsage().rss });
      break;
    }
    case 'stop':
      void stop(0);
      break;
    default: {
      const never: never = m;
      throw new Error(`unknown message ${JSON.stringify(never)}`);
    }
  }
});
// The parent is gone (crashed or killed): do not outlive it.
process.on('disconnect', () => void stop(1));
process.on('SIGTERM', () => void stop(0));
