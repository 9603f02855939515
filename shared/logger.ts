/**
 * The pino logger both daemons use. Redaction is configured here once, so a secret in any of the usual
 * places (auth headers, tokens, keys, passwords) never reaches a log line.
 */
import { type Logger, pino } from 'pino';

export type { Logger } from 'pino';

export const REDACT_PATHS = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
  '*.authorization',
  'token',
  '*.token',
  '*.tokens',
  'secret',
  '*.secret',
  '*.secrets',
  'password',
  '*.password',
  'pass',
  '*.pass',
  'private_key',
  '*.private_key',
  'privateKey',
  '*.privateKey',
  'apiKey',
  '*.apiKey',
  'api_key',
  '*.api_key',
];

export function createLogger(name: string, level = process.env.GATESYNC_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  });
}
