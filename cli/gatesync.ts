/**
 * The `gatesync` command: `hub`, `agent`, `keygen`, `demo`. Settings come from the environment and an
 * optional JSON file (`--config FILE` or GATESYNC_CONFIG); see docs/configuration.md.
 */
import { chmodSync, existsSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type AgentConfig, loadAgentConfig } from '../gate-agent/config.ts';
import { startAgent } from '../gate-agent/main.ts';
import { type HubConfig, loadHubConfig } from '../hub/config.ts';
import { startHub } from '../hub/main.ts';
import { loadSettingsSource, logLevel } from '../shared/config.ts';
import { createLogger } from '../shared/logger.ts';
import { generateSigningKey } from '../shared/signing.ts';
import { exitOnStartupError, runUntilSignal } from './lifecycle.ts';

const USAGE = `usage: gatesync <command> [options]

commands:
  hub      [--config FILE]              run the hub (HTTP API, signing, JetStream publisher)
  agent    [--config FILE]              run a gate agent (local store, scanner API, ticket sync)
  keygen   [--kid ID] [--out FILE]      write an Ed25519 signing key and print its public key
  demo     [--tickets N] [--fast]       run the whole flow on an embedded nats-server
  backup   --db AGENT.DB --out FILE     copy a gate agent's SQLite file while it runs, and verify the copy

settings are environment variables (GATESYNC_*), optionally from a JSON file; see docs/configuration.md
`;

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'hub':
    case 'agent': {
      const { values } = parseArgs({ args: rest, options: { config: { type: 'string' } } });
      let logger = createLogger(command === 'hub' ? 'hub' : 'gate-agent', 'info');
      try {
        const source = loadSettingsSource(process.env, values.config);
        logger = createLogger(command === 'hub' ? 'hub' : 'gate-agent', logLevel(source));
        const config = command === 'hub' ? loadHubConfig(source) : loadAgentConfig(source);
        logger.info({ settings: config.describe }, `${command} configuration`);
        if (config.unknownSettings.length > 0) {
          logger.warn({ names: config.unknownSettings }, 'unknown GATESYNC_* settings ignored (misspelled?)');
        }
        const daemon =
          command === 'hub'
            ? await startHub(config as HubConfig, logger)
            : await startAgent(config as AgentConfig, logger);
        runUntilSignal(logger, () => daemon.stop());
      } catch (err: unknown) {
        exitOnStartupError(err, logger);
      }
      return;
    }
    case 'keygen': {
      const { values } = parseArgs({
        args: rest,
        options: {
          kid: { type: 'string', default: `k${new Date().toISOString().slice(0, 10).replaceAll('-', '')}` },
          out: { type: 'string' },
        },
      });
      const key = generateSigningKey(values.kid);
      const json = `${JSON.stringify(key, null, 2)}\n`;
      if (values.out !== undefined) {
        if (existsSync(values.out)) {
          process.stderr.write(`gatesync: ${values.out} exists; refusing to overwrite a signing key\n`);
          process.exit(2);
        }
        writeFileSync(values.out, json, { mode: 0o600, flag: 'wx' });
        chmodSync(values.out, 0o600);
        process.stderr.write(`wrote signing key ${key.kid} to ${values.out} (mode 600)\n`);
      } else {
        process.stdout.write(json);
      }
      process.stderr.write(
        `trust it on gate agents with GATESYNC_TRUSTED_KEYS=${key.kid}:${key.public_key}\n`,
      );
      return;
    }
    case 'demo': {
      const { values } = parseArgs({
        args: rest,
        options: { tickets: { type: 'string', default: '300' }, fast: { type: 'boolean', default: false } },
      });
      const { runDemo } = await import('./demo.ts');
      await runDemo({ tickets: Number(values.tickets), fast: values.fast });
      return;
    }
    case 'backup': {
      const { runBackupCommand } = await import('./backup.ts');
      await runBackupCommand(rest);
      return;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return;
    default:
      process.stderr.write(`gatesync: unknown command "${command}"\n${USAGE}`);
      process.exit(2);
  }
}

await main(process.argv.slice(2));
