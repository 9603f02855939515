/**
 * `gatesync backup --db <agent.db> --out <file>`: a consistent copy of a gate agent's SQLite file, taken
 * while the agent runs, and checked before it is kept.
 *
 * How the copy stays consistent: the source is opened read-only and one read transaction is held on it for
 * the whole copy. In WAL mode a reader sees the database as of the moment its transaction began and never
 * blocks the agent's writes, so SQLite's online backup API (better-sqlite3's `db.backup()`, which steps
 * `sqlite3_backup_step` on that same connection) copies exactly that snapshot, page by page, while the
 * agent keeps committing scans. The rows counted inside the same transaction must then be found in the
 * copy: the check proves the copy is the snapshot, not just some valid database.
 *
 * Why not `cp`: the agent's data lives in two files, `agent.db` and `agent.db-wal` (recent commits that
 * are not yet checkpointed into the main file). A `cp` of a running agent copies them at different moments,
 * or copies only the main file and leaves out the newest check-ins; either copy may be torn.
 *
 * Steps: copy to `<out>.partial` (mode 600: the file holds ticket holders' names), switch the copy to
 * `journal_mode=DELETE` so it is one self-contained file, run `PRAGMA integrity_check`, compare the schema
 * version and row counts with the snapshot, fsync, rename over `<out>`, fsync the folder. A failed backup
 * leaves `<out>` as it was. One summary line goes to stdout; errors are one line on stderr.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { errorMessage } from '../shared/errors.ts';

export const BACKUP_USAGE = 'usage: gatesync backup --db <agent.db> --out <file>';

/** What the copy holds; compared between the source snapshot and the copy. */
export interface BackupCounts {
  schemaVersion: number;
  tickets: number;
  checkins: number;
  checkinsUnsent: number;
  /** Highest check-in seq: with `checkins` it shows the outbox rows have no hole. */
  maxCheckinSeq: number;
  presence: number;
  /** Position in GS_TICKETS the store has applied. */
  ticketStreamSeq: number;
}

export interface BackupResult {
  out: string;
  counts: BackupCounts;
  bytes: number;
  ms: number;
}

/** A usage or input problem (exit 2), as opposed to a failed copy (exit 1). */
export class BackupUsageError extends Error {}

const AGENT_TABLES = ['tickets', 'checkins', 'presence', 'sync_state'];

function count(db: Database.Database, sql: string): number {
  const row = db.prepare<[], { n: number | null }>(sql).get();
  return row?.n ?? 0;
}

function readCounts(db: Database.Database): BackupCounts {
  const schemaVersion = db.pragma('user_version', { simple: true }) as number;
  return {
    schemaVersion,
    tickets: count(db, 'SELECT count(*) AS n FROM tickets'),
    checkins: count(db, 'SELECT count(*) AS n FROM checkins'),
    // Schema 3 keeps one sent watermark; a store an older agent left (backed up before upgrading) has
    // a sent_at per row.
    checkinsUnsent: count(
      db,
      schemaVersion >= 3
        ? 'SELECT count(*) AS n FROM checkins WHERE seq > (SELECT sent_through FROM outbox_state)'
        : 'SELECT count(*) AS n FROM checkins WHERE sent_at IS NULL',
    ),
    maxCheckinSeq: count(db, 'SELECT max(seq) AS n FROM checkins'),
    presence: count(db, 'SELECT count(*) AS n FROM presence'),
    ticketStreamSeq: count(db, "SELECT last_seq AS n FROM sync_state WHERE stream = 'GS_TICKETS'"),
  };
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function removeCopy(path: string): void {
  for (const suffix of ['', '-journal', '-wal', '-shm']) rmSync(`${path}${suffix}`, { force: true });
}

/** Copies the agent database at `dbPath` to `outPath` and verifies the copy; throws on any problem. */
export async function backupAgentDb(dbPath: string, outPath: string): Promise<BackupResult> {
  const started = performance.now();
  const src = resolve(dbPath);
  const out = resolve(outPath);
  if (src === out) throw new BackupUsageError('--out must not be the agent database itself');
  let source: Database.Database;
  try {
    source = new Database(src, { readonly: true, fileMustExist: true });
  } catch (err: unknown) {
    throw new BackupUsageError(`cannot open ${src}: ${errorMessage(err)}`);
  }
  const partial = `${out}.partial`;
  let snapshot: BackupCounts;
  try {
    // The agent holds its write lock only for a group commit (milliseconds); wait through one.
    source.pragma('busy_timeout = 5000');
    const tables = new Set(
      source
        .prepare<[], { name: string }>("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .all()
        .map((r) => r.name),
    );
    const missing = AGENT_TABLES.filter((t) => !tables.has(t));
    if (missing.length > 0) {
      throw new BackupUsageError(`${src} is not a gatesync agent database (no table ${missing.join(', ')})`);
    }
    mkdirSync(dirname(out), { recursive: true, mode: 0o700 });
    removeCopy(partial);
    // Created empty with mode 600 so the copy is never readable by others, even for a moment.
    closeSync(openSync(partial, 'wx', 0o600));
    // The snapshot: everything below (counts and every page copied) sees the database as of this BEGIN's
    // first read, whatever the agent commits meanwhile.
    source.exec('BEGIN');
    try {
      snapshot = readCounts(source);
      // Large steps: fewer hops through the event loop; the read transaction keeps each step consistent.
      await source.backup(partial, { progress: () => 4096 });
    } finally {
      source.exec('COMMIT');
    }
  } catch (err: unknown) {
    source.close();
    removeCopy(partial);
    throw err;
  }
  source.close();

  try {
    const copy = new Database(partial, { fileMustExist: true });
    try {
      // One file, no -wal beside it: the copy can be moved, archived and restored as it is.
      copy.pragma('journal_mode = DELETE');
      const check = copy.pragma('integrity_check') as { integrity_check: string }[];
      const problems = check.map((r) => r.integrity_check).filter((r) => r !== 'ok');
      if (problems.length > 0) {
        throw new Error(`integrity_check of the copy failed: ${problems.slice(0, 5).join('; ')}`);
      }
      const got = readCounts(copy);
      for (const key of Object.keys(snapshot) as (keyof BackupCounts)[]) {
        if (got[key] !== snapshot[key]) {
          throw new Error(`the copy has ${key} = ${got[key]} but the snapshot had ${snapshot[key]}`);
        }
      }
    } finally {
      copy.close();
    }
    fsyncPath(partial);
    renameSync(partial, out);
    fsyncPath(dirname(out));
  } catch (err: unknown) {
    removeCopy(partial);
    throw err;
  }
  return {
    out,
    counts: snapshot,
    bytes: statSync(out).size,
    ms: performance.now() - started,
  };
}

/** The one line `gatesync backup` prints. */
export function summaryLine(r: BackupResult): string {
  const c = r.counts;
  const mib = (r.bytes / (1024 * 1024)).toFixed(1);
  return (
    `gatesync backup: ${r.out} written and verified in ${(r.ms / 1000).toFixed(2)} s: ` +
    `${c.tickets} tickets, ${c.checkins} check-ins (${c.checkinsUnsent} unsent), ` +
    `ticket stream position ${c.ticketStreamSeq}, schema v${c.schemaVersion}, ${mib} MiB, integrity ok`
  );
}

/** `gatesync backup ...`: exit 0 with the summary line, 2 for a usage problem, 1 for a failed copy. */
export async function runBackupCommand(args: string[]): Promise<void> {
  let db: string | undefined;
  let out: string | undefined;
  try {
    const { values } = parseArgs({ args, options: { db: { type: 'string' }, out: { type: 'string' } } });
    db = values.db;
    out = values.out;
  } catch (err: unknown) {
    process.stderr.write(`gatesync: ${errorMessage(err)}\n${BACKUP_USAGE}\n`);
    process.exit(2);
  }
  if (db === undefined || out === undefined || db === '' || out === '') {
    process.stderr.write(`gatesync: backup needs --db and --out\n${BACKUP_USAGE}\n`);
    process.exit(2);
  }
  try {
    const result = await backupAgentDb(db, out);
    process.stdout.write(`${summaryLine(result)}\n`);
  } catch (err: unknown) {
    process.stderr.write(`gatesync: backup failed: ${errorMessage(err)}\n`);
    process.exit(err instanceof BackupUsageError ? 2 : 1);
  }
}
