/** A retry pause that a stop can cut short, so stopping never waits out a backoff (up to seconds). */
export class Pause {
  private wake: (() => void) | undefined;

  /** Milliseconds; resolves early when `interrupt()` is called. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        self.wake = undefined;
        resolve();
      }
      this.wake = done;
    });
  }

  interrupt(): void {
    this.wake?.();
  }
}
