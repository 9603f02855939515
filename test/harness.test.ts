/**
 * Proves the test harness against a REAL nats-server: the proxy really cuts and restores
 * the link, and a SIGKILLed server restarts on the same port with its JetStream store.
 */
import assert from 'node:assert/strict';
import { access, rm } from 'node:fs/promises';
import net from 'node:net';
import { test } from 'node:test';
import { jetstream, jetstreamManager, StorageType } from '@nats-io/jetstream';
import { connect, type NatsConnection, type Status } from '@nats-io/transport-node';
import { startNats, startTcpProxy, tmpDir, waitFor } from './harness/index.js';

/** Reconnect forever, quickly (ms), and ping every second so dead links are noticed fast. */
const CLIENT_OPTS = { maxReconnectAttempts: -1, reconnectTimeWait: 200, pingInterval: 1_000 } as const;

/** Collects every status event of a connection; the loop ends when the connection closes. */
function recordStatus(nc: NatsConnection): Status[] {
  const events: Status[] = [];
  void (async () => {
    for await (const s of nc.status()) events.push(s);
  })().catch(() => {
    // The iterator only ends with the connection; nothing to report.
  });
  return events;
}

const countOf = (events: Status[], type: Status['type']): number =>
  events.filter((e) => e.type === type).length;

/** A request/reply round trip with a short timeout (ms); resolves to the reply text. */
async function echo(nc: NatsConnection, subject: string, text: string): Promise<string> {
  const reply = await nc.request(subject, text, { timeout: 500 });
  return reply.string();
}

test('pub/sub through the proxy; cut breaks the link, restore reconnects', { timeout: 15_000 }, async (t) => {
  const server = await startNats();
  t.after(() => server.cleanup());
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: server.port });
  t.after(() => proxy.close());

  const nc = await connect({ servers: proxy.url, ...CLIENT_OPTS });
  t.after(() => nc.close());
  const events = recordStatus(nc);
  assert.equal(proxy.connections(), 1);

  // Plain pub/sub.
  const got: string[] = [];
  nc.subscribe('harness.pubsub', {
    callback: (_err, msg) => {
      got.push(msg.string());
    },
  });
  nc.publish('harness.pubsub', 'hello');
  await waitFor(() => got.includes('hello'), { message: 'pub/sub message delivered' });
  assert.ok(proxy.bytes.up > 0 && proxy.bytes.down > 0);

  // A responder on the same connection: the request goes out and back through the proxy.
  nc.subscribe('harness.echo', {
    callback: (_err, msg) => {
      msg.respond(`echo:${msg.string()}`);
    },
  });
  assert.equal(await echo(nc, 'harness.echo', 'a'), 'echo:a');

  proxy.cut();
  assert.equal(proxy.isCut, true);
  await waitFor(() => countOf(events, 'disconnect') >= 1, { message: 'client saw a disconnect' });
  await assert.rejects(echo(nc, 'harness.echo', 'b'), 'request must fail while the link is cut');
  // Reconnect attempts (every ~200 ms) are accepted and dropped at once, never forwarded.
  assert.equal(countOf(events, 'reconnect'), 0);
  assert.equal(proxy.connections(), 0);

  proxy.restore();
  await waitFor(() => countOf(events, 'reconnect') >= 1, { message: 'client reconnected after restore' });
  // Subscriptions are replayed on reconnect, so both pub/sub and request/reply work again.
  assert.equal(
    await waitFor(() => echo(nc, 'harness.echo', 'c'), { message: 'echo after restore' }),
    'echo:c',
  );
  nc.publish('harness.pubsub', 'again');
  await waitFor(() => got.includes('again'), { message: 'pub/sub after restore' });
});

test('blackhole: client notices the silent dead link via pings, recovers on restore', {
  timeout: 15_000,
}, async (t) => {
  const server = await startNats();
  t.after(() => server.cleanup());
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: server.port });
  t.after(() => proxy.close());

  // timeout: 1 s connect timeout, so reconnect attempts into the blackhole give up quickly.
  const nc = await connect({ servers: proxy.url, ...CLIENT_OPTS, maxPingOut: 2, timeout: 1_000 });
  t.after(() => nc.close());
  const events = recordStatus(nc);
  nc.subscribe('harness.echo', {
    callback: (_err, msg) => {
      msg.respond(msg.data);
    },
  });
  assert.equal(await echo(nc, 'harness.echo', 'x'), 'x');

  proxy.blackhole();
  const upBefore = proxy.bytes.up;
  await assert.rejects(echo(nc, 'harness.echo', 'y'), 'request must time out in the blackhole');
  // No RST/FIN reaches the client: only missed PONGs (2 x 1 s pings) reveal the dead link.
  await waitFor(() => countOf(events, 'staleConnection') >= 1, { message: 'stale connection detected' });
  await waitFor(() => countOf(events, 'disconnect') >= 1, { message: 'disconnect after stale' });
  assert.equal(proxy.bytes.up, upBefore, 'nothing is forwarded while blackholed');

  proxy.restore();
  await waitFor(() => countOf(events, 'reconnect') >= 1, { message: 'reconnected after restore' });
  assert.equal(await waitFor(() => echo(nc, 'harness.echo', 'z'), { message: 'echo after restore' }), 'z');
});

test('proxy closes incoming connections promptly when the target is down', { timeout: 15_000 }, async (t) => {
  // Grab a free port, then close it so nothing listens there.
  const deadPort = await new Promise<number>((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() =>
        addr !== null && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port')),
      );
    });
  });
  const proxy = await startTcpProxy({ host: '127.0.0.1', port: deadPort });
  t.after(() => proxy.close());

  const started = Date.now();
  const closed = await new Promise<boolean>((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port: proxy.port });
    sock.on('error', () => {});
    sock.on('close', () => resolve(true));
    // Safety net (ms) so a regression fails the assertion instead of hanging the test.
    setTimeout(() => {
      sock.destroy();
      resolve(false);
    }, 3_000).unref();
  });
  assert.ok(closed, 'connection was closed');
  assert.ok(Date.now() - started < 2_000, `closed within 2 s (took ${Date.now() - started} ms)`);
  await waitFor(() => proxy.connections() === 0, { message: 'proxy forgot the dead connection' });
});

test('kill9 + restart keeps port and JetStream file store', { timeout: 15_000 }, async (t) => {
  const server = await startNats();
  t.after(() => server.cleanup());
  const { port, storeDir } = server;
  const firstPid = server.pid;

  const nc = await connect({ servers: server.url, ...CLIENT_OPTS });
  t.after(() => nc.close());
  const events = recordStatus(nc);
  const jsm = await jetstreamManager(nc);
  const name = 'HARNESS_PERSIST';
  await jsm.streams.add({ name, subjects: ['harness.persist.>'], storage: StorageType.File });
  const ack = await jetstream(nc).publish('harness.persist.one', 'kept');
  assert.equal(ack.stream, name);

  await server.kill9();
  assert.equal(server.running, false);
  await waitFor(() => countOf(events, 'disconnect') >= 1, { message: 'client saw the crash' });

  await server.restart();
  assert.equal(server.port, port);
  assert.equal(server.storeDir, storeDir);
  assert.notEqual(server.pid, firstPid);
  await waitFor(() => countOf(events, 'reconnect') >= 1, {
    message: 'client reconnected to restarted server',
  });

  const info = await waitFor(() => jsm.streams.info(name), { message: 'stream info after restart' });
  assert.equal(info.config.name, name);
  assert.equal(info.config.storage, StorageType.File);
  assert.deepEqual(info.config.subjects, ['harness.persist.>']);
});

test('startNats: config text, caller-owned storeDir, stop() and logs()', { timeout: 15_000 }, async (t) => {
  const storeDir = await tmpDir('gatesync-harness-store-');
  t.after(() => rm(storeDir, { recursive: true, force: true }));
  // max_payload is visible to clients in the INFO block, so it proves -c was honoured.
  const server = await startNats({ storeDir, config: 'max_payload: 4096\n' });
  t.after(() => server.cleanup());
  assert.equal(server.storeDir, storeDir);

  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  assert.equal(nc.info?.max_payload, 4096);
  assert.equal(nc.info?.jetstream, true);
  await nc.close();

  assert.match(server.logs(), /Server is ready/);
  await server.stop();
  assert.equal(server.running, false);
  // nats-server 2.9 exits with code 1 after a graceful SIGTERM shutdown.
  assert.match(server.logs(), /Server Exiting\.\.[\s\S]*exited code=1 signal=null/);
  await server.cleanup();
  // cleanup() must not delete a store dir the caller owns.
  await access(storeDir);
});
