"""Reference values from the Python side (SEAL, cryptography's ChaCha20, bfv.wire) for the
JavaScript client's unit tests: `python tests/js/fixtures.py` prints one JSON object.

Fixed inputs (numpy seed 15), so a failure names the first differing value on either side.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from model import BUNDLED_MODEL_DIR, DEFAULT_MODEL_FILE
from model.loading import load_linear_model
from bfv import bitpack
from bfv.plan import build_plan
from bfv.ring import expand_uniform, scale_messages
from bfv.seal_ring import SealRing
from bfv.wire import Kind, PublicKey, Request, reply_header, write_public_key, write_request


def _strings(values: np.ndarray) -> list[str]:
    return [str(int(v)) for v in np.asarray(values).reshape(-1)]


def fixtures() -> dict:
    plan = build_plan(load_linear_model(BUNDLED_MODEL_DIR / DEFAULT_MODEL_FILE)).public
    params = plan.params
    ring = SealRing(params)
    rng = np.random.default_rng(15)
    prime, t, degree = params.data_primes[0], params.plain_modulus, params.degree
    poly = rng.integers(0, prime, size=(1, degree), dtype=np.uint64)
    transformed = ring.polys(ring.to_ntt(np.stack([poly, np.ones_like(poly)])))[0]
    slots = rng.integers(0, t, size=degree, dtype=np.uint64)
    key, nonce = bytes(range(32)), bytes(range(100, 116))
    stream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(1024))
    seed = bytes(range(7, 39))
    message = rng.integers(0, t, size=(1, degree), dtype=np.uint64)
    c0 = rng.integers(0, prime, size=(2, 1, degree), dtype=np.uint64)
    reply_values = rng.integers(0, 1 << plan.single_reply_bits, size=37, dtype=np.uint64)
    return {
        "model": plan.describe(),
        "ntt": {"input": _strings(poly), "output": _strings(transformed)},
        "batch": {"slots": _strings(slots), "coefficients": _strings(ring.batch_encode(slots))},
        "chacha20": {"key": key.hex(), "nonce": nonce.hex(), "stream": stream.hex()},
        "expand": {"seed": seed.hex(), "index": 3, "output": _strings(expand_uniform(seed, 3, params.data_primes, degree))},
        "scale": {"message": _strings(message),
                  "scaled": _strings(scale_messages(message, params.data_primes, t))},
        "wire": {
            "seed": seed.hex(), "c0": _strings(c0), "key_id": "ab" * 32,
            "public_key": write_public_key(PublicKey(seed=seed, pk0=c0[0]), params).hex(),
            "request": write_request(Request(Kind.BATCH, 3, "ab" * 32, seed, c0), params).hex(),
            "reply_values": _strings(reply_values),
            "reply": bitpack.pack(reply_values, plan.single_reply_bits,
                                  prefix=reply_header(Kind.SINGLE, 1, plan.single_reply_bits, reply_values.size)).hex(),
            "odd_width": {"width": 13, "values": _strings(reply_values % (1 << 13)),
                          "packed": bitpack.pack(reply_values % (1 << 13), 13).hex()},
        },
    }


if __name__ == "__main__":
    json.dump(fixtures(), sys.stdout)
