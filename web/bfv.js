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

/** A sample's feature outside the range the model's inputs were declared for (bfv/inputs.py). */
export class InputRangeError extends RangeError {}

/** numpy's rint: to the nearest integer, ties to even (Math.round sends ties up); never -0. */
function rint(x) {
  const r = Math.round(x);
  return (Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r) + 0;
}

/** A number as Python's `{:g}` writes it (6 significant digits), for messages equal to the Python client's. */
function g(value) {
  return String(Number(value.toPrecision(6)));
}

/** How each feature is encoded, from a `/v1/model` description: x_int = rint((x - offset) * scale),
 *  |x_int| <= input_max, for x in the feature's declared range [low, high]. */
function inputEncoding(body) {
  const features = body.n_features;
  const field = (name, fallback) => {
    const values = body[name] === undefined ? Array(features).fill(fallback) : body[name].map(Number);
    if (values.length !== features) throw new Error(`${name} has ${values.length} values for ${features} features`);
    return values;
  };
  const max = Number(body.input_max ?? 255);
  // A description without ranges is an MNIST model's of old: pixels / 255 in [0, 1].
  const offsets = field('input_offsets', 0);
  const scales = field('input_scales', 255);
  const low = field('input_low', 0);
  const high = field('input_high', 1);
  const clamp = (v) => Math.min(max, Math.max(-max, v));
  // The integers the declared range encodes to: what the integer path accepts (MNIST: pixels 0..255).
  const lowInt = low.map((v, j) => clamp(rint((v - offsets[j]) * scales[j])));
  const highInt = high.map((v, j) => clamp(rint((v - offsets[j]) * scales[j])));
  return { max, offsets, scales, low, high, lowInt, highInt };
}

/** The parts of a `/v1/model` description the client computes with. */
export function planFromDescription(body) {
  if (body.protocol !== 'ei-native-1' || body.scheme !== 'bfv') {
    throw new Error(`unsupported protocol ${body.protocol} / scheme ${body.scheme}`);
  }
  if (body.model_kind === 'square-network') return networkPlanFromDescription(body);
  const n = body.poly_modulus_degree;
  return {
    ...body,
    n,
    primes: body.coeff_modulus.map(BigInt),
    t: BigInt(body.plain_modulus),
    inputs: inputEncoding(body),
    chunks: 1,
    resultPositions: resultPositions(body.groups, body.n_features),
  };
}

/** Coefficient j * width + width - 1 of m * w_g holds output j of group g (bfv/plan.py); width = F,
 *  or a chunk's share of the features when a sample is split over several ciphertexts. */
function resultPositions(groups, width) {
  return groups.map((group) => group.map((_, j) => j * width + width - 1));
}

/** A square network's description (bfv/network_plan.py): one linear plan per round and modulus. */
function networkPlanFromDescription(body) {
  const sent = body.sent_features;
  const valid = Array.isArray(sent) && sent.length === body.rounds[0].n_features
    && sent.every((index, i) => Number.isInteger(index) && index >= 0 && index < body.n_features
      && (i === 0 || index > sent[i - 1]));
  if (!valid) {
    throw new Error(`sent_features must be the ascending indices of round 0's ${body.rounds[0].n_features} inputs `
      + `among the network's ${body.n_features}`);
  }
  const n = body.poly_modulus_degree;
  const primes = body.coeff_modulus.map(BigInt);
  const moduli = body.plain_moduli.map(BigInt);
  const rounds = body.rounds.map((shape) => moduli.map((t, m) => {
    const width = Math.ceil(shape.n_features / shape.chunks);
    return {
      profile: body.profile, n, primes, t, n_features: shape.n_features, n_outputs: shape.n_outputs,
      groups: shape.groups, chunks: shape.chunks, chunkFeatures: width, single_reply_bits: shape.reply_bits[m],
      resultPositions: resultPositions(shape.groups, width),
    };
  }));
  return {
    ...body, n, primes, moduli, rounds, network: true, inputs: inputEncoding(body), max_batch: 1,
    digitBits: BigInt(body.digit_bits), digits: body.digits,
  };
}

/** What the client sends after decrypting z = h + r (mod t): z^2, then B^d z for each digit d, mod t. */
export function maskedFeatures(plan, masked, t) {
  const out = masked.map((z) => (z * z) % t);
  for (let d = 0n; d < BigInt(plan.digits); d++) {
    const factor = (1n << (plan.digitBits * d)) % t;
    out.push(...masked.map((z) => (z * factor) % t));
  }
  return out;
}

/** The scores, centred, from their residues modulo each plaintext modulus (Chinese remainder theorem). */
export function combineResidues(plan, residues) {
  const total = plan.moduli.reduce((a, b) => a * b, 1n);
  const inverse = (a, m) => { // a^-1 mod m, by the extended Euclidean algorithm
    let [r0, r1, x0, x1] = [a % m, m, 1n, 0n];
    while (r1 !== 0n) { const q = r0 / r1; [r0, r1, x0, x1] = [r1, r0 - q * r1, x1, x0 - q * x1]; }
    return ((x0 % m) + m) % m;
  };
  return residues[0].map((_, output) => {
    let value = 0n;
    plan.moduli.forEach((t, m) => {
      const rest = total / t;
      value += (((residues[m][output] % t) + t) % t) * rest * inverse(rest % t, t);
    });
    value %= total;
    return value > total / 2n ? value - total : value;
  });
}

function checkFeatureCount(plan, sample, index) {
  const length = sample?.length;
  if (typeof length !== 'number') throw new TypeError(`sample ${index} is not an array of features`);
  if (length !== plan.n_features) {
    throw new RangeError(`sample ${index} has ${length} features, but the model is expecting ${plan.n_features} `
      + 'features as input');
  }
}

/** Real-valued samples (as the model's scikit-learn estimator takes them) to the integers that are
 *  encrypted, feature by feature, as bfv/inputs.py `InputEncoding.encode`: the feature count is
 *  checked, and each value against its feature's declared range (`InputRangeError` naming the sample,
 *  the feature and the range), unless `clip`: then it is encoded as the nearest end of its range. */
export function encodeInputs(plan, samples, { clip = false } = {}) {
  const { max, offsets, scales, low, high } = plan.inputs;
  return Array.from(samples, (sample, i) => {
    checkFeatureCount(plan, sample, i);
    return Array.from(sample, (raw, j) => {
      let value = Number(raw);
      if (!Number.isFinite(value)) {
        throw new RangeError(`sample ${i}, feature ${j}: ${raw} is not a finite number; an encrypted model `
          + 'scores finite values only');
      }
      if (clip) {
        value = Math.min(high[j], Math.max(low[j], value));
      } else if (value < low[j] || value > high[j]) {
        throw new InputRangeError(`sample ${i}, feature ${j}: ${g(value)} is outside the range [${g(low[j])}, `
          + `${g(high[j])}] the model's inputs were declared for (pass {clip: true} to clip to it)`);
      }
      return Math.min(max, Math.max(-max, rint((value - offsets[j]) * scales[j])));
    });
  });
}

/** Integer inputs (the encrypted integers themselves; MNIST: pixels 0..255) checked before encryption:
 *  the feature count, and each value an integer in the range its feature's declared range encodes to. */
export function checkIntegerInputs(plan, samples) {
  const { lowInt, highInt } = plan.inputs;
  Array.from(samples, (sample, i) => {
    checkFeatureCount(plan, sample, i);
    for (let j = 0; j < sample.length; j++) {
      const value = Number(sample[j]);
      if (!Number.isInteger(value)) {
        throw new RangeError(`sample ${i}, feature ${j}: ${sample[j]} is not an integer input; encode real-valued `
          + 'features first (encode)');
      }
      if (value < lowInt[j] || value > highInt[j]) {
        throw new InputRangeError(`sample ${i}, feature ${j}: ${value} is outside the integer range `
          + `[${lowInt[j]}, ${highInt[j]}] the model's inputs were declared for`);
      }
    }
    return null;
  });
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
  /** A fresh key pair for `plan` (planFromDescription), or the given ternary secret (Int8Array).
   *  `withPublicKey: false` for a view of a secret whose public key was made already (a network's
   *  other rounds and moduli). */
  constructor(plan, secret = randomTernary(plan.n), { withPublicKey = true } = {}) {
    this.plan = plan;
    this.secret = Int8Array.from(secret);
    this.secretNtt = plan.primes.map((p) => nttTables(p, plan.n).forward(fromSigned(this.secret, p)));
    if (!withPublicKey) return;
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
      const product = nttTables(prime, n).inverse(this.timesSecret(seed, index, row));
      return product.map((v, j) => {
        const value = (prime - v + BigInt(error[j])) % prime;
        return value < 0n ? value + prime : value;
      });
    });
  }

  /** a*s modulo the data prime of `row`, in SEAL's NTT domain, a = expandUniform(seed, index). */
  timesSecret(seed, index, row) {
    const prime = this.plan.primes[row];
    const a = expandUniform(seed, index, row, prime, this.plan.n);
    const s = this.secretNtt[row];
    for (let j = 0; j < a.length; j++) a[j] = (a[j] * s[j]) % prime;
    return a;
  }

  /** c0 of one message in SEAL's NTT domain, NTT(e + round(Q*m/t)) - a*s (what a network's rounds
   *  multiply: the server transforms nothing of the request). */
  encryptMessageNtt(message, seed, index) {
    const { n, primes } = this.plan;
    const error = randomError(n);
    const scaled = this.scale(message);
    return primes.map((prime, row) => {
      const product = this.timesSecret(seed, index, row);
      const sum = nttTables(prime, n).forward(scaled[row].map((v, j) => {
        const value = (v + BigInt(error[j])) % prime;
        return value < 0n ? value + prime : value;
      }));
      return sum.map((v, j) => (v >= product[j] ? v - product[j] : v + prime - product[j]));
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

  /** A single-sample request: the inputs are the coefficients of m(X); split over `chunks`
   *  ciphertexts of `chunkFeatures` coefficients each where the plan says so (a network's rounds);
   *  with `nttC0`, each c0 in SEAL's NTT domain (a network's rounds, bfv/network_rounds.py). */
  encryptSingle(inputs, keyId, { nttC0 = false, seed = randomBytes(SEED_BYTES) } = {}) {
    const { chunks = 1, n, n_features: features } = this.plan;
    const width = chunks === 1 ? features : this.plan.chunkFeatures;
    const c0 = [];
    for (let chunk = 0; chunk < chunks; chunk++) {
      const message = new Array(n).fill(0n);
      for (let i = 0; i < width && chunk * width + i < features; i++) {
        message[i] = this.asMessage(inputs[chunk * width + i]);
      }
      c0.push(nttC0 ? this.encryptMessageNtt(message, seed, chunk) : this.encryptMessage(message, seed, chunk));
    }
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

  /** Plaintext values in [0, t) (BigInt, n_outputs) from a single-sample reply. */
  decryptResidues(reply) {
    return this.decryptSingle(reply, (value) => value);
  }

  /** Integer scores (n_outputs) from a single-sample reply (`read`: how a plaintext value is read). */
  decryptSingle(reply, read = (value) => this.centred(value)) {
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
        scores[output] = read(this.plain(BigInt(phase), bits));
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

/** A square network's keys (bfv/network_rounds.py `NetworkKeys`): one secret, its public key, and a view
 *  of the secret for each round and plaintext modulus; rounds are sent and read as the Python client does. */
export class NetworkKeys {
  static TOKEN_BYTES = 69;

  constructor(plan, secret = randomTernary(plan.n)) {
    this.plan = plan;
    this.keys = plan.rounds.map((plans, r) => plans.map((roundPlan, m) => (
      new ClientKeys(roundPlan, secret, { withPublicKey: r === 0 && m === 0 }))));
    this.publicKey = this.keys[0][0].publicKey;
  }

  exportSecret() {
    return this.keys[0][0].exportSecret();
  }

  static importSecret(plan, bytes) {
    return new NetworkKeys(plan, Int8Array.from(bytes, (v) => v - 1));
  }

  /** Round 0 for one sample of integer inputs: the inputs the first layer weighs (`sent_features`), one
   *  request per modulus, concatenated. */
  firstRequest(inputs, keyId) {
    const sent = this.plan.sent_features.map((index) => inputs[index]);
    return concat(this.keys[0].map((keys) => keys.encryptSingle(sent, keyId, { nttC0: true })));
  }

  /** (token, residues per modulus) of round `index`'s reply. */
  readRound(index, reply) {
    const last = index === this.plan.rounds.length - 1;
    let offset = last ? 0 : NetworkKeys.TOKEN_BYTES;
    const residues = this.keys[index].map((keys) => {
      const { groups, n, single_reply_bits: bits } = keys.plan;
      const values = groups.reduce((sum, group) => sum + group.length + n, 0);
      const size = 16 + Math.ceil(values / 8) * bits;
      const part = reply.subarray(offset, offset + size);
      offset += size;
      return keys.decryptResidues(part);
    });
    if (offset !== reply.length) throw new Error(`round ${index}'s reply is ${reply.length} bytes, ${offset} expected`);
    return { token: last ? new Uint8Array(0) : reply.subarray(0, NetworkKeys.TOKEN_BYTES), residues };
  }

  /** Round `index + 1` from round `index`'s reply: z^2 and B^d z under each modulus, then the token. */
  nextRequest(index, reply, keyId) {
    const { token, residues } = this.readRound(index, reply);
    const parts = this.keys[index + 1].map((keys, m) => (
      keys.encryptSingle(maskedFeatures(this.plan, residues[m], this.plan.moduli[m]), keyId, { nttC0: true })));
    return concat([...parts, token]);
  }

  /** The integer scores (BigInt) from the last round's reply. */
  scores(reply) {
    return combineResidues(this.plan, this.readRound(this.plan.rounds.length - 1, reply).residues);
  }
}

function concat(parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) { out.set(part, offset); offset += part.length; }
  return out;
}
