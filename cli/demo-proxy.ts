/**
 * A small TCP proxy for `gatesync demo`: it sits between a gate agent and NATS so the demo can cut the
 * venue's uplink without touching either side. cut() destroys every open connection and refuses new ones
 * (the client sees the link drop, then each reconnect attempt closed at once); restore() forwards again.
 */
import net from 'node:net';

export interface DemoProxy {
  /** `nats://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  readonly isCut: boolean;
  /** How many times cut() was called. */
  readonly cuts: number;
  cut(): void;
  restore(): void;
  close(): Promise<void>;
}

export async function startDemoProxy(target: { host: string; port: number }): Promise<DemoProxy> {
  const sockets = new Set<net.Socket>();
  let cutMode = false;
  let cuts = 0;

  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    // A reset peer is expected here (that is the point); 'close' follows and does the cleanup.
    s.on('error', () => undefined);
  };

  const server = net.createServer((client) => {
    track(client);
    if (cutMode) {
      client.destroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({ host: target.host, port: target.port });
    track(upstream);
    upstream.setNoDelay(true);
    // Either side going away takes the other with it, as a real broken link would.
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', () => undefined);
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('demo proxy: no listen address');
  const port = address.port;

  const destroyAll = () => {
    for (const s of [...sockets]) s.destroy();
    sockets.clear();
  };

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    get isCut() {
      return cutMode;
    },
    get cuts() {
      return cuts;
    },
    cut() {
      if (!cutMode) cuts++;
      cutMode = true;
      destroyAll();
    },
    restore() {
      cutMode = false;
    },
    async close() {
      cutMode = true;
      destroyAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
