// ScoringClient's HTTP side against a stand-in server: the API key on every request, errors as messages.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { test } from 'node:test';
import { ScoringClient, ScoringFailed } from '../../web/scoring-client.js';

test('the API key goes as a bearer token, a refusal becomes the service’s message, and start-up is retried', async () => {
  const seen = [];
  const server = createServer((request, response) => {
    seen.push([request.method, request.url, request.headers.authorization]);
    response.writeHead(401, { 'content-type': 'application/json' });
    response.end(JSON.stringify({ message: 'missing or unknown API key' }));
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  try {
    const client = new ScoringClient(`http://127.0.0.1:${server.address().port}/`, { apiKey: 'k-123' });
    await assert.rejects(client.predict([new Uint8Array(784)]),
      (error) => error instanceof ScoringFailed && /GET \/v1\/model answered 401: missing or unknown API key/.test(error.message));
    await assert.rejects(client.predict([new Uint8Array(784)]), ScoringFailed);
    assert.deepEqual(seen, [['GET', '/v1/model', 'Bearer k-123'], ['GET', '/v1/model', 'Bearer k-123']]);
  } finally {
    server.close();
  }
});

test('a request the server drops on the network is sent once more, on a new connection', async () => {
  let attempts = 0;
  const server = createServer((request, response) => {
    attempts += 1;
    if (attempts === 1) {
      request.socket.destroy(); // as a server closing a kept-alive connection under the client
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end('{"ok": true}');
  });
  await new Promise((resolve) => { server.listen(0, '127.0.0.1', resolve); });
  try {
    const client = new ScoringClient(`http://127.0.0.1:${server.address().port}`);
    const response = await client.call('POST', '/v1/score', new Uint8Array(1024));
    assert.deepEqual(await response.json(), { ok: true });
    assert.equal(attempts, 2);
  } finally {
    server.close();
  }
});
