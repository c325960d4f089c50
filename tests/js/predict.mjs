// Test hook for tests/js/test_js_client_against_python.py: ScoringClient.predict in Node against a running service.
// stdin: {"url", "api_key", "images": [[784]], "batch_size"}; stdout: {"labels", "scores", "request_bytes"}
import { readFileSync } from 'node:fs';
import { ScoringClient } from '../../web/scoring-client.js';

const input = JSON.parse(readFileSync(0, 'utf8'));
const client = new ScoringClient(input.url, { apiKey: input.api_key ?? undefined });
const { labels, scores } = await client.predict(input.images, { batchSize: input.batch_size });
process.stdout.write(JSON.stringify({ labels, scores, request_bytes: client.lastExchange.requestBytes }));
