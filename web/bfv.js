// The client's half of the v1 protocol (as bfv/encryption.py): a ternary secret key, the
// public key, secret-key encryption of inputs and decryption of replies switched to 2^bits.
//
// Encryption: c0 = -a*s + e + round(Q*m/t), with a = expandUniform(seed, i) in SEAL's NTT domain,
// so only c0 and the 32-byte seed travel. The secret never leaves this object (exportSecret is
// the explicit exception: it lets a page keep its key, and the tests share one with Python).

import {
  SEED_BYTES, expandUniform, fromSigned, nttTables, randomBytes, randomError, randomTernary, reverseBits,
} from './ring.js';
import { KIND, readReply, writePublicKey, writeRequest } from './wire.js';

export const PUBLIC_KEY_INDEX = 0xffffffff; // the public key's `a` in its own seed's sequence

/** JSON text with every integer of 16 digits or more read exactly, as a string: the primes of
 *  `/v1/model` are 60-bit numbers, beyond what a float64 holds. */
export function parseExactJson(text) {
  return JSON.parse(text.replace(/([:[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
}

/** The parts of a `/v1/model` description the client computes with. */
export function planFromDescription(body) {
  if (body.protocol !== 'ei-native-1' || body.scheme !== 'bfv') {
    throw new Error(`unsupported protocol ${body.protocol} / scheme ${body.scheme}`);
  }
  const n = body.poly_modulus_degree;
  const features = body.n_features;
  return {
    ...body,
    n,
    primes: body.coeff_modulus.map(BigInt),
    t: BigInt(body.plain_modulus),
    // Coefficient j * F + F - 1 of m * w_g holds output j of group g (bfv/plan.py).
    resultPositions: body.groups.map((group) => group.map((_, j) => j * features + features - 1)),
  };
}

/** SEAL's BatchEncoder slot order: slot i lives at NTT index map[i] of the plaintext modulo t. */
function slotIndexMap(n) {
  const bits = Math.log2(n);
  const map = new Array(n);
  const m = 2 * n;
  for (let i = 0, pos = 1; i < n / 2; i++, pos = (pos * 3) % m) {
    map[i] = reverseBits((pos - 1) >> 1, bits);
    map[n / 2 + i] = reverseBits((m - pos - 1) >> 1, bits);
  }
  return map;
}

/** The plaintext polynomial (BigInt coefficients) whose batching slots are `slots` (below t). */
export function batchEncode(slots, t, n) {
  const map = slotIndexMap(n);
  const values = new Array(n).fill(0n);
  slots.forEach((v, i) => { values[map[i]] = BigInt(v); });
  return nttTables(t, n).inverse(values);
}

/** The slots (BigInt) of a plaintext polynomial with coefficients below t. */
export function batchDecode(coefficients, t, n) {
  const transformed = nttTables(t, n).forward(coefficients.map(BigInt));
  return slotIndexMap(n).map((index) => transformed[index]);
}

export class ClientKeys {
  /** A fresh key pair for `plan` (planFromDescription), or the given ternary secret (Int8Array). */
  constructor(plan, secret = randomTernary(plan.n)) {
    this.plan = plan;
    this.secret = Int8Array.from(secret);
    this.secretNtt = plan.primes.map((p) => nttTables(p, plan.n).forward(fromSigned(this.secret, p)));
    const seed = randomBytes(SEED_BYTES);
    this.publicKey = writePublicKey(plan.profile, seed, this.encryptZero(seed, PUBLIC_KEY_INDEX), plan.primes);
  }

  /** The secret's coefficients (-1, 0, 1) as bytes 0, 1, 2 (s + 1): what a page may store. */
  exportSecret() {
    return Uint8Array.from(this.secret, (v) => v + 1);
  }

  static importSecret(plan, bytes) {
    return new ClientKeys(plan, Int8Array.from(bytes, (v) => v - 1));
  }

  /** -a*s + e for each prime (rows of BigInt residues), a = expandUniform(seed, index). */
  encryptZero(seed, index) {
    const { n, primes } = this.plan;
    const error = randomError(n);
    return primes.map((prime, row) => {
      const a = expandUniform(seed, index, row, prime, n);
      const s = this.secretNtt[row];
      for (let j = 0; j < n; j++) a[j] = (a[j] * s[j]) % prime;
      const product = nttTables(prime, n).inverse(a);
      return product.map((v, j) => {
        const value = (prime - v + BigInt(error[j])) % prime;
        return value < 0n ? value + prime : value;
      });
    });
  }

  /** round(Q*m/t) per prime for a message (BigInt coefficients below t), as ring.scale_messages. */
  scale(message) {
    const { primes, t } = this.plan;
    const modulus = primes.reduce((q, p) => q * p, 1n);
    const quotient = modulus / t;
    const remainder = modulus % t;
    return primes.map((p) => message.map((m) => ((quotient % p) * m + (m * remainder + t / 2n) / t) % p));
  }

  /** c0 of one message (BigInt coefficients below t) under a = expandUniform(seed, index). */
  encryptMessage(message, seed, index) {
    const zero = this.encryptZero(seed, index);
    const scaled = this.scale(message);
    return zero.map((row, r) => row.map((v, j) => (v + scaled[r][j]) % this.plan.primes[r]));
  }

  asMessage(value) {
    const t = this.plan.t;
    return ((BigInt(value) % t) + t) % t;
  }

  /** A single-sample request: the inputs are the coefficients of m(X). */
  encryptSingle(inputs, keyId, seed = randomBytes(SEED_BYTES)) {
    const message = new Array(this.plan.n).fill(0n);
    for (let i = 0; i < this.plan.n_features; i++) message[i] = this.asMessage(inputs[i]);
    const c0 = [this.encryptMessage(message, seed, 0)];
    return writeRequest(KIND.SINGLE, this.plan.profile, 1, keyId, seed, c0, this.plan.primes);
  }

  /** A batch request for up to N samples: ciphertext i holds feature i of every sample in its slots.
   *  Seconds of work: it yields to the event loop now and then, so that a page stays responsive and
   *  an HTTP client notices connections the server closed meanwhile. */
  async encryptBatch(samples, keyId, seed = randomBytes(SEED_BYTES)) {
    const { n, t, n_features: features } = this.plan;
    const c0 = [];
    for (let feature = 0; feature < features; feature++) {
      if (feature % 16 === 0) await new Promise((resolve) => { setTimeout(resolve, 0); });
      const slots = samples.map((sample) => this.asMessage(sample[feature]));
      c0.push(this.encryptMessage(batchEncode(slots, t, n), seed, feature));
    }
    return writeRequest(KIND.BATCH, this.plan.profile, samples.length, keyId, seed, c0, this.plan.primes);
  }

  /** The plaintext coefficient in [0, t) of a phase c0 + c1*s modulo 2^bits: round(phase * t / 2^bits). */
  plain(phase, bits) {
    return ((phase * this.plan.t + (1n << BigInt(bits - 1))) >> BigInt(bits)) % this.plan.t;
  }

  centred(value) {
    const t = this.plan.t;
    return Number(value > t / 2n ? value - t : value);
  }

  /** Integer scores (n_outputs) from a single-sample reply. */
  decryptSingle(reply) {
    const { n, groups, resultPositions, n_outputs: outputs, single_reply_bits: bits } = this.plan;
    const sizes = groups.map((group) => group.length + n);
    const { values } = readReply(reply, KIND.SINGLE, bits, sizes.reduce((a, b) => a + b, 0));
    const modulus = 2 ** bits;
    const scores = new Array(outputs);
    let offset = 0;
    groups.forEach((group, g) => {
      const c1 = values.slice(offset + group.length, offset + sizes[g]).map(Number);
      group.forEach((output, j) => {
        // (c1 * s)[r] in Z[X]/(X^N + 1); exact in float64: |sum| < N * 2^bits < 2^53.
        const r = resultPositions[g][j];
        let sum = 0;
        for (let k = 0; k <= r; k++) sum += c1[k] * this.secret[r - k];
        for (let k = r + 1; k < n; k++) sum -= c1[k] * this.secret[r - k + n];
        const phase = (((Number(values[offset + j]) + sum) % modulus) + modulus) % modulus;
        scores[output] = this.centred(this.plain(BigInt(phase), bits));
      });
      offset += sizes[g];
    });
    return scores;
  }

  /** Integer scores (samples x n_outputs) from a batch reply. */
  decryptBatch(reply) {
    const { n, t, n_outputs: outputs, batch_reply_bits: bits } = this.plan;
    const { images, values } = readReply(reply, KIND.BATCH, bits, outputs * 2 * n);
    const prime = this.plan.primes[0];
    const tables = nttTables(prime, n);
    const modulus = 1n << BigInt(bits);
    const scores = Array.from({ length: images }, () => new Array(outputs));
    for (let output = 0; output < outputs; output++) {
      const c0 = values.slice(2 * output * n, (2 * output + 1) * n);
      const c1 = tables.forward(values.slice((2 * output + 1) * n, (2 * output + 2) * n));
      for (let j = 0; j < n; j++) c1[j] = (c1[j] * this.secretNtt[0][j]) % prime;
      // c1 < 2^bits and s ternary: c1 * s is an integer of magnitude below p / 2, read off centred.
      const product = tables.inverse(c1);
      const phases = c0.map((v, j) => {
        const centred = product[j] > prime / 2n ? product[j] - prime : product[j];
        return this.plain((((v + centred) % modulus) + modulus) % modulus, bits);
      });
      const slots = batchDecode(phases, t, n);
      for (let i = 0; i < images; i++) scores[i][output] = this.centred(slots[i]);
    }
    return scores;
  }
}
