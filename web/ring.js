// Polynomials of Z_p[X]/(X^N + 1) for the v1 protocol, as arrays of BigInt residues.
//
// The transform must be SEAL's, value for value: the uniform polynomial `a` of every ciphertext is
// defined directly in SEAL's NTT domain (bfv/ring.py `expand_uniform`), and SEAL's BatchEncoder
// places slots through the same transform modulo the plaintext prime. SEAL uses the minimal
// primitive 2N-th root psi, powers stored in bit-reversed order, and a Cooley-Tukey forward
// transform whose output is in bit-reversed order; the inverse below undoes it stage by stage.
// tests: web/test/ring.test.mjs compares with SEAL's own output.

import { chacha20 } from './vendor/noble-ciphers/chacha.js';

export const SEED_BYTES = 32;
const ERROR_ETA = 21; // centred binomial, 21 + 21 coins, as bfv/ring.py
const EXPAND_COUNTER = 0x314e4945; // b"EIN1" read little-endian: the first 4 bytes of Python's 16-byte nonce

function powMod(base, exponent, modulus) {
  let result = 1n;
  base %= modulus;
  while (exponent > 0n) {
    if (exponent & 1n) result = (result * base) % modulus;
    base = (base * base) % modulus;
    exponent >>= 1n;
  }
  return result;
}

function invMod(value, modulus) {
  return powMod(value, modulus - 2n, modulus); // moduli are prime
}

export function reverseBits(value, bits) {
  let out = 0;
  for (let i = 0; i < bits; i++) out |= ((value >> i) & 1) << (bits - 1 - i);
  return out;
}

/** The smallest primitive 2n-th root of unity modulo `prime`, as SEAL picks it. */
function minimalRoot(prime, n) {
  const order = BigInt(2 * n);
  let root = 0n;
  for (let candidate = 2n; root === 0n; candidate++) {
    const r = powMod(candidate, (prime - 1n) / order, prime);
    if (powMod(r, BigInt(n), prime) === prime - 1n) root = r; // order exactly 2n
  }
  // Every primitive 2n-th root is root^k for odd k: take the smallest.
  const square = (root * root) % prime;
  let best = root;
  for (let k = 1, power = root; k < 2 * n; k += 2, power = (power * square) % prime) {
    if (power < best) best = power;
  }
  return best;
}

const tableCache = new Map();

/** Forward and inverse negacyclic NTT modulo `prime` for degree `n`, cached per (prime, n). */
export function nttTables(prime, n) {
  const key = `${prime}:${n}`;
  if (!tableCache.has(key)) tableCache.set(key, new NttTables(BigInt(prime), n));
  return tableCache.get(key);
}

class NttTables {
  constructor(prime, n) {
    this.prime = prime;
    this.n = n;
    const bits = Math.log2(n);
    const psi = minimalRoot(prime, n);
    this.roots = new Array(n);
    this.inverseRoots = new Array(n);
    const psiInverse = invMod(psi, prime);
    for (let i = 0, power = 1n, inverse = 1n; i < n; i++) {
      this.roots[reverseBits(i, bits)] = power;
      this.inverseRoots[reverseBits(i, bits)] = inverse;
      power = (power * psi) % prime;
      inverse = (inverse * psiInverse) % prime;
    }
    this.nInverse = invMod(BigInt(n), prime);
  }

  /** In place: coefficients -> SEAL's NTT domain. Values are reduced BigInts. */
  forward(a) {
    const { prime, n, roots } = this;
    for (let m = 1, gap = n >> 1; m < n; m <<= 1, gap >>= 1) {
      for (let i = 0, start = 0; i < m; i++, start += 2 * gap) {
        const root = roots[m + i];
        for (let j = start; j < start + gap; j++) {
          const x = a[j];
          const y = (a[j + gap] * root) % prime;
          a[j] = x + y >= prime ? x + y - prime : x + y;
          a[j + gap] = x >= y ? x - y : x + prime - y;
        }
      }
    }
    return a;
  }

  /** In place: the exact inverse of `forward`. */
  inverse(a) {
    const { prime, n, inverseRoots } = this;
    for (let m = n >> 1, gap = 1; m >= 1; m >>= 1, gap <<= 1) {
      for (let i = 0, start = 0; i < m; i++, start += 2 * gap) {
        const rootInverse = inverseRoots[m + i];
        for (let j = start; j < start + gap; j++) {
          const x = a[j];
          const y = a[j + gap];
          a[j] = x + y >= prime ? x + y - prime : x + y;
          a[j + gap] = ((x >= y ? x - y : x + prime - y) * rootInverse) % prime;
        }
      }
    }
    for (let j = 0; j < n; j++) a[j] = (a[j] * this.nInverse) % prime;
    return a;
  }
}

/** Polynomial `index` of the public uniform sequence of `seed`, for one prime (row `row`): NTT domain.
 *  Same stream as Python: ChaCha20 keyed by the seed, nonce (index, row, 0), 64-bit words masked to
 *  the prime's width, words not below the prime rejected. */
export function expandUniform(seed, index, row, prime, n) {
  prime = BigInt(prime);
  const mask = (1n << BigInt(prime.toString(2).length)) - 1n;
  const nonce = new Uint8Array(12);
  const view = new DataView(nonce.buffer);
  view.setUint32(0, index >>> 0, true);
  view.setUint32(4, row, true);
  const out = new Array(n);
  const blocks = Math.ceil((8 * (n + n / 8 + 16)) / 64);
  let filled = 0;
  for (let counter = EXPAND_COUNTER; filled < n; counter += blocks) {
    const stream = chacha20(seed, nonce, new Uint8Array(64 * blocks), undefined, counter);
    const words = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
    for (let offset = 0; offset < stream.length && filled < n; offset += 8) {
      const word = words.getBigUint64(offset, true) & mask;
      if (word < prime) out[filled++] = word;
    }
  }
  return out;
}

/** `count` cryptographically random bytes (getRandomValues takes at most 65,536 at a time). */
export function randomBytes(count) {
  const out = new Uint8Array(count);
  for (let start = 0; start < count; start += 65536) {
    crypto.getRandomValues(out.subarray(start, Math.min(count, start + 65536)));
  }
  return out;
}

/** Uniform ternary coefficients {-1, 0, 1}: bytes >= 243 are rejected, as in Python. */
export function randomTernary(n) {
  const out = new Int8Array(n);
  let filled = 0;
  while (filled < n) {
    for (const byte of randomBytes(n + (n >> 4) + 64)) {
      if (byte < 243 && filled < n) out[filled++] = (byte % 3) - 1;
    }
  }
  return out;
}

function popcount(value) {
  let count = 0;
  for (; value; value &= value - 1) count++;
  return count;
}

/** Centred binomial errors: popcount of 21 random bits minus popcount of 21 others. */
export function randomError(n) {
  const words = new Uint32Array(randomBytes(8 * n).buffer);
  const mask = (1 << ERROR_ETA) - 1;
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = popcount(words[2 * i] & mask) - popcount(words[2 * i + 1] & mask);
  return out;
}

/** Signed small integers as residues modulo `prime` (BigInt array). */
export function fromSigned(values, prime) {
  prime = BigInt(prime);
  return Array.from(values, (v) => (v < 0 ? prime + BigInt(v) : BigInt(v)));
}
