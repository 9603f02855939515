/**
 * Scans answered in the last minute, for the status page: sixty one-second buckets, so recording a scan
 * and reading the rate are O(1) and never touch the database. A bucket is reused once its second is more
 * than a minute old. Counts what this process answered (a restart starts from zero).
 */
export class ScanRate {
  private readonly seconds = new Array<number>(60).fill(-1);
  private readonly admits = new Array<number>(60).fill(0);
  private readonly rejects = new Array<number>(60).fill(0);

  record(decision: 'admit' | 'reject', now = Date.now()): void {
    const second = Math.floor(now / 1000);
    const i = second % 60;
    if (this.seconds[i] !== second) {
      this.seconds[i] = second;
      this.admits[i] = 0;
      this.rejects[i] = 0;
    }
    if (decision === 'admit') this.admits[i] = (this.admits[i] ?? 0) + 1;
    else this.rejects[i] = (this.rejects[i] ?? 0) + 1;
  }

  /** Scans in the 60 s up to `now` (the current second included). */
  lastMinute(now = Date.now()): { admit: number; reject: number } {
    const second = Math.floor(now / 1000);
    let admit = 0;
    let reject = 0;
    for (let i = 0; i < 60; i++) {
      const s = this.seconds[i] ?? -1;
      if (s > second - 60 && s <= second) {
        admit += this.admits[i] ?? 0;
        reject += this.rejects[i] ?? 0;
      }
    }
    return { admit, reject };
  }
}
