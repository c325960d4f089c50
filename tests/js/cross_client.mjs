// Test hook for tests/js/test_js_client_against_python.py: the JavaScript client under a secret shared with Python.
// stdin: {"model": /v1/model body, "secret": [-1|0|1 x N], "key_id", "images": [[784]],
//         "replies": {"single": hex, "batch": hex}}  (replies made for Python's requests)
// stdout: {"requests": {"single": hex, "batch": hex}, "scores": {"single": [...], "batch": [[...]]}}
import { readFileSync } from 'node:fs';
import { ClientKeys, parseExactJson, planFromDescription } from '../../web/bfv.js';

const input = parseExactJson(readFileSync(0, 'utf8'));
const keys = ClientKeys.importSecret(planFromDescription(input.model), input.secret.map((v) => v + 1));
const hex = (data) => Buffer.from(data).toString('hex');
const bytes = (text) => Uint8Array.from(Buffer.from(text, 'hex'));
process.stdout.write(JSON.stringify({
  requests: {
    single: hex(keys.encryptSingle(input.images[0], input.key_id)),
    batch: hex(await keys.encryptBatch(input.images, input.key_id)),
  },
  scores: {
    single: keys.decryptSingle(bytes(input.replies.single)),
    batch: keys.decryptBatch(bytes(input.replies.batch)),
  },
}));
