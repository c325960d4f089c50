// Test hook for the tests that run the JavaScript client in Node against a running service.
// stdin: {"url", "api_key", "model" (optional), "images": [[784]] | "features": [[n]], "batch_size"};
// stdout: {"labels", "scores", "request_bytes"}. Images are integer pixels (predict); features are
// real-valued, encoded by the client with the model's declared offsets and scales (predictFeatures).
import { readFileSync } from 'node:fs';
import { ScoringClient } from '../../web/scoring-client.js';

const input = JSON.parse(readFileSync(0, 'utf8'));
const client = new ScoringClient(input.url, { apiKey: input.api_key ?? undefined, model: input.model ?? undefined });
const options = { batchSize: input.batch_size };
const { labels, scores } = input.features
  ? await client.predictFeatures(input.features, options)
  : await client.predict(input.images, options);
process.stdout.write(JSON.stringify({ labels, scores, request_bytes: client.lastExchange.requestBytes,
  rounds: client.lastExchange.rounds ?? 1 }));
