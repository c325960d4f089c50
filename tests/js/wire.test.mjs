// Wire messages and bit packing, byte for byte as bfv/wire.py writes them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planFromDescription } from '../../web/bfv.js';
import { KIND, pack, readReply, unpack, writePublicKey, writeReply, writeRequest } from '../../web/wire.js';
import { bigints, bytes, hex, reference } from './reference.mjs';

const plan = planFromDescription(reference.model);
const wire = reference.wire;
const c0 = bigints(wire.c0);
const n = plan.n;
const ciphertexts = [[c0.slice(0, n)], [c0.slice(n)]];

test('public key bytes equal Python’s', () => {
  assert.equal(hex(writePublicKey(plan.profile, bytes(wire.seed), ciphertexts[0], plan.primes)), wire.public_key);
});

test('request bytes equal Python’s', () => {
  const request = writeRequest(KIND.BATCH, plan.profile, 3, wire.key_id, bytes(wire.seed), ciphertexts, plan.primes);
  assert.equal(hex(request), wire.request);
});

test('replies round-trip and read as Python wrote them', () => {
  const values = bigints(wire.reply_values);
  const bits = plan.single_reply_bits;
  assert.equal(hex(writeReply(KIND.SINGLE, 1, bits, values)), wire.reply);
  assert.deepEqual(readReply(bytes(wire.reply), KIND.SINGLE, bits, values.length), { images: 1, values });
  assert.throws(() => readReply(bytes(wire.reply), KIND.BATCH, bits, values.length), /does not match/);
  assert.throws(() => readReply(bytes(wire.reply).subarray(0, 40), KIND.SINGLE, bits, values.length), /cannot hold/);
});

test('packing at a width that is not a multiple of 4 equals Python’s', () => {
  const { width, values, packed } = wire.odd_width;
  assert.equal(hex(pack(bigints(values), width)), packed);
  assert.deepEqual(unpack(bytes(packed), values.length, width), bigints(values));
});
