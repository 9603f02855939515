/**
 * The msgpack codec for every message on the bus. Plain maps (no msgpackr records or structures), so the
 * bytes are self-describing and any msgpack implementation can read them.
 */
import { Packr } from 'msgpackr';
import { GatesyncError } from './errors.ts';

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

/** Decodes msgpack bytes; anything that does not decode is `malformed`. */
export function decode(bytes: Uint8Array): unknown {
  try {
    return packr.unpack(bytes);
  } catch (err: unknown) {
    throw new GatesyncError('malformed', 'message body is not valid msgpack', { cause: err });
  }
}
