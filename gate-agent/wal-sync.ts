/**
 * Group commit with the fsync off the event loop.
 *
 * The store runs with synchronous=NORMAL: a commit appends its frames to the WAL file with write() and
 * returns without an fsync. Before a scan's answer is sent, ScanService calls `sync()`, which fsyncs the
 * WAL file on libuv's thread pool. When it resolves, every frame written before the call (that commit and
 * any earlier) is on disk: the same guarantee synchronous=FULL gives, but the main thread keeps parsing
 * and deciding the next group while the disk works, instead of blocking in the fsync (a profile showed
 * the blocking fsync taking a fifth of the scan path's main thread).
 *
 * Calls that arrive while an fsync is running share the next one, so at most two are ever outstanding
 * and bursts are covered by one fsync each. The WAL file is opened once and kept (see `file()`); its
 * identity used to be checked with a stat before every fsync (1.5% of the scan path), which could only
 * ever have pointed the sync at a file SQLite does not write to.
 */
import { closeSync, fdatasync, fsyncSync, openSync } from 'node:fs';
import { dirname } from 'node:path';

export class WalSync {
  private fd: number | undefined;
  private running: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  /** fsyncs issued, for metrics and tests. */
  syncs = 0;

  constructor(private readonly dbPath: string) {
    // The WAL file was created by the store; make its directory entry durable once.
    const dir = openSync(dirname(dbPath), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  }

  /**
   * The WAL file, opened at the first sync and kept: SQLite replaces it only when the last connection
   * closes, which the store's own open connection prevents. Were it deleted from outside, SQLite would go
   * on writing to the deleted file, so this descriptor (not a new file at the same path) is still the
   * one to sync.
   */
  private file(): number {
    this.fd ??= openSync(`${this.dbPath}-wal`, 'r+');
    return this.fd;
  }

  /** Resolves once everything written to the WAL before this call is on disk. */
  sync(): Promise<void> {
    if (this.running === undefined) {
      this.running = this.fsyncOnce().finally(() => {
        this.running = undefined;
      });
      return this.running;
    }
    // One is running and may have started before our write: wait for the one after it.
    this.next ??= this.running.then(
      () => this.startQueued(),
      () => this.startQueued(),
    );
    return this.next;
  }

  private startQueued(): Promise<void> {
    this.next = undefined;
    return this.sync();
  }

  private fsyncOnce(): Promise<void> {
    this.syncs++;
    let fd: number;
    try {
      fd = this.file();
    } catch (err: unknown) {
      return Promise.reject(err); // the group waiting on it is failed, never left unanswered
    }
    // fdatasync, as SQLite itself uses: the frames and the file size reach the disk, the mtime need not
    // (about 45 against 50 to 67 µs of CPU per sync here, and a little less waiting).
    return new Promise((resolve, reject) => fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
