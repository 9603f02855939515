/**
 * The baseline for bench:scan: a plain node:http server in a process of its own that reads the request
 * body and answers every request with the same JSON, about the size of a scan answer. It shows what this
 * machine, Node and the load generator can do with no framework, no validation and no storage.
 *
 *   child -> parent  { type: 'ready', url, pid }
 *   parent -> child  { type: 'stop' }     close, answer 'stopped', exit
 */
import http from 'node:http';

const BODY = JSON.stringify({
  decision: 'admit',
  ticket: {
    id: 'T01JD3M7Q5R0000000000000000',
    holder: 'Ada Lovelace',
    tier: 'GA',
    seat: null,
    gates: [],
    valid_from: '2025-01-01T00:00:00.000Z',
    valid_until: '2025-01-02T00:00:00.000Z',
    status: 'valid',
  },
  checkin_id: '01JD3M7Q5R0000000000000000',
  seq: 1,
  scanned_at: '2025-01-01T12:00:00.000Z',
});

const server = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  req.resume();
  req.on('end', () => {
    res.writeHead(200, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(BODY),
    });
    res.end(BODY);
  });
});

server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  process.send?.({ type: 'ready', url: `http://127.0.0.1:${port}`, pid: process.pid });
});

const stop = (code: number) => {
  server.closeAllConnections();
  server.close(() => {
    process.send?.({ type: 'stopped' });
    process.exit(code);
  });
};
process.on('message', (raw: unknown) => {
  if ((raw as { type?: string }).type === 'stop') stop(0);
});
process.on('disconnect', () => stop(1));
process.on('SIGTERM', () => stop(0));
