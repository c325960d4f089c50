"""The client's encryption and decryption, and the ring helpers they share with the server, give
the same bytes and scores as the straightforward arithmetic they replaced, for the same keystream.

`ReferenceKeys` below is that arithmetic (one ciphertext's a * s per SEAL call, residues reduced
with `np.mod` and `np.where`); it draws from the keystream in the same order as `ClientKeys`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from model.loading import linear_model_from_estimator
from bfv import bitpack, encryption, ring
from bfv.inputs import InputEncoding
from bfv.encryption import PUBLIC_KEY_INDEX, ClientKeys
from bfv.params import PROFILES
from bfv.plan import PublicPlan, build_plan
from bfv.ring import ERROR_ETA, SEED_BYTES, KeyStream, expand_uniform, round_scale
from bfv.seal_ring import SealRing
from bfv.wire import Kind, PublicKey, Request, key_id, read_reply, reply_header, write_public_key, write_request

_U64 = np.uint64


def _mul_small(x: np.ndarray, y: np.ndarray | int, p: np.ndarray | int) -> np.ndarray:
    x, y, p = (np.asarray(v, dtype=_U64) for v in (x, y, p))
    quotient = np.floor(x.astype(np.float64) * y.astype(np.float64) / p.astype(np.float64)).astype(_U64)
    remainder = (x * y - quotient * p).astype(np.int64)
    remainder = np.where(remainder < 0, remainder + p.astype(np.int64), remainder)
    return np.where(remainder >= p.astype(np.int64), remainder - p.astype(np.int64), remainder).astype(_U64)


def _add_mod(x: np.ndarray, y: np.ndarray, p: np.ndarray | int) -> np.ndarray:
    total = np.asarray(x, dtype=_U64) + np.asarray(y, dtype=_U64)
    return np.where(total >= p, total - np.asarray(p, dtype=_U64), total)


def _from_signed(values: np.ndarray, primes: Sequence[int]) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)[..., None, :]
    return np.mod(values, np.array(primes, dtype=np.int64)[:, None]).astype(_U64)


def _scale_messages(messages: np.ndarray, primes: Sequence[int], plain_modulus: int) -> np.ndarray:
    modulus = int(np.prod([int(p) for p in primes], dtype=object))
    messages = np.asarray(messages, dtype=_U64)
    rounding = (messages * _U64(modulus % plain_modulus) + _U64(plain_modulus // 2)) // _U64(plain_modulus)
    scaled = np.stack([_mul_small(np.full(messages.shape, (modulus // plain_modulus) % prime, dtype=_U64),
                                  messages, prime) for prime in primes], axis=-2)
    moduli = np.array(primes, dtype=_U64)[:, None]
    return _add_mod(scaled, rounding[..., None, :] % moduli, moduli)


def _random_error(shape: tuple[int, ...]) -> np.ndarray:
    raw = np.frombuffer(ring.random_bytes(8 * int(np.prod(shape))), dtype=np.uint64)
    coins = np.bitwise_count(raw & _U64((1 << ERROR_ETA) - 1)).astype(np.int64)
    coins -= np.bitwise_count((raw >> _U64(ERROR_ETA)) & _U64((1 << ERROR_ETA) - 1)).astype(np.int64)
    return coins.reshape(shape)


class ReferenceKeys:
    """The client as it was: every product of a with s in its own SEAL call, beside a copy of itself."""

    def __init__(self, plan: PublicPlan) -> None:
        self.plan, self.ring = plan, SealRing(plan.params)
        self._primes = plan.params.data_primes
        self._moduli = np.array(self._primes, dtype=_U64)[:, None]
        self._secret = ring.random_ternary(plan.degree)
        self._secret_ntt = self.ring.ntt_plaintext(_from_signed(self._secret, self._primes))
        seed = ring.random_bytes(SEED_BYTES)
        pk0 = self._encrypt_zero(seed, PUBLIC_KEY_INDEX)
        self.public_key = write_public_key(PublicKey(seed=seed, pk0=pk0), plan.params)
        self.key_id = key_id(self.public_key)

    def _times_secret(self, polys_ntt: np.ndarray) -> np.ndarray:
        pair = polys_ntt if polys_ntt.shape[0] == 2 else np.concatenate([polys_ntt, polys_ntt])
        ciphertext = self.ring.ciphertext(pair, ntt_form=True)  # SEAL's own product and transform, as before
        self.ring.evaluator.multiply_plain_inplace(ciphertext, self._secret_ntt)
        return np.array(self.ring.from_ntt(ciphertext))[: polys_ntt.shape[0]]

    def _encrypt_zero(self, seed: bytes, index: int) -> np.ndarray:
        a_ntt = expand_uniform(seed, index, self._primes, self.plan.degree)[None]
        minus_as = (self._moduli - self._times_secret(a_ntt)[0]) % self._moduli
        return _add_mod(minus_as, _from_signed(_random_error((self.plan.degree,)), self._primes), self._moduli)

    def _encrypt(self, messages: np.ndarray, seed: bytes) -> np.ndarray:
        count, degree = messages.shape
        c0 = np.empty((count, len(self._primes), degree), dtype=_U64)
        for start in range(0, count, 2):
            stop = min(start + 2, count)
            a_ntt = np.stack([expand_uniform(seed, index, self._primes, degree) for index in range(start, stop)])
            c0[start:stop] = (self._moduli - self._times_secret(a_ntt)) % self._moduli
        noise = _from_signed(_random_error((count, degree)), self._primes)
        scaled = _scale_messages(messages, self._primes, self.plan.params.plain_modulus)
        return _add_mod(_add_mod(c0, noise, self._moduli), scaled, self._moduli)

    def _as_message(self, values: np.ndarray) -> np.ndarray:
        return np.mod(np.asarray(values, dtype=np.int64), self.plan.params.plain_modulus).astype(_U64)

    def encrypt_single(self, inputs: np.ndarray) -> bytes:
        message = np.zeros((1, self.plan.degree), dtype=np.int64)
        message[0, : self.plan.n_features] = inputs
        seed = ring.random_bytes(SEED_BYTES)
        c0 = self._encrypt(self._as_message(message), seed)
        return write_request(Request(Kind.SINGLE, 1, self.key_id, seed, c0), self.plan.params)

    def encrypt_batch(self, inputs: np.ndarray) -> bytes:
        slots = np.zeros((self.plan.n_features, self.plan.degree), dtype=_U64)
        slots[:, : inputs.shape[0]] = self._as_message(inputs.T)
        messages = np.stack([self.ring.batch_encode(row) for row in slots])
        seed = ring.random_bytes(SEED_BYTES)
        c0 = self._encrypt(messages, seed)
        return write_request(Request(Kind.BATCH, inputs.shape[0], self.key_id, seed, c0), self.plan.params)

    def decrypt_single(self, reply: bytes) -> np.ndarray:
        plan, bits, t = self.plan, self.plan.single_reply_bits, self.plan.params.plain_modulus
        sizes = [len(group) + plan.degree for group in plan.groups]
        _, values = read_reply(reply, Kind.SINGLE, bits, sum(sizes))
        scores = np.zeros(plan.n_outputs, dtype=np.int64)
        offset = 0
        for group, outputs in enumerate(plan.groups):
            c0 = values[offset : offset + len(outputs)].astype(np.int64)
            c1 = values[offset + len(outputs) : offset + sizes[group]].astype(object)
            offset += sizes[group]
            for row, (output, position) in enumerate(zip(outputs, plan.result_positions(group))):
                # (c1 * s)[position] of the negacyclic product, in Python integers
                c1_s = sum(int(c1[k]) * int(self._secret[position - k]) for k in range(position + 1))
                c1_s -= sum(int(c1[k]) * int(self._secret[position - k + plan.degree])
                            for k in range(position + 1, plan.degree))
                phase = (int(c0[row]) + c1_s) % (1 << bits)
                value = int(round_scale(np.array([phase], dtype=_U64), t, bits)[0]) % t
                scores[output] = value - t if value > t // 2 else value
        return scores


def _deterministic_stream(label: bytes) -> Callable[[int], bytes]:
    """A keystream whose keys and nonces come from `label`, the same on every call of this function."""
    counter = iter(range(1 << 30))

    def entropy(count: int) -> bytes:
        return (label + next(counter).to_bytes(4, "little")).ljust(count, b"\0")[:count]

    return KeyStream(entropy=entropy).read


@pytest.fixture(params=sorted(PROFILES))
def plan(request: pytest.FixtureRequest, bundled_estimator: object) -> PublicPlan:
    return build_plan(linear_model_from_estimator(bundled_estimator), InputEncoding.pixels(784), request.param).public


def _keys_on_stream(monkeypatch: pytest.MonkeyPatch, make: Callable[[PublicPlan], object], plan: PublicPlan,
                    label: bytes) -> object:
    stream = _deterministic_stream(label)
    monkeypatch.setattr(ring, "random_bytes", stream)
    monkeypatch.setattr(encryption, "random_bytes", stream)
    return make(plan)


def test_requests_are_the_bytes_the_reference_arithmetic_gives(monkeypatch, plan, mnist_test_images) -> None:
    """Singles and batches interleaved, so any seed or product kept between requests is exercised."""
    images = mnist_test_images[0][:5].reshape(5, -1).astype(np.int64)
    signed = np.arange(plan.n_features, dtype=np.int64) % 511 - 255  # negative inputs as well
    steps: list[tuple[str, np.ndarray]] = [("single", images[0]), ("single", images[1]), ("single", signed),
                                           ("batch", images[:3]), ("single", images[2]), ("batch", images[3:]),
                                           ("batch", images[:1]), ("single", images[4])]
    bodies = []
    for make in (ClientKeys, ReferenceKeys):
        keys = _keys_on_stream(monkeypatch, make, plan, b"requests")
        bodies.append([keys.public_key] + [keys.encrypt_single(x) if kind == "single" else keys.encrypt_batch(x)
                                           for kind, x in steps])
    assert bodies[0] == bodies[1]


def test_single_replies_decrypt_as_the_reference_does(monkeypatch, plan) -> None:
    """Replies of uniformly random values (not only ones the server would send) decrypt alike."""
    keys = _keys_on_stream(monkeypatch, ClientKeys, plan, b"decrypt")
    reference = _keys_on_stream(monkeypatch, ReferenceKeys, plan, b"decrypt")
    bits = plan.single_reply_bits
    count = sum(len(group) + plan.degree for group in plan.groups)
    generator = np.random.default_rng(0)
    for _ in range(3):
        reply = bitpack.pack(generator.integers(0, 1 << bits, count, dtype=_U64), bits,
                            prefix=reply_header(Kind.SINGLE, 1, bits, count))
        assert (keys.decrypt_single(reply) == reference.decrypt_single(reply)).all()


PRIMES = (1152921504606830593, 1152921504606748673)  # two 60-bit moduli
words = st.integers(0, 2**64 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40), st.integers(2, 2**32 - 1),
       st.integers(1, 2))
def test_scale_messages_is_the_reference(values: list[int], plain_modulus: int, primes: int) -> None:
    messages = np.array(values, dtype=_U64) % _U64(plain_modulus)
    assert (ring.scale_messages(messages, PRIMES[:primes], plain_modulus)
            == _scale_messages(messages, PRIMES[:primes], plain_modulus)).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**62) + 1, 2**62 - 1), words, words, st.integers(0, 2**32 - 1)),
                min_size=1, max_size=40))
def test_residue_helpers_are_the_reference(rows: list[tuple[int, int, int, int]]) -> None:
    signed = np.array([row[0] for row in rows], dtype=np.int64)
    assert (ring.from_signed(signed, PRIMES) == _from_signed(signed, PRIMES)).all()
    assert (ring.from_signed(signed[None], PRIMES[:1]) == _from_signed(signed[None], PRIMES[:1])).all()
    moduli = np.array(PRIMES, dtype=_U64)[:, None]
    x = np.array([row[1] for row in rows], dtype=_U64) % moduli
    y = np.array([row[2] for row in rows], dtype=_U64) % moduli
    small = np.array([row[3] for row in rows], dtype=_U64)
    assert (ring.add_mod(x, y, moduli) == _add_mod(x, y, moduli)).all()
    assert (ring.add_mod(x[0], y[0], PRIMES[0]) == _add_mod(x[0], y[0], PRIMES[0])).all()
    assert (ring.mul_small(x, small, moduli) == _mul_small(x, small, moduli)).all()
    assert (ring.mul_small(x[1], 1 << 30, PRIMES[1]) == _mul_small(x[1], 1 << 30, PRIMES[1])).all()


def test_random_error_is_the_reference(monkeypatch) -> None:
    monkeypatch.setattr(ring, "random_bytes", _deterministic_stream(b"errors"))
    errors = ring.random_error((3, 1000))
    monkeypatch.setattr(ring, "random_bytes", _deterministic_stream(b"errors"))
    assert errors.dtype == np.int64 and (errors == _random_error((3, 1000))).all()
