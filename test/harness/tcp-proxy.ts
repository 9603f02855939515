/**
 * Test harness: a TCP proxy on 127.0.0.1 in front of one target, used to break the
 * link between a client and NATS without touching either of them.
 *
 * - cut():       destroy every open connection (both halves) and refuse new ones.
 * - blackhole(): keep sockets open but silently drop all bytes both ways, like a dead
 *                link that never sends RST/FIN.
 * - restore():   back to normal forwarding. Connections that lost bytes during a
 *                blackhole are destroyed then (their streams have holes), idle ones live on.
 */
import net from 'node:net';

export interface TcpProxy {
  /** Local listening port. */
  readonly port: number;
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  /** True between cut() and restore(). */
  readonly isCut: boolean;
  /** True between blackhole() and restore(). */
  readonly isBlackholed: boolean;
  /** Bytes forwarded (not dropped): up = client -> target, down = target -> client. */
  readonly bytes: { up: number; down: number };
  cut(): void;
  blackhole(): void;
  restore(): void;
  /** Number of open client-side connections. */
  connections(): number;
  close(): Promise<void>;
}

export interface StartTcpProxyOptions {
  /** Listen port; default 0 (ephemeral). Pass a previous proxy's port to recreate it. */
  port?: number;
  /** Give up connecting to the target after this many ms (default 5000). */
  connectTimeoutMs?: number;
}

interface Pair {
  client: net.Socket;
  /** Undefined for connections accepted while blackholed (never reach the target). */
  upstream: net.Socket | undefined;
  /** One side closed while blackholed; the survivor is destroyed on restore(). */
  orphaned: boolean;
  /** Bytes were dropped while blackholed: the byte stream now has a hole, so restore()
   * destroys the pair rather than let either peer parse a corrupted protocol stream. */
  dropped: boolean;
}

export async function startTcpProxy(
  target: { host: string; port: number },
  opts: StartTcpProxyOptions = {},
): Promise<TcpProxy> {
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5_000;
  const pairs = new Set<Pair>();
  const bytes = { up: 0, down: 0 };
  let cutMode = false;
  let blackholeMode = false;

  const destroyPair = (p: Pair): void => {
    pairs.delete(p);
    p.client.destroy();
    p.upstream?.destroy();
  };

  /** Forwards src -> dst with backpressure, dropping bytes while blackholed. */
  const forward = (p: Pair, src: net.Socket, dst: net.Socket, dir: 'up' | 'down'): void => {
    src.on('data', (chunk: Buffer) => {
      if (blackholeMode) {
        p.dropped = true;
        return;
      }
      if (dst.destroyed) return;
      bytes[dir] += chunk.length;
      if (!dst.write(chunk)) {
        src.pause();
        dst.once('drain', () => src.resume());
      }
    });
  };

  /** When one side goes away, take the other down too — except in blackhole mode, where
   * a dead link must not signal anything; the survivor is left hanging until restore(). */
  const onSideClosed = (p: Pair): void => {
    if (blackholeMode) {
      p.orphaned = true;
      return;
    }
    destroyPair(p);
  };

  const server = net.createServer((client) => {
    if (cutMode) {
      // Refuse: the client sees the connection accepted and immediately closed.
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const p: Pair = { client, upstream: undefined, orphaned: false, dropped: false };
    pairs.add(p);
    client.on('error', () => {
      // Expected when a peer resets; 'close' follows and does the cleanup.
    });
    client.on('close', () => onSideClosed(p));

    if (blackholeMode) {
      // A dead link: accept but never reach the target, and never answer.
      client.on('data', () => {});
      return;
    }

    const upstream = net.connect({ host: target.host, port: target.port });
    p.upstream = upstream;
    upstream.setNoDelay(true);
    // Guard against an unroutable target hanging forever; a refused loopback port fails at once.
    upstream.setTimeout(connectTimeoutMs, () => {
      if (upstream.connecting) upstream.destroy(new Error(`connect timeout after ${connectTimeoutMs} ms`));
    });
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      upstream.setTimeout(0);
    });
    upstream.on('error', () => {
      // Target down (ECONNREFUSED) or reset; 'close' follows and closes the client promptly.
    });
    upstream.on('close', () => {
      if (p.client.destroyed) return;
      // A failed connect (target down) always closes the client promptly, even when blackholed.
      if (!blackholeMode || !connected) destroyPair(p);
      else p.orphaned = true;
    });
    forward(p, client, upstream, 'up');
    forward(p, upstream, client, 'down');
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: opts.port ?? 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', () => {
    // Listening errors after startup (e.g. EMFILE) must not crash the test process.
  });
  // A forgotten proxy should not keep the test process alive on its own.
  server.unref();
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('tcp proxy: unexpected listen address');
  const port = addr.port;

  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    get isCut() {
      return cutMode;
    },
    get isBlackholed() {
      return blackholeMode;
    },
    bytes,
    cut() {
      cutMode = true;
      blackholeMode = false;
      for (const p of [...pairs]) destroyPair(p);
    },
    blackhole() {
      blackholeMode = true;
    },
    restore() {
      cutMode = false;
      blackholeMode = false;
      // Connections that lost a side or bytes during the blackhole, or never had an
      // upstream, cannot carry a valid stream any more. Idle ones survive untouched.
      for (const p of [...pairs]) {
        if (
          p.orphaned ||
          p.dropped ||
          p.upstream === undefined ||
          p.client.destroyed ||
          p.upstream.destroyed
        ) {
          destroyPair(p);
        }
      }
    },
    connections() {
      let open = 0;
      for (const p of pairs) if (!p.client.destroyed) open++;
      return open;
    },
    async close() {
      cutMode = true;
      for (const p of [...pairs]) destroyPair(p);
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
