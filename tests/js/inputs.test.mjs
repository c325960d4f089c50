// Input checks and encoding before encryption: the feature count, each feature's declared range, and
// real values encoded with the model's offsets and scales exactly as bfv/inputs.py encodes them.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { InputRangeError, checkIntegerInputs, encodeInputs, planFromDescription } from '../../web/bfv.js';
import { ScoringClient } from '../../web/scoring-client.js';

// The compact profile's parameters (bfv/params.py), for a model of three features.
const RING = {
  protocol: 'ei-native-1', scheme: 'bfv', profile: 'compact', poly_modulus_degree: 4096,
  coeff_modulus: [1152921504606830593n], special_modulus: [], plain_modulus: 4294828033,
  n_features: 3, n_outputs: 1, classes: [0, 1], groups: [[0]], score_scale: 1000.5, weight_bits: 12,
  flooding_bits: 0, single_reply_bits: 40, batch_reply_bits: 40, max_batch: 4096,
};
// From Python: InputEncoding.from_ranges([-4, 0.5, -1000], [4, 2.25, 3000], 8191), its encode(SAMPLES).
const ENCODING = {
  input_max: 8191, input_offsets: [0.0, 1.375, 1000.0], input_scales: [2047.75, 9361.142857142857, 4.0955],
  input_low: [-4.0, 0.5, -1000.0], input_high: [4.0, 2.25, 3000.0],
};
const SAMPLES = [[0.25, 0.5, -1000.0], [-0.75, 2.25, 3000.0], [1.1, 1.3, 17.77], [-3.3, 0.61, 2999.9],
  [1.0007637328373358, 0.8941125824835358, -978.9387817377011],
  [3.177710407756604, 1.0252909985946446, 2284.913673531065],
  [2.205485521961548, 2.0287185294434584, 2188.2777150081847]];
const ENCODED = [[512, -8191, -8191], [-1536, 8191, 8191], [2253, -702, -4023], [-6758, -7161, 8191],
  [2049, -4502, -8105], [6507, -3274, 5262], [4516, 6120, 4867]];

const plan = planFromDescription({ ...RING, ...ENCODING });

test('real-valued features encode to the integers Python encodes them to', () => {
  assert.deepEqual(encodeInputs(plan, SAMPLES), ENCODED);
  assert.deepEqual(encodeInputs(plan, SAMPLES.map((row) => Float64Array.from(row))), ENCODED);
});

test('ties round to even, as numpy rint does', () => {
  const ties = planFromDescription({
    ...RING, n_features: 1, input_max: 8, input_offsets: [0], input_scales: [2], input_low: [-4], input_high: [4],
  });
  assert.deepEqual(encodeInputs(ties, [[0.25], [0.75], [-0.25], [-0.75], [1.25]]).flat(), [0, 2, 0, -2, 2]);
});

test('a value outside its declared range names the sample, the feature and the range, unless clipped', () => {
  assert.throws(() => encodeInputs(plan, [[0, 1, 0], [0, 3, 0]]), (error) => error instanceof InputRangeError
    && error.message === "sample 1, feature 1: 3 is outside the range [0.5, 2.25] the model's inputs were "
      + 'declared for (pass {clip: true} to clip to it)');
  assert.throws(() => encodeInputs(plan, [[-4.5, 1, 0]]), /sample 0, feature 0: -4.5 is outside the range \[-4, 4\]/);
  assert.deepEqual(encodeInputs(plan, [[-4.5, 3, 1e9]], { clip: true }), encodeInputs(plan, [[-4, 2.25, 3000]]));
});

test('the feature count and finite values are checked', () => {
  assert.throws(() => encodeInputs(plan, [[0, 1]]),
    /^RangeError: sample 0 has 2 features, but the model is expecting 3 features as input$/);
  assert.throws(() => encodeInputs(plan, [[0, 1, 0, 0]]), /sample 0 has 4 features/);
  assert.throws(() => encodeInputs(plan, [[0, Number.NaN, 0]]), /sample 0, feature 1: NaN is not a finite number/);
  assert.throws(() => encodeInputs(plan, [[0, 1, Infinity]], { clip: true }), /feature 2: Infinity is not a finite/);
  assert.throws(() => encodeInputs(plan, [5]), /sample 0 is not an array of features/);
});

test('integer inputs are checked against the integers their declared range encodes to (MNIST: pixels 0..255)', () => {
  const mnist = planFromDescription({
    ...RING, n_features: 4, input_max: 255, input_offsets: [0, 0, 0, 0], input_scales: [255, 255, 255, 255],
    input_low: [0, 0, 0, 0], input_high: [1, 1, 1, 1],
  });
  checkIntegerInputs(mnist, [[0, 255, 7, 128], new Uint8Array(4)]);
  assert.throws(() => checkIntegerInputs(mnist, [[0, 256, 0, 0]]), (error) => error instanceof InputRangeError
    && error.message === "sample 0, feature 1: 256 is outside the integer range [0, 255] the model's inputs "
      + 'were declared for');
  assert.throws(() => checkIntegerInputs(mnist, [[0, 0, -1, 0]]), /feature 2: -1 is outside the integer range/);
  assert.throws(() => checkIntegerInputs(mnist, [[0, 0, 0.5, 0]]), /feature 2: 0.5 is not an integer input/);
  assert.throws(() => checkIntegerInputs(mnist, [new Uint8Array(784)]), /has 784 features, but the model is expecting 4/);
  checkIntegerInputs(plan, [[8191, -8191, 0]]);
  assert.throws(() => checkIntegerInputs(plan, [[8192, 0, 0]]), /integer range \[-8191, 8191\]/);
});

test('ScoringClient refuses samples that do not fit the model before encrypting or posting any', async () => {
  const seen = [];
  const description = JSON.stringify({ ...RING, ...ENCODING }, (_, v) => (typeof v === 'bigint' ? `BIG${v}` : v))
    .replace(/"BIG(\d+)"/g, '$1'); // the primes as JSON numbers, as the service writes them
  const server = createServer((request, response) => {
    seen.push(`${request.method} ${request.url}`);
    request.resume();
    request.on('end', () => {
      if (request.url === '/v1/model') {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(description);
      } else {
        response.writeHead(201, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ key_id: 'ab'.repeat(32), bytes: 0 }));
      }
    });
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  try {
    const client = new ScoringClient(`http://127.0.0.1:${server.address().port}`);
    assert.deepEqual(await client.encode(SAMPLES), ENCODED);
    await assert.rejects(client.predictFeatures([[0, 1, 0], [0, 3, 0]]),
      (error) => error instanceof InputRangeError && /sample 1, feature 1: 3 is outside the range \[0.5, 2.25\]/.test(error.message));
    await assert.rejects(client.predictFeatures([[0, 1]]), /sample 0 has 2 features, but the model is expecting 3/);
    await assert.rejects(client.predict([[0, 9000, 0]]), /feature 1: 9000 is outside the integer range \[-8191, 8191\]/);
    await assert.rejects(client.predict([new Uint8Array(784)]), /has 784 features, but the model is expecting 3/);
    assert.deepEqual(seen, ['GET /v1/model', 'POST /v1/keys']); // nothing was sent to be scored
  } finally {
    server.close();
  }
});

test('a network description whose sent_features are not round 0 inputs in order is refused', () => {
  const network = {
    ...RING, ...ENCODING, model_kind: 'square-network', profile: 'compact-2048', poly_modulus_degree: 2048,
    plain_moduli: [1073692673], digit_bits: 8, digits: 4, batch: null,
    rounds: [{ n_features: 2, n_outputs: 2, chunks: 1, groups: [[0, 1]], weight_bits: 5, reply_bits: [40],
      flooding_bits: [0] }, { n_features: 10, n_outputs: 1, chunks: 1, groups: [[0]], weight_bits: 9,
      reply_bits: [40], flooding_bits: [0] }],
  };
  assert.deepEqual(planFromDescription({ ...network, sent_features: [0, 2] }).sent_features, [0, 2]);
  for (const sent of [undefined, [], [0], [2, 0], [1, 1], [0, 3], [-1, 2], [0, 1.5], [0, '2']]) {
    assert.throws(() => planFromDescription({ ...network, sent_features: sent }), /sent_features must be/);
  }
});
