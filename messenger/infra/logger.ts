import pino, { type Logger } from 'pino';
import type { LogLevel } from '../config';

export type { Logger };

/** Paths never written to the log, whatever logs them. */
export const REDACT_PATHS = [
  'req.headers.authorization',
  'headers.authorization',
  'authorization',
  'password',
  '*.password',
  'session_id',
  '*.session_id',
  'sessionId',
  '*.sessionId',
  'token',
  '*.token',
];

function prettyAvailable(): boolean {
  try {
    require.resolve('pino-pretty');
    return true;
  } catch {
    return false;
  }
}

/** JSON logs to stdout; human-readable ones only when stdout is a terminal. */
export function createLogger(level: LogLevel, name = 'messenger'): Logger {
  const pretty = process.stdout.isTTY === true && prettyAvailable();
  return pino({
    name,
    level,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { colorize: true } } } : {}),
  });
}
