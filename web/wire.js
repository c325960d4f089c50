// Binary messages of the v1 protocol, byte for byte as bfv/wire.py and bfv/bitpack.py:
//
//   public key  "EIK1" u8 profile  u8 0 u16 0 | 32-byte seed | pk0: k x N coefficients
//   request     "EIQ1" u8 kind     u8 profile u16 0 | u32 images | u32 ciphertexts | 32-byte key id
//               | 32-byte seed | c0 of each ciphertext: k x N coefficients
//   reply       "EIR1" u8 kind     u8 bits u16 0 | u32 images | u32 values | values
//
// Integers are little-endian. Values are bit-packed in groups of eight, so a group of `width`-bit
// values is exactly `width` bytes, value i of a group at bit i * width.

export const KIND = { SINGLE: 1, BATCH: 2 };
export const PROFILE_IDS = { compact: 1, flooded: 2, 'compact-2048': 3 };
const KEY_HEADER = 40;
const REQUEST_HEADER = 80;
const REPLY_HEADER = 16;
const ascii = (text) => Uint8Array.from(text, (c) => c.charCodeAt(0));

export function packedSize(count, width) {
  return Math.ceil(count / 8) * width;
}

/** BigInt (or integer Number) values, each below 2^width, packed into `out` at `offset`. */
export function pack(values, width, out = new Uint8Array(packedSize(values.length, width)), offset = 0) {
  const bits = BigInt(width);
  for (let group = 0; group * 8 < values.length; group++) {
    let word = 0n;
    for (let lane = 7; lane >= 0; lane--) {
      const value = values[group * 8 + lane];
      word = (word << bits) | BigInt(value ?? 0);
    }
    for (let byte = 0; byte < width; byte++, word >>= 8n) out[offset + group * width + byte] = Number(word & 0xffn);
  }
  return out;
}

/** The first `count` values (BigInt) packed by `pack`; `data` must be exactly `packedSize` bytes. */
export function unpack(data, count, width) {
  if (data.length !== packedSize(count, width)) {
    throw new Error(`${data.length} bytes cannot hold ${count} values of ${width} bits`);
  }
  const bits = BigInt(width);
  const mask = (1n << bits) - 1n;
  const out = new Array(count);
  for (let group = 0; group * 8 < count; group++) {
    let word = 0n;
    for (let byte = width - 1; byte >= 0; byte--) word = (word << 8n) | BigInt(data[group * width + byte]);
    for (let lane = 0; lane < 8 && group * 8 + lane < count; lane++, word >>= bits) out[group * 8 + lane] = word & mask;
  }
  return out;
}

/** The width every residue is packed at: the largest data prime's bit length. */
export function coefficientWidth(primes) {
  return Math.max(...primes.map((p) => BigInt(p).toString(2).length));
}

function flatten(polys) {
  return polys.flat(2);
}

/** A public key: `pk0` is k rows of N residues (BigInt). */
export function writePublicKey(profile, seed, pk0, primes) {
  const width = coefficientWidth(primes);
  const values = flatten(pk0);
  const out = new Uint8Array(KEY_HEADER + packedSize(values.length, width));
  out.set(ascii('EIK1'));
  out[4] = PROFILE_IDS[profile];
  out.set(seed, 8);
  return pack(values, width, out, KEY_HEADER);
}

/** A request: `c0` is a list of ciphertexts, each k rows of N residues; `keyId` is hex. */
export function writeRequest(kind, profile, images, keyId, seed, c0, primes) {
  const width = coefficientWidth(primes);
  const values = flatten(c0);
  const out = new Uint8Array(REQUEST_HEADER + packedSize(values.length, width));
  const view = new DataView(out.buffer);
  out.set(ascii('EIQ1'));
  out[4] = kind;
  out[5] = PROFILE_IDS[profile];
  view.setUint32(8, images, true);
  view.setUint32(12, c0.length, true);
  out.set(Uint8Array.from(keyId.match(/../g), (h) => parseInt(h, 16)), 16);
  out.set(seed, 48);
  return pack(values, width, out, REQUEST_HEADER);
}

/** Parse a reply; throws unless it is of `kind`, at `bits`, with exactly `count` values. */
export function readReply(data, kind, bits, count) {
  if (data.length < REPLY_HEADER) throw new Error('reply is shorter than its header');
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const magic = String.fromCharCode(...data.subarray(0, 4));
  if (magic !== 'EIR1' || data[4] !== kind || data[5] !== bits || view.getUint32(12, true) !== count) {
    throw new Error('reply does not match the request or the model description');
  }
  return { images: view.getUint32(8, true), values: unpack(data.subarray(REPLY_HEADER), count, bits) };
}

/** A reply, as the server writes it (for tests). */
export function writeReply(kind, images, bits, values) {
  const out = new Uint8Array(REPLY_HEADER + packedSize(values.length, bits));
  const view = new DataView(out.buffer);
  out.set(ascii('EIR1'));
  out[4] = kind;
  out[5] = bits;
  view.setUint32(8, images, true);
  view.setUint32(12, values.length, true);
  return pack(values, bits, out, REPLY_HEADER);
}
