// The JavaScript ring arithmetic against SEAL and Python (tests/js/fixtures.py).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chacha20 } from '../../web/vendor/noble-ciphers/chacha.js';
import { ClientKeys, batchDecode, batchEncode, planFromDescription } from '../../web/bfv.js';
import { expandUniform, nttTables, randomError, randomTernary } from '../../web/ring.js';
import { bigints, bytes, hex, reference } from './reference.mjs';

const plan = planFromDescription(reference.model);
const [prime] = plan.primes;

test('forward NTT equals SEAL’s, value for value; the inverse undoes it', () => {
  const input = bigints(reference.ntt.input);
  const output = nttTables(prime, plan.n).forward([...input]);
  assert.deepEqual(output, bigints(reference.ntt.output));
  assert.deepEqual(nttTables(prime, plan.n).inverse(output), input);
});

test('batch encoding modulo t equals SEAL’s BatchEncoder, and decodes back', () => {
  const slots = bigints(reference.batch.slots);
  const coefficients = batchEncode(slots, plan.t, plan.n);
  assert.deepEqual(coefficients, bigints(reference.batch.coefficients));
  assert.deepEqual(batchDecode(coefficients, plan.t, plan.n), slots);
});

test('ChaCha20 keystream equals Python’s (16-byte nonce = 4-byte counter + 12-byte nonce)', () => {
  const { key, nonce, stream } = reference.chacha20;
  const raw = bytes(nonce);
  const counter = new DataView(raw.buffer).getUint32(0, true);
  const out = chacha20(bytes(key), raw.subarray(4), new Uint8Array(stream.length / 2), undefined, counter);
  assert.equal(hex(out), stream);
});

test('seed expansion of a uniform polynomial equals Python’s expand_uniform', () => {
  const { seed, index, output } = reference.expand;
  assert.deepEqual(expandUniform(bytes(seed), index, 0, prime, plan.n), bigints(output));
});

test('round(Q m / t) equals Python’s scale_messages', () => {
  const keys = new ClientKeys(plan);
  assert.deepEqual(keys.scale(bigints(reference.scale.message)), [bigints(reference.scale.scaled)]);
});

test('secret and errors have the Python side’s distributions', () => {
  const secret = randomTernary(30000);
  for (const value of [-1, 0, 1]) {
    const share = secret.filter((v) => v === value).length / secret.length;
    assert.ok(Math.abs(share - 1 / 3) < 0.02, `${value}: ${share}`);
  }
  const errors = randomError(30000);
  const mean = errors.reduce((a, b) => a + b, 0) / errors.length;
  const variance = errors.reduce((a, b) => a + (b - mean) ** 2, 0) / errors.length;
  assert.ok(Math.abs(mean) < 0.1 && Math.abs(variance - 10.5) < 0.6, `mean ${mean}, variance ${variance}`);
  assert.ok(Math.max(...errors) <= 21 && Math.min(...errors) >= -21);
});
