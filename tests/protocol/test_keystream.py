"""The keystream behind every secret, error and mask: it re-keys itself and can never reach the
block-counter wrap that makes cryptography's ChaCha20 fail every later read."""

from __future__ import annotations

import os
import threading

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from bfv.ring import REKEY_BLOCKS, KeyStream


class RecordedEntropy:
    """os.urandom's bytes, kept, so a test can recompute the exact stream they key."""

    def __init__(self, source=os.urandom) -> None:
        self.source, self.draws = source, []

    def __call__(self, count: int) -> bytes:
        self.draws.append(self.source(count))
        return self.draws[-1]

    def expected(self, block_counter: int, blocks_per_key: int) -> bytes:
        """Every key's first `blocks_per_key` blocks, counter starting at `block_counter`."""
        out = b""
        for nonce, key in zip(self.draws[0::2], self.draws[1::2]):
            counter = block_counter.to_bytes(4, "little")
            out += Cipher(algorithms.ChaCha20(key, counter + nonce), mode=None).encryptor().update(
                bytes(64 * blocks_per_key))
        return out


def _chacha20(key: bytes, counter: int, nonce: bytes):
    return Cipher(algorithms.ChaCha20(key, counter.to_bytes(4, "little") + nonce), mode=None).encryptor()


def test_stream_rekeys_at_the_interval_and_stays_the_exact_chacha20_stream() -> None:
    entropy = RecordedEntropy()
    stream = KeyStream(rekey_blocks=3, entropy=entropy)
    sizes = [1, 63, 64, 65, 200, 7, 1000, 3]  # reads that straddle every kind of key boundary
    produced = b"".join(stream.read(size) for size in sizes)
    keys = len(entropy.draws) // 2
    assert keys == -(-sum(sizes) // (3 * 64))  # a new key exactly when 3 blocks are used up
    assert produced == entropy.expected(0, 3)[: sum(sizes)]
    assert len({draw for draw in entropy.draws[1::2]}) == keys  # fresh keys, never reused


def test_stream_never_reaches_the_counter_wrap_that_killed_it() -> None:
    # The old stream took its block counter from os.urandom too: with these bytes it started at
    # 2^32 - 1, and cryptography raises on the second block, then on every read after it.
    entropy = RecordedEntropy(lambda count: b"\xff" * count)
    old = _chacha20(b"\xff" * 32, 2**32 - 1, b"\xff" * 12)
    old.update(bytes(64))
    with pytest.raises(ValueError):
        old.update(bytes(64))
    stream = KeyStream(rekey_blocks=4, entropy=entropy)
    produced = stream.read(64 * 10)  # across the old wrap and two re-keys
    assert produced == _chacha20(b"\xff" * 32, 0, b"\xff" * 12).update(bytes(64 * 4)) * 2 + \
        _chacha20(b"\xff" * 32, 0, b"\xff" * 12).update(bytes(64 * 2))


def test_real_interval_keeps_the_counter_below_the_wrap() -> None:
    # The last block one key serves is counter REKEY_BLOCKS - 1; ChaCha20 gives it, and the block
    # after it, without coming near 2^32 (the stream asks for neither: it re-keys first).
    assert REKEY_BLOCKS == 2**30
    key, nonce = os.urandom(32), os.urandom(12)
    assert len(_chacha20(key, REKEY_BLOCKS - 1, nonce).update(bytes(128))) == 128
    entropy = RecordedEntropy()
    stream = KeyStream(entropy=entropy)
    assert stream.read(100) == entropy.expected(0, 2)[:100]
    with pytest.raises(ValueError):
        KeyStream(rekey_blocks=2**32)


def test_each_thread_gets_its_own_key() -> None:
    entropy = RecordedEntropy()
    stream = KeyStream(entropy=entropy)
    stream.read(8)
    worker = threading.Thread(target=stream.read, args=(8,))
    worker.start()
    worker.join()
    assert len(entropy.draws) == 4 and entropy.draws[1] != entropy.draws[3]
