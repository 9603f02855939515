/**
 * Ed25519 verification on every core. A fresh agent's bootstrap is bound by signature checks (about
 * 120 microseconds each), so batches of (kid, bytes, signature) go to worker threads and come back as
 * one outcome byte per item, in order.
 *
 * The worker is a short script evaluated from a string, so it runs the same under tsx, plain node and a
 * bundled build, with no loader to configure.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { EVENT_CONTEXT, type PublicKeyInfo, verifySigned } from '../shared/signing.ts';

export const OUTCOME_OK = 0;
export const OUTCOME_UNKNOWN_KEY = 1;
export const OUTCOME_BAD_SIGNATURE = 2;

export interface VerifyItem {
  kid: string | undefined;
  data: Uint8Array;
  sig: Uint8Array | undefined;
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createPublicKey, verify } = require('node:crypto');
const keys = new Map(workerData.keys.map(([kid, x]) =>
  [kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' })]));
parentPort.on('message', ({ id, kids, data, ends, sigs, sigOk }) => {
  const bytes = Buffer.from(data);
  const e = new Uint32Array(ends);
  const s = Buffer.from(sigs);
  const okSig = new Uint8Array(sigOk);
  const out = new Uint8Array(kids.length);
  for (let i = 0; i < kids.length; i++) {
    const kid = kids[i];
    const key = kid === null ? undefined : keys.get(kid);
    if (key === undefined) { out[i] = kid === null ? 2 : 1; continue; }
    if (okSig[i] !== 1) { out[i] = 2; continue; }
    let ok = false;
    try { ok = verify(null, bytes.subarray(e[i], e[i + 1]), key, s.subarray(i * 64, i * 64 + 64)); } catch { ok = false; }
    out[i] = ok ? 0 : 2;
  }
  parentPort.postMessage({ id, out }, [out.buffer]);
});
`;

interface Job {
  resolve: (out: Uint8Array) => void;
  reject: (err: unknown) => void;
}

export class VerifierPool {
  private readonly workers: Worker[] = [];
  private readonly jobs = new Map<number, Job>();
  private nextId = 0;
  private nextWorker = 0;

  constructor(
    private readonly trusted: ReadonlyMap<string, PublicKeyInfo>,
    size = availableParallelism(),
  ) {
    const keys = [...trusted.values()].map((k) => [k.kid, k.publicKey]);
    for (let i = 0; i < size; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { keys } });
      w.on('message', (msg: { id: number; out: Uint8Array }) => {
        const job = this.jobs.get(msg.id);
        this.jobs.delete(msg.id);
        job?.resolve(msg.out);
      });
      w.on('error', (err) => {
        for (const job of this.jobs.values()) job.reject(err);
        this.jobs.clear();
      });
      w.unref();
      this.workers.push(w);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  /** One outcome per item (OUTCOME_*), in the items' order. */
  verify(items: VerifyItem[]): Promise<Uint8Array> {
    const worker = this.workers[this.nextWorker++ % Math.max(1, this.workers.length)];
    if (worker === undefined) {
      const out = new Uint8Array(items.length);
      items.forEach((it, i) => {
        const r = verifySigned(this.trusted, it.kid, EVENT_CONTEXT, it.data, it.sig);
        out[i] = r === 'ok' ? OUTCOME_OK : r === 'unknown_key' ? OUTCOME_UNKNOWN_KEY : OUTCOME_BAD_SIGNATURE;
      });
      return Promise.resolve(out);
    }
    // One contiguous buffer of (context + body) per item, transferred, not cloned: a message's data is
    // a view into the client's 64 KiB read buffer, and cloning a view copies its whole backing buffer.
    let total = 0;
    for (const it of items) total += EVENT_CONTEXT.length + it.data.length;
    const data = new Uint8Array(total);
    const ends = new Uint32Array(items.length + 1);
    const sigs = new Uint8Array(items.length * 64);
    const sigOk = new Uint8Array(items.length);
    const kids: (string | null)[] = new Array(items.length);
    let at = 0;
    for (let i = 0; i < items.length; i++) {
      const it = items[i] as VerifyItem;
      data.set(EVENT_CONTEXT, at);
      data.set(it.data, at + EVENT_CONTEXT.length);
      at += EVENT_CONTEXT.length + it.data.length;
      ends[i + 1] = at;
      kids[i] = it.kid ?? null;
      if (it.sig !== undefined && it.sig.length === 64) {
        sigs.set(it.sig, i * 64);
        sigOk[i] = 1;
      }
    }
    const id = this.nextId++;
    return new Promise<Uint8Array>((resolve, reject) => {
      this.jobs.set(id, { resolve, reject });
      worker.postMessage(
        { id, kids, data: data.buffer, ends: ends.buffer, sigs: sigs.buffer, sigOk: sigOk.buffer },
        [data.buffer, ends.buffer, sigs.buffer, sigOk.buffer],
      );
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
  }
}
