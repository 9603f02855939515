/**
 * Process lifecycle for the daemons: SIGTERM or SIGINT drains gracefully within a hard timeout; a second
 * SIGINT exits at once. A configuration error is one line on stderr and exit code 2.
 */
import { GatesyncError } from '../shared/errors.ts';
import type { Logger } from '../shared/logger.ts';

/** Milliseconds a graceful stop may take before the process exits anyway. */
export const STOP_TIMEOUT_MS = 10_000;

export function runUntilSignal(logger: Logger, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      if (signal === 'SIGINT') {
        logger.warn('second SIGINT: exiting now');
        process.exit(130);
      }
      return;
    }
    stopping = true;
    logger.info({ signal }, 'stopping');
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: STOP_TIMEOUT_MS }, 'graceful stop timed out; exiting');
      process.exit(1);
    }, STOP_TIMEOUT_MS);
    timer.unref();
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'error while stopping');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

export function exitOnStartupError(err: unknown, logger: Logger): never {
  if (err instanceof GatesyncError && (err.code === 'config_invalid' || err.code === 'nats_server_missing')) {
    process.stderr.write(`gatesync: ${err.message}\n`);
    process.exit(2);
  }
  logger.fatal({ err }, 'failed to start');
  process.exit(1);
}
