// The Python side's reference values (tests/js/fixtures.py), computed once per test file.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseExactJson } from '../../web/bfv.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const python = process.env.PYTHON ?? `${root}.venv/bin/python`;

export const reference = parseExactJson(execFileSync(python, [`${root}tests/js/fixtures.py`], {
  cwd: root, maxBuffer: 64 << 20, encoding: 'utf8',
}));

export const bigints = (strings) => strings.map(BigInt);
export const bytes = (hex) => Uint8Array.from(Buffer.from(hex, 'hex'));
export const hex = (data) => Buffer.from(data).toString('hex');
