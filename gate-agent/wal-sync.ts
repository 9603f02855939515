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
 * and bursts are covered by one fsync each. The file's identity is checked at most once a second (a
 * stat per fsync was 1.5% of the scan path): SQLite replaces the WAL file only when the last connection
 * closes, which the store's own open connection prevents, so the check guards against the file being
 * removed from outside, and the new one is then opened.
 */
import { closeSync, fdatasync, fstatSync, fsyncSync, openSync, statSync } from 'node:fs';
import { dirname } from 'node:path';

export class WalSync {
  private fd: number | undefined;
  private ino = -1;
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

  private checkedAt = 0;

  private file(): number {
    const at = Date.now();
    if (this.fd !== undefined && at - this.checkedAt < 1_000) return this.fd;
    this.checkedAt = at;
    const path = `${this.dbPath}-wal`;
    const now = statSync(path).ino;
    if (this.fd === undefined || now !== this.ino) {
      if (this.fd !== undefined) closeSync(this.fd);
      this.fd = openSync(path, 'r+');
      this.ino = fstatSync(this.fd).ino;
    }
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
    const fd = this.file();
    // fdatasync, as SQLite itself uses: the frames and the file size reach the disk, the mtime need not
    // (about 45 against 50 to 67 µs of CPU per sync here, and a little less waiting).
    return new Promise((resolve, reject) => fdatasync(fd, (err) => (err === null ? resolve() : reject(err))));
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
