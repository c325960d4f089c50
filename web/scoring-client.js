// ScoringClient: the v1 protocol from a browser or Node 20, as client/scoring.py.
//
//   const client = new ScoringClient('http://127.0.0.1:8000', { apiKey });
//   const { labels, scores } = await client.predict(images);            // one request per image
//   const { labels, scores } = await client.predict(images, { batchSize: 64 });
//   const { labels, scores } = await client.predictFeatures(rows, { clip: false });  // any model's features
//
// On first use the client fetches the model's parameters (GET /v1/model), makes a key pair and
// uploads the public key (POST /v1/keys). `predict` takes the encrypted integers themselves: arrays
// or typed arrays of integers, for the linear MNIST model the 784 pixels 0..255 (mnist-square encodes
// pixels / 255 on its own levels: give it `predictFeatures`). `predictFeatures` takes real-valued
// features as the model's scikit-learn estimator does and encodes them first (`encode`, with each
// feature's offset and scale from the description). Both check the feature count and each feature's
// declared range (input_low / input_high) before encrypting anything: a value outside it is an
// `InputRangeError` naming the sample, the feature and the range (`clip: true` clips real values to
// their range instead). Only ciphertexts leave the client; the secret key stays in this object.
//
// `model` names a served model (default: the service's default model). A square network
// (`"model_kind": "square-network"`) is scored in rounds, one request per round for each sample: the
// client decrypts each round's masked values, squares them and sends them back (NetworkKeys in bfv.js).

import {
  ClientKeys, InputRangeError, NetworkKeys, checkIntegerInputs, encodeInputs, parseExactJson, planFromDescription,
} from './bfv.js';

export { InputRangeError };

const BINARY = { 'content-type': 'application/octet-stream' };
const now = () => globalThis.performance.now();

export class ScoringFailed extends Error {}

export class ScoringClient {
  /** `options.apiKey`: sent as `Authorization: Bearer` on every request. `options.secret`: a key
   *  exported by `exportSecret()` to use instead of a fresh one. `options.model`: a served model's name. */
  constructor(baseUrl, { apiKey, secret, model } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.secret = secret;
    this.prefix = model ? `/v1/models/${encodeURIComponent(model)}` : '/v1';
    this.lastExchange = null; // timings and bytes of the latest request, for display
    this.starting = null;
  }

  /** One request. Every request here is idempotent (scoring changes nothing; a key's id is its
   *  hash), so one that fails on the network (a kept-alive connection the server closed while this
   *  client was busy encrypting) is sent once more, on a new connection. */
  async call(method, path, body) {
    const headers = body ? { ...BINARY } : {};
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    const send = () => fetch(this.baseUrl + path, { method, headers, body });
    const response = await send().catch((error) => {
      if (error instanceof TypeError) return send(); // fetch's network failure
      throw error;
    });
    if (!response.ok) {
      let message = await response.text();
      try { message = JSON.parse(message).message ?? message; } catch { /* not JSON: keep the text */ }
      throw new ScoringFailed(`${method} ${path} answered ${response.status}: ${message}`);
    }
    return response;
  }

  /** Fetch the model, make the keys and upload the public one; once. */
  ready() {
    this.starting ??= (async () => {
      const described = this.prefix === '/v1' ? '/v1/model' : this.prefix;
      this.model = parseExactJson(await (await this.call('GET', described)).text());
      this.plan = planFromDescription(this.model);
      const started = now();
      const Keys = this.plan.network ? NetworkKeys : ClientKeys;
      this.keys = this.secret ? Keys.importSecret(this.plan, this.secret) : new Keys(this.plan);
      this.keygenMs = now() - started;
      const stored = await (await this.call('POST', `${this.prefix}/keys`, this.keys.publicKey)).json();
      this.keyId = stored.key_id;
    })();
    this.starting.catch(() => { this.starting = null; }); // a failed start (say, a 503 while loading) is retried
    return this.starting;
  }

  exportSecret() {
    return this.keys.exportSecret();
  }

  /** One round trip: encrypt, post, decrypt; integer scores per sample. */
  async exchange(path, samples, encrypt, decrypt) {
    const started = now();
    const request = await encrypt(samples);
    const sent = now();
    const reply = new Uint8Array(await (await this.call('POST', path, request)).arrayBuffer());
    const received = now();
    const scores = decrypt(reply);
    this.lastExchange = {
      samples: samples.length, request, requestBytes: request.length, replyBytes: reply.length,
      encryptMs: sent - started, waitMs: received - sent, decryptMs: now() - received,
    };
    return scores;
  }

  /** A square network's integer scores (BigInt): each sample through every round, one request each. */
  async networkScores(samples, batchSize) {
    if (batchSize !== 1) throw new ScoringFailed('a square network is scored one sample per request (in rounds)');
    const rounds = this.plan.rounds.length;
    const scores = [];
    for (const sample of samples) {
      const totals = { requestBytes: 0, replyBytes: 0, encryptMs: 0, waitMs: 0, decryptMs: 0 };
      let started = now();
      let request = this.keys.firstRequest(Array.from(sample), this.keyId);
      const first = request;
      for (let index = 0; index < rounds; index++) {
        const sent = now();
        const reply = new Uint8Array(await (await this.call('POST', `${this.prefix}/score/rounds/${index}`, request))
          .arrayBuffer());
        const received = now();
        totals.encryptMs += sent - started;
        totals.waitMs += received - sent;
        totals.requestBytes += request.length;
        totals.replyBytes += reply.length;
        if (index === rounds - 1) {
          scores.push(this.keys.scores(reply));
        } else {
          request = this.keys.nextRequest(index, reply, this.keyId);
        }
        started = now();
        totals.decryptMs += started - received;
      }
      this.lastExchange = { samples: 1, request: first, rounds, ...totals };
    }
    return scores;
  }

  /** Real-valued samples (features as the scikit-learn estimator takes them) to the integers that are
   *  encrypted; throws `InputRangeError` for a value outside its feature's declared range unless `clip`. */
  async encode(samples, { clip = false } = {}) {
    await this.ready();
    return encodeInputs(this.plan, samples, { clip });
  }

  /** Exact integer scores (samples x n_outputs) of integer inputs, checked against the model first. */
  async integerScores(samples, { batchSize = 1 } = {}) {
    await this.ready();
    checkIntegerInputs(this.plan, samples);
    if (this.plan.network) return this.networkScores(samples, batchSize);
    const step = Math.max(1, Math.min(batchSize, this.plan.max_batch));
    const scores = [];
    for (let start = 0; start < samples.length; start += step) {
      const chunk = Array.from(samples.slice(start, start + step), (sample) => Array.from(sample));
      if (step === 1) {
        scores.push(await this.exchange(`${this.prefix}/score`, chunk, (c) => this.keys.encryptSingle(c[0], this.keyId),
          (reply) => [this.keys.decryptSingle(reply)]));
      } else {
        scores.push(await this.exchange(`${this.prefix}/score/batch`, chunk,
          (c) => this.keys.encryptBatch(c, this.keyId),
          (reply) => this.keys.decryptBatch(reply)));
      }
    }
    return scores.flat();
  }

  /** Labels and real-valued scores of real-valued samples (`encode`), as the plaintext scikit-learn model gives them. */
  async predictFeatures(samples, { batchSize = 1, clip = false } = {}) {
    return this.predict(await this.encode(samples, { clip }), { batchSize });
  }

  /** Labels and real-valued scores of integer inputs (MNIST: pixels), as the plaintext scikit-learn model gives them. */
  async predict(images, { batchSize = 1 } = {}) {
    const integers = await this.integerScores(images, { batchSize });
    const scores = integers.map((row) => row.map((v) => Number(v) / this.plan.score_scale));
    const classes = this.plan.classes;
    const labels = scores.map((row) => {
      const index = row.length === 1 ? Number(row[0] > 0) : row.indexOf(Math.max(...row));
      return classes ? classes[index] : index;
    });
    return { labels, scores };
  }
}
