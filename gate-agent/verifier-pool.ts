/**
 * Ed25519 verification on every core. A fresh agent's bootstrap is bound by signature checks (about
 * 120 microseconds each), so batches go to worker threads and come back as one outcome byte per item, in
 * order.
 *
 * A batch is built in place, in a few flat buffers (`VerifyBatch`): the signed bytes of every item
 * (EVENT_CONTEXT + body, back to back), their end offsets, the signatures decoded straight from their
 * base64 header into 64-byte slots, and an index into a small table of key ids. Those buffers are
 * transferred to the worker and back, never cloned, so the caller reads each item's body from the
 * returned batch (`body(i)`) instead of keeping the messages it came from: the main thread makes no
 * per-item objects for the trip, and a chunk waiting for its answer holds a few buffers, not hundreds of
 * messages (which the garbage collector would otherwise copy and promote while they wait).
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

const SIG_BYTES = 64;
/** Bytes reserved per item when a batch starts: a ticket event is about 450 bytes with its context. */
const BYTES_PER_ITEM_GUESS = 512;

// Per item, in verifySigned()'s order: no key id or no signature (kid index 0) is a bad signature, an
// untrusted key id an unknown key, a signature that is not 64 bytes (sigOk 0) a bad signature, then the
// signature decides.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createPublicKey, verify } = require('node:crypto');
const keys = new Map(workerData.keys.map(([kid, x]) =>
  [kid, createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' })]));
parentPort.on('message', (m) => {
  const bytes = Buffer.from(m.data);
  const ends = new Uint32Array(m.ends);
  const sigs = Buffer.from(m.sigs);
  const kidIndex = new Uint32Array(m.kidIndex);
  const sigOk = new Uint8Array(m.sigOk);
  const table = m.kids.map((kid) => keys.get(kid));
  const out = new Uint8Array(m.n);
  for (let i = 0; i < m.n; i++) {
    const k = kidIndex[i];
    if (k === 0) { out[i] = ${OUTCOME_BAD_SIGNATURE}; continue; }
    const key = table[k - 1];
    if (key === undefined) { out[i] = ${OUTCOME_UNKNOWN_KEY}; continue; }
    if (sigOk[i] !== 1) { out[i] = ${OUTCOME_BAD_SIGNATURE}; continue; }
    let ok = false;
    try { ok = verify(null, bytes.subarray(ends[i], ends[i + 1]), key, sigs.subarray(i * 64, i * 64 + 64)); } catch { ok = false; }
    out[i] = ok ? ${OUTCOME_OK} : ${OUTCOME_BAD_SIGNATURE};
  }
  parentPort.postMessage(
    { id: m.id, out, data: m.data, ends: m.ends, sigs: m.sigs, sigOk: m.sigOk, kidIndex: m.kidIndex },
    [out.buffer, m.data, m.ends, m.sigs, m.sigOk, m.kidIndex]);
});
`;

/** The buffers of a batch on their way to a worker and back (transferred, never cloned). */
interface BatchBuffers {
  data: ArrayBuffer;
  ends: ArrayBuffer;
  sigs: ArrayBuffer;
  sigOk: ArrayBuffer;
  kidIndex: ArrayBuffer;
}

interface WorkerRequest extends BatchBuffers {
  id: number;
  n: number;
  kids: string[];
}

interface WorkerAnswer extends BatchBuffers {
  id: number;
  out: Uint8Array;
}

/**
 * One batch of signed items, written in place. `add()` copies what it needs, so the message an item
 * came from can be dropped at once. While `VerifierPool.verify()` runs, the buffers are with a worker;
 * once it settles they are back, and `body(i)` reads item i's bytes.
 */
export class VerifyBatch {
  private data: Uint8Array;
  /** n + 1 offsets into data: item i is data[ends[i], ends[i + 1]), its context first. */
  private ends: Uint32Array;
  private sigs: Buffer;
  /** Per item: 1 when its signature decoded to exactly 64 bytes. */
  private sigOk: Uint8Array;
  /** Per item: 0 = no key id or no signature, else 1 + index into kids. */
  private kidIndex: Uint32Array;
  private readonly kids: string[] = [];
  private at = 0;
  private count = 0;

  constructor(capacity: number) {
    const n = Math.max(1, capacity);
    this.data = new Uint8Array(n * BYTES_PER_ITEM_GUESS);
    this.ends = new Uint32Array(n + 1);
    this.sigs = Buffer.from(new ArrayBuffer(n * SIG_BYTES));
    this.sigOk = new Uint8Array(n);
    this.kidIndex = new Uint32Array(n);
  }

  /** Items added. */
  get length(): number {
    return this.count;
  }

  /**
   * Adds one item: its key id, its body (signed with EVENT_CONTEXT in front) and its signature as the
   * base64 text of its header. Returns the item's index.
   */
  add(kid: string | undefined, body: Uint8Array, sigBase64: string | undefined): number {
    const i = this.count;
    if (i === this.kidIndex.length) this.growItems(i * 2);
    const need = this.at + EVENT_CONTEXT.length + body.length;
    if (need > this.data.length) {
      const data = new Uint8Array(Math.max(need, this.data.length * 2));
      data.set(this.data.subarray(0, this.at));
      this.data = data;
    }
    this.data.set(EVENT_CONTEXT, this.at);
    this.data.set(body, this.at + EVENT_CONTEXT.length);
    this.at = need;
    this.ends[i + 1] = need;
    const signed = kid !== undefined && kid !== '' && sigBase64 !== undefined && sigBase64 !== '';
    this.kidIndex[i] = signed ? this.kidSlot(kid) : 0;
    // Decoded straight into the item's slot. byteLength() is worked out from the text's length, and an
    // invalid character makes the decoder write fewer bytes, so both must say 64 for a signature to count
    // (as Buffer.from(text, 'base64').length === 64 would).
    this.sigOk[i] =
      signed &&
      Buffer.byteLength(sigBase64, 'base64') === SIG_BYTES &&
      this.sigs.write(sigBase64, i * SIG_BYTES, SIG_BYTES, 'base64') === SIG_BYTES
        ? 1
        : 0;
    this.count = i + 1;
    return i;
  }

  /** Item i's body (without the context): a view into the batch, valid until the batch is dropped. */
  body(i: number): Uint8Array {
    return this.data.subarray((this.ends[i] as number) + EVENT_CONTEXT.length, this.ends[i + 1]);
  }

  /**
   * Item i's key id and signature, for checking it on this thread. A signature that did not decode to 64
   * bytes comes back empty: verifySigned() finds it bad, as it would the bytes it decoded to.
   */
  signature(i: number): { kid: string | undefined; sig: Uint8Array | undefined } {
    const k = this.kidIndex[i] as number;
    if (k === 0) return { kid: undefined, sig: undefined };
    const sig =
      this.sigOk[i] === 1 ? this.sigs.subarray(i * SIG_BYTES, (i + 1) * SIG_BYTES) : new Uint8Array(0);
    return { kid: this.kids[k - 1], sig };
  }

  private kidSlot(kid: string): number {
    // A batch holds one or two key ids (two during a rotation): a linear search is the fast way.
    let k = this.kids.indexOf(kid);
    if (k < 0) k = this.kids.push(kid) - 1;
    return k + 1;
  }

  private growItems(n: number): void {
    const ends = new Uint32Array(n + 1);
    ends.set(this.ends);
    this.ends = ends;
    const sigs = Buffer.from(new ArrayBuffer(n * SIG_BYTES));
    this.sigs.copy(sigs);
    this.sigs = sigs;
    const sigOk = new Uint8Array(n);
    sigOk.set(this.sigOk);
    this.sigOk = sigOk;
    const kidIndex = new Uint32Array(n);
    kidIndex.set(this.kidIndex);
    this.kidIndex = kidIndex;
  }

  /** The request for a worker; its buffers are transferred, which detaches them here until `restore()`. */
  request(id: number): WorkerRequest {
    return {
      id,
      n: this.length,
      kids: this.kids,
      data: this.data.buffer as ArrayBuffer,
      ends: this.ends.buffer as ArrayBuffer,
      sigs: this.sigs.buffer as ArrayBuffer,
      sigOk: this.sigOk.buffer as ArrayBuffer,
      kidIndex: this.kidIndex.buffer as ArrayBuffer,
    };
  }

  /** Takes the buffers back from a worker's answer. */
  restore(b: BatchBuffers): void {
    this.data = new Uint8Array(b.data);
    this.ends = new Uint32Array(b.ends);
    this.sigs = Buffer.from(b.sigs);
    this.sigOk = new Uint8Array(b.sigOk);
    this.kidIndex = new Uint32Array(b.kidIndex);
  }
}

interface Job {
  worker: number;
  batch: VerifyBatch;
  resolve: (out: Uint8Array) => void;
  reject: (err: unknown) => void;
}

export class VerifierPool {
  private readonly workers: Worker[] = [];
  private readonly jobs = new Map<number, Job>();
  /** Batches out per worker: a worker keeps the process alive only while it has work. */
  private readonly busy: number[] = [];
  private readonly keys: string[][];
  private nextId = 0;
  private nextWorker = 0;
  private closing = false;

  constructor(
    private readonly trusted: ReadonlyMap<string, PublicKeyInfo>,
    size = availableParallelism(),
  ) {
    this.keys = [...trusted.values()].map((k) => [k.kid, k.publicKey]);
    for (let i = 0; i < size; i++) this.spawn(i);
  }

  private spawn(index: number): void {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { keys: this.keys } });
    w.on('message', (msg: WorkerAnswer) => {
      const job = this.jobs.get(msg.id);
      this.jobs.delete(msg.id);
      if (job === undefined) return;
      this.done(job.worker);
      job.batch.restore(msg);
      job.resolve(msg.out);
    });
    // A worker that dies (an error, or ended from outside) fails the batches it held, so no caller waits
    // forever, and is replaced; the caller reads those messages again.
    w.on('error', (err) => this.lost(index, w, err));
    w.on('exit', (code) => this.lost(index, w, new Error(`verify worker exited with code ${code}`)));
    w.unref();
    this.workers[index] = w;
    this.busy[index] = 0;
  }

  private lost(index: number, w: Worker, err: unknown): void {
    if (this.workers[index] !== w) return; // already replaced ('error' comes before 'exit')
    for (const [id, job] of this.jobs) {
      if (job.worker !== index) continue;
      this.jobs.delete(id);
      job.reject(err);
    }
    this.busy[index] = 0;
    if (!this.closing) this.spawn(index);
  }

  get size(): number {
    return this.workers.length;
  }

  /**
   * One outcome per item (OUTCOME_*), in the items' order. The batch's buffers travel to a worker and
   * back: do not touch the batch until the promise settles.
   */
  verify(batch: VerifyBatch): Promise<Uint8Array> {
    const index = this.nextWorker++ % Math.max(1, this.workers.length);
    const worker = this.workers[index];
    if (worker === undefined) {
      const out = new Uint8Array(batch.length);
      for (let i = 0; i < batch.length; i++) {
        const { kid, sig } = batch.signature(i);
        const r = verifySigned(this.trusted, kid, EVENT_CONTEXT, batch.body(i), sig);
        out[i] = r === 'ok' ? OUTCOME_OK : r === 'unknown_key' ? OUTCOME_UNKNOWN_KEY : OUTCOME_BAD_SIGNATURE;
      }
      return Promise.resolve(out);
    }
    const id = this.nextId++;
    const message = batch.request(id);
    return new Promise<Uint8Array>((resolve, reject) => {
      this.jobs.set(id, { worker: index, batch, resolve, reject });
      if (this.busy[index] === 0) worker.ref();
      this.busy[index] = (this.busy[index] ?? 0) + 1;
      worker.postMessage(message, [
        message.data,
        message.ends,
        message.sigs,
        message.sigOk,
        message.kidIndex,
      ]);
    });
  }

  private done(index: number): void {
    const left = (this.busy[index] ?? 1) - 1;
    this.busy[index] = left;
    if (left === 0) this.workers[index]?.unref();
  }

  /** Ends the workers; batches still out fail. */
  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.workers.length = 0;
    for (const job of this.jobs.values()) job.reject(new Error('verifier pool closed'));
    this.jobs.clear();
  }
}
